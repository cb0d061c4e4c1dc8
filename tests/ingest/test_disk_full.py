"""A full disk under a running collector (issue 15 item 9): a store on a small tmpfs is filled to
the last byte while records arrive. The collector must say so clearly, leave no unreadable file
and no torn audit entry, keep receiving, and store again by itself once space returns."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ingest.netflow import packets as pk
from tests.ingest.test_collector import MAMORI, Running, collector, stats

pytestmark = pytest.mark.slow

FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (21, 4), (22, 4)]
PER_PACKET = 24


def _stream(block: int, n: int) -> list[bytes]:
    """A template and ``n`` records from 10.<block>.x.y, dated a minute before now: nothing about
    them is refused, so every record not stored is the disk's doing."""
    now = int(time.time())
    out = [pk.v9([pk.v9_template(256, FIELDS)], uptime=100_000, secs=now, source_id=3)]
    for start in range(0, n, PER_PACKET):
        recs = b"".join(
            pk.ip4(f"10.{block}.{i // 250}.{i % 250 + 1}")
            + pk.ip4("203.0.113.9")
            + struct.pack("!HHBIIII", 40000, 443, 6, 3, 180, 38_000, 40_000)
            for i in range(start, min(n, start + PER_PACKET))
        )
        out.append(pk.v9([pk.set_(256, recs)], uptime=100_000, secs=now, source_id=3))
    return out


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the development machines run as root)")
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(store)], check=True)
    try:
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def _fill(path: Path) -> None:
    """Write until the file system refuses (tmpfs does not compress: random-free zeros do)."""
    chunk = b"\0" * (1 << 20)
    with path.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == 28, exc
    # the last partial megabyte: fill byte by byte-page until nothing fits
    with path.open("ab", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass


def _rows(store: Path) -> pa.Table:
    files = sorted((store / "flows").rglob("part-*.parquet"))
    return pa.concat_tables(pq.read_table(f, columns=["src_addr"]) for f in files)


def _wait_rows(run: Running, prefix: str, want: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        if (run.store / "flows").exists():
            got = sum(a.startswith(prefix) for a in _rows(run.store).column(0).to_pylist())
            if got >= want:
                return got
        time.sleep(0.2)
    return got


def _audit_verify(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAMORI, "--store", str(store), "audit", "verify"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_full_disk_is_reported_corrupts_nothing_and_collection_recovers(small_store: Path) -> None:
    before, during, after = _stream(1, 2_400), _stream(2, 2_400), _stream(3, 2_400)
    filler = small_store / "filler"
    with collector(small_store, "--flush-interval", "0.3", env={}) as run:
        run.send(before)
        assert _wait_rows(run, "10.1.", 2_400) == 2_400

        _fill(filler)
        run.send(during)
        time.sleep(2.5)  # several flushes fail
        assert run.proc.poll() is None, "the collector stopped on a full disk"
        # Nothing unreadable is visible; failed files do not pile up (at most the one the next
        # try is writing).
        files = list((small_store / "flows").rglob("part-*.parquet"))
        for f in files:
            pq.read_metadata(f)
        assert len(list((small_store / "flows").rglob(".*.tmp"))) <= 1
        stored_during = sum(a.startswith("10.2.") for a in _rows(small_store).column(0).to_pylist())

        filler.unlink()  # space returns
        run.send(after)
        assert _wait_rows(run, "10.3.", 2_400) == 2_400, "writing did not resume"
        run.proc.send_signal(15)
        assert run.proc.wait(30) == 0
        assert run.proc.stderr is not None
        log = run.proc.stderr.read().decode()

    assert not list((small_store / "flows").rglob(".*.tmp"))
    rows = _rows(small_store).column(0).to_pylist()
    assert sum(a.startswith("10.1.") for a in rows) == 2_400  # the good data around it is kept
    assert sum(a.startswith("10.3.") for a in rows) == 2_400
    assert sum(a.startswith("10.2.") for a in rows) == stored_during < 2_400
    counters = stats(small_store)["counters"]
    assert isinstance(counters, dict)
    assert counters["store.errors.disk_full"] >= 1
    assert counters["records.dropped_disk_full"] == 2_400 - stored_during
    assert "the store is out of space" in log and "No space left on device" in log, log
    assert "space is back; writing resumed" in log, log
    verify = _audit_verify(small_store)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    entries = [
        json.loads(line)
        for line in (small_store / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    written = sum(
        json.loads(e["detail"])["rows_stored"]
        for e in entries
        if e["event"] == "write" and e["dataset"] == "flows"
    )
    assert written == len(rows)  # every stored row has its audit entry, and no more


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-x", "-q"]))
