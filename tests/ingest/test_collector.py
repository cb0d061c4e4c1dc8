"""The collector as operators run it: `mamori collect` on a real UDP socket, fed by softflowd's
real exports, stopped by SIGTERM or killed; compared with nfdump; restarted; fed garbage."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ingest.netflow import packets as pk
from tests.ingest.reference_tools import (
    mamori_key,
    nfdump_decode,
    nfdump_key,
    softflowd_export,
)

pytestmark = [pytest.mark.reference_tools, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURE = DATA / "captures" / "test7-malicious.pcap"
MAMORI = [sys.executable, "-m", "mamori.cli"]
MARKER = b"MAMORI-PAYLOAD-MARKER-7f3a9c"


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    store: Path

    def send(self, datagrams: Sequence[bytes], pause_every: int = 50) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i, d in enumerate(datagrams):
                s.sendto(d, ("127.0.0.1", self.port))
                if i % pause_every == pause_every - 1:
                    time.sleep(0.002)


# softflowd made these exports from captures years old: the records are dated by the capture, the
# export times by softflowd's clock (or the capture's). Sent live they would be refused as garbage
# (collector.record_before_export_s, collector.export_clock_skew_s): widen both, as an operator
# replaying old exports would.
_YEARS = str(20 * 365 * 86400)
REPLAYING_OLD_EXPORTS = {
    "MAMORI_COLLECTOR__EXPORT_CLOCK_SKEW_S": _YEARS,
    "MAMORI_COLLECTOR__RECORD_BEFORE_EXPORT_S": _YEARS,
}


@contextmanager
def collector(
    store: Path, *extra: str, env: dict[str, str] | None = None, **popen: Any
) -> Iterator[Running]:
    proc = subprocess.Popen(
        [*MAMORI, "collect", "--listen", "udp://127.0.0.1:0", "--store", str(store), *extra],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **(REPLAYING_OLD_EXPORTS if env is None else env),
        },
        **popen,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    m = re.search(r"udp://127\.0\.0\.1:(\d+)", line)
    assert m, f"collector did not start: {line}{proc.stderr.read().decode()}"
    try:
        yield Running(proc, int(m.group(1)), store)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()


def stop(run: Running) -> None:
    time.sleep(0.3)
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(30) == 0


def stored(store: Path) -> pa.Table:
    files = sorted((store / "flows").rglob("part-*.parquet"))
    if not files:
        return pa.table({})
    return pa.concat_tables(pq.read_table(f) for f in files)


def stats(store: Path) -> dict[str, object]:
    import json

    return json.loads((store / "_state" / "collector" / "stats.json").read_text())  # type: ignore[no-any-return]


# The mamori module is run as `python -m mamori.cli`; make sure that works.
def test_module_entry_point() -> None:
    r = subprocess.run([*MAMORI, "--help"], capture_output=True, check=False)
    assert r.returncode == 0 and b"collect" in r.stdout


@pytest.mark.parametrize("version", [5, 9, 10])
def test_udp_collection_equals_nfdump_record_for_record(tmp_path: Path, version: int) -> None:
    datagrams = softflowd_export(CAPTURE, version)
    reference = Counter(nfdump_key(r) for r in nfdump_decode(datagrams))
    with collector(tmp_path / "store") as run:
        run.send(datagrams)
        stop(run)  # SIGTERM: everything received is written
    ours = Counter(mamori_key(r) for r in stored(tmp_path / "store").to_pylist())
    assert sum(reference.values()) > 100
    assert ours == reference
    s = stats(tmp_path / "store")
    assert s["rows_written"] == sum(reference.values())
    assert s["counters"]["packets.received"] == len(datagrams)  # type: ignore[index]


def test_garbage_between_good_packets_is_counted_and_good_data_kept(tmp_path: Path) -> None:
    good = softflowd_export(CAPTURE, 9)
    expected = Counter(nfdump_key(r) for r in nfdump_decode(good))
    garbage = [
        b"",
        b"\x00",
        b"\x00\x09\x00\x05" + b"\xff" * 40,
        os.urandom(700),
        b"\x00\x0a\x00\x10" + b"\x00" * 12,
        good[3][:30],
    ]
    mixed: list[bytes] = []
    for i, d in enumerate(good):
        mixed.append(d)
        mixed.append(garbage[i % len(garbage)])
    with collector(tmp_path / "s") as run:
        run.send(mixed)
        stop(run)
    ours = Counter(mamori_key(r) for r in stored(tmp_path / "s").to_pylist())
    assert ours == expected
    counters = stats(tmp_path / "s")["counters"]
    assert sum(v for k, v in counters.items() if k.startswith("errors.")) >= len(good) // 2  # type: ignore[union-attr]


def test_kill_9_loses_at_most_the_last_flush_interval_and_corrupts_nothing(tmp_path: Path) -> None:
    datagrams = softflowd_export(CAPTURE, 9)
    half = len(datagrams) // 2
    store = tmp_path / "s"
    with collector(store, "--flush-interval", "0.5") as run:
        run.send(datagrams[:half])
        time.sleep(2.0)  # well past one flush interval: the first half is on disk
        first_half_rows = stats(store)["rows_written"]
        run.send(datagrams[half:])
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(10)
    assert isinstance(first_half_rows, int) and first_half_rows > 0
    # Every visible file is a whole Parquet file; rows are at least what was flushed before.
    table = stored(store)
    assert table.num_rows >= first_half_rows
    total = sum(1 for _ in softflowd_rows(datagrams))
    assert table.num_rows <= total
    # The receiver child does not outlive its parent.
    time.sleep(0.5)
    out = subprocess.run(["pgrep", "-f", f"--store {store}"], capture_output=True, check=False)
    assert out.stdout.strip() == b""


def softflowd_rows(datagrams: Sequence[bytes]) -> Iterator[dict[str, object]]:
    from mamori.ingest.netflow import Datagram, FlowDecoder

    yield from (
        FlowDecoder().decode([Datagram("127.0.0.1", d, 0.0) for d in datagrams]).flows.to_pylist()
    )


def _v9_stream() -> tuple[bytes, bytes]:
    """A template-only packet and a data-only packet for the same template (source id 7)."""
    fields = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (21, 4), (22, 4)]
    template = pk.v9([pk.v9_template(256, fields)], source_id=7)
    recs = b"".join(
        pk.ip4(f"10.0.0.{i}")
        + pk.ip4("203.0.113.9")
        + struct.pack("!HHBIIII", 40000 + i, 443, 6, 3, 180, 1000, 2000)
        for i in range(1, 6)
    )
    data = pk.v9([pk.set_(256, recs)], source_id=7)
    return template, data


def test_restart_keeps_templates(tmp_path: Path) -> None:
    template, data = _v9_stream()
    store = tmp_path / "s"
    with collector(store) as run:
        run.send([template])
        stop(run)
    assert stored(store).num_rows == 0
    with collector(store) as run:  # a new process: only data arrives, no template
        run.send([data])
        stop(run)
    rows = stored(store)
    assert sorted(rows.column("src_addr").to_pylist()) == [f"10.0.0.{i}" for i in range(1, 6)]
    assert stats(store)["counters"]["templates.restored"] == 1  # type: ignore[index]


def _pcap_with_marker(path: Path) -> None:
    """A small capture of TCP and UDP packets whose payload carries MARKER."""
    frames = []
    for i in range(40):
        payload = MARKER + bytes([i]) * 20
        src, dst = bytes([10, 0, 0, 1 + i % 3]), bytes([203, 0, 113, 9])
        if i % 2:
            l4 = struct.pack("!HHIIBBHHH", 40000 + i, 80, i, 0, 0x50, 0x18, 1024, 0, 0) + payload
            proto = 6
        else:
            l4 = struct.pack("!HHHH", 50000 + i, 53, 8 + len(payload), 0) + payload
            proto = 17
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), i, 0, 64, proto, 0, src, dst)
        eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + l4
        frames.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(eth), len(eth)) + eth)
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(frames))


@pytest.mark.parametrize("version", [5, 9, 10])
def test_no_stored_file_contains_payload(tmp_path: Path, version: int) -> None:
    pcap = tmp_path / "marked.pcap"
    _pcap_with_marker(pcap)
    assert MARKER in pcap.read_bytes()
    datagrams = softflowd_export(pcap, version)
    store = tmp_path / "s"
    with collector(store) as run:
        run.send(datagrams)
        stop(run)
    assert stored(store).num_rows > 0
    for f in store.rglob("*"):
        if f.is_file():
            assert MARKER not in f.read_bytes(), f


def test_collect_pcap_command(tmp_path: Path) -> None:
    pcap = DATA / "netflow" / "112-IPFIXv10-CISCO-options-map-reassignment__traffic-00.pcap"
    r = subprocess.run(
        [*MAMORI, "collect", "--pcap", str(pcap), "--store", str(tmp_path)],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert b"written" in r.stderr
    assert stored(tmp_path).num_rows == stats(tmp_path)["rows_written"] > 0
    r = subprocess.run(
        [*MAMORI, "collect", "stats", "--store", str(tmp_path), "--json"],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0 and b'"rows_written"' in r.stdout


def test_bad_listen_address(tmp_path: Path) -> None:
    r = subprocess.run(
        [*MAMORI, "collect", "--listen", "tcp://x:1", "--store", str(tmp_path)],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 2 and b"expected udp://HOST:PORT" in r.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        r = subprocess.run(
            [*MAMORI, "collect", "--listen", f"udp://127.0.0.1:{port}", "--store", str(tmp_path)],
            capture_output=True,
            check=False,
        )
    assert r.returncode == 1 and b"cannot listen on" in r.stderr
