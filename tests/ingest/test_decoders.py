"""`mamori collect --decoders N`: N decoding processes on one port (SO_REUSEPORT). Sixteen
exporters, each from its own loopback address: every record is stored once, each exporter is
decoded by exactly one process, the counters add up, and after a restart an exporter that the
kernel hands to the other process still finds its templates."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ingest.netflow import packets as pk
from tests.ingest.test_collector import MAMORI

pytestmark = pytest.mark.slow

FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (21, 4), (22, 4)]
EXPORTERS = [f"127.0.1.{i}" for i in range(1, 17)]


def _template() -> bytes:
    return pk.v9([pk.v9_template(256, FIELDS)], secs=int(time.time()), source_id=1)


def _data(exporter_no: int, round_no: int) -> bytes:
    recs = b"".join(
        pk.ip4(f"10.{exporter_no}.{round_no}.{i}")
        + pk.ip4("203.0.113.9")
        + struct.pack("!HHBIIII", 40000 + i, 443, 6, 3, 180, 98_000, 99_000)
        for i in range(1, 11)
    )
    return pk.v9([pk.set_(256, recs)], secs=int(time.time()), source_id=1)


@contextmanager
def decoders(store: Path, n: int) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    proc = subprocess.Popen(
        [
            *MAMORI,
            "collect",
            "--listen",
            "udp://127.0.0.1:0",
            "--store",
            str(store),
            "--flush-interval",
            "0.3",
            "--decoders",
            str(n),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    m = re.search(r"udp://127\.0\.0\.1:(\d+) with (\d+) decoding processes", line)
    assert m, f"collector did not start: {line}"
    assert int(m.group(2)) == n
    try:
        yield proc, int(m.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()


def _send(port: int, round_no: int, with_template: bool) -> None:
    for no, addr in enumerate(EXPORTERS):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((addr, 0))
            if with_template:
                s.sendto(_template(), ("127.0.0.1", port))
            s.sendto(_data(no, round_no), ("127.0.0.1", port))


def _stop(proc: subprocess.Popen[bytes]) -> str:
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert proc.stderr is not None
    return proc.stderr.read().decode()


def _stored(store: Path) -> list[str]:
    files = sorted((store / "flows").rglob("part-*.parquet"))
    return (
        pa.concat_tables(pq.read_table(f, columns=["src_addr"]) for f in files)
        .column(0)
        .to_pylist()
    )


def test_decoders_share_a_port_and_account_for_every_record(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with decoders(store, 2) as (proc, port):
        _send(port, 1, with_template=True)
        log = _stop(proc)
    assert "records 160  written 160" in log, log
    rows = _stored(store)
    assert len(rows) == len(set(rows)) == 16 * 10  # each record once

    shards = sorted((store / "_state" / "collector").glob("shard-*/stats.json"))
    assert len(shards) == 2
    per_shard = [set(json.loads(p.read_text())["by_exporter"]) for p in shards]
    assert per_shard[0].isdisjoint(per_shard[1])  # an exporter is decoded by one process
    assert per_shard[0] | per_shard[1] == set(EXPORTERS)
    assert per_shard[0] and per_shard[1]  # 16 exporters: both get some (fails 1 in 32,768)

    stats = json.loads(
        subprocess.run(
            [*MAMORI, "--store", str(store), "collect", "stats", "--json"],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert stats["processes"] == 2
    assert stats["rows_written"] == 160
    assert stats["counters"]["packets.received"] == 32

    # A restart: new source ports, so the kernel may give an exporter to the other process;
    # data without templates must still decode from the shared template directory.
    with decoders(store, 2) as (proc, port):
        _send(port, 2, with_template=False)
        _stop(proc)
    rows = _stored(store)
    assert len(rows) == len(set(rows)) == 16 * 10 * 2


def test_decoders_refuse_what_one_process_must_see(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *MAMORI,
            "collect",
            "--listen",
            "udp://127.0.0.1:0",
            "--store",
            str(tmp_path / "s"),
            "--decoders",
            "2",
            "--detect-ddos",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "--detect-ddos needs every record of a target in one process" in out.stderr


def test_one_decoder_dying_stops_the_set_with_an_error(tmp_path: Path) -> None:
    """systemd restarts a unit whose process exits non-zero: a half-running set would not be."""
    with decoders(tmp_path / "s", 2) as (proc, _):
        kids = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert len(kids) == 2
        os.kill(int(kids[1]), signal.SIGKILL)
        assert proc.wait(60) == 1
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        assert re.search(
            r"decoding process \d ended \(exit status -9\); the others were stopped", log
        )
        with pytest.raises(ProcessLookupError):  # the other one was stopped and reaped
            os.kill(int(kids[0]), 0)
