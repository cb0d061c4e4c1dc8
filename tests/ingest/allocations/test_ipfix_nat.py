"""IPFIX NAT events → CGNAT port-block allocation rows: validation, pairing across batches,
closing by de-allocation / next allocation / timeout, and the open blocks kept over a restart."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyarrow import ipc

from mamori.ingest.allocations.ipfix_nat import PortBlockTracker, block_records
from mamori.ingest.allocations.nat_events import NAT_EVENTS

MIN = 60_000
T = 1_790_000_000_000
PUB = "198.51.100.1"
TIMEOUT_S = 3600.0


def nat(*records: dict[str, Any]) -> pa.Table:
    base = {
        "exporter": "192.0.2.9",
        "domain": 0,
        "inside": "100.64.0.5",
        "outside": PUB,
        "port_start": 1024,
        "port_end": 2047,
    }
    return pa.Table.from_pylist([{**base, **r} for r in records], schema=NAT_EVENTS)


def alloc(ts: int, **kw: Any) -> dict[str, Any]:
    return {"ts": ts, "event": 16, **kw}


def dealloc(ts: int, **kw: Any) -> dict[str, Any]:
    return {"ts": ts, "event": 17, **kw}


def rows(table: pa.Table) -> list[tuple[int, int, str, int, int, str]]:
    return [
        (
            int(r["start"].timestamp() * 1000) - T,
            int(r["end"].timestamp() * 1000) - T,
            r["addr"],
            r["port_start"],
            r["port_end"],
            r["inside_addr"],
        )
        for r in table.to_pylist()
    ]


# (name, batches of (records, clock ms after T), stored rows (start, end relative to T), open)
STREAMS = [
    (
        "allocation then de-allocation, one batch",
        [([alloc(T), dealloc(T + 10 * MIN)], 0)],
        [(0, 10 * MIN, PUB, 1024, 2047, "100.64.0.5")],
        0,
    ),
    (
        "de-allocation in a later batch",
        [([alloc(T)], MIN), ([dealloc(T + 10 * MIN)], 11 * MIN)],
        [(0, 10 * MIN, PUB, 1024, 2047, "100.64.0.5")],
        0,
    ),
    (
        "no de-allocation: open until the timeout passes",
        [([alloc(T)], 30 * MIN)],
        [],
        1,
    ),
    (
        "no de-allocation: closed by the timeout",
        [([alloc(T)], 30 * MIN), ([], 61 * MIN)],
        [(0, 60 * MIN, PUB, 1024, 2047, "100.64.0.5")],
        0,
    ),
    (
        "no de-allocation: closed by the next allocation of the block",
        [([alloc(T)], MIN), ([alloc(T + 5 * MIN, inside="100.64.0.6")], 6 * MIN)],
        [(0, 5 * MIN, PUB, 1024, 2047, "100.64.0.5")],
        1,
    ),
    (
        "another block of the same address does not close it",
        [([alloc(T), alloc(T + MIN, inside="100.64.0.6", port_start=2048, port_end=3071)], MIN)],
        [],
        2,
    ),
    (
        "a de-allocation without its allocation is skipped",
        [([dealloc(T + MIN)], 2 * MIN)],
        [],
        0,
    ),
    (
        "allocation and de-allocation at one instant: an instant block",
        [([dealloc(T), alloc(T)], MIN)],
        [(0, 0, PUB, 1024, 2047, "100.64.0.5")],
        0,
    ),
]


@pytest.mark.parametrize(
    ("batches", "stored", "still_open"), [s[1:] for s in STREAMS], ids=[s[0] for s in STREAMS]
)
def test_stream_of_nat_events_gives_closed_blocks(
    batches: list[tuple[list[dict[str, Any]], int]],
    stored: list[tuple[int, int, str, int, int, str]],
    still_open: int,
) -> None:
    tracker = PortBlockTracker(TIMEOUT_S)
    counters: Counter[str] = Counter()
    out = []
    for records, clock in batches:
        tracker.add(nat(*records), counters)
        tracker.advance(T + clock)
        out += rows(tracker.closed(counters))
    assert out == stored
    assert tracker.open_blocks == still_open == counters["nat.blocks_open"]


# (name, record, counter it lands in)
BAD = [
    ("unknown natEvent", alloc(T, event=99), "nat.errors.unknown_event"),
    ("no inside address", alloc(T, inside=None), "nat.errors.missing_field"),
    ("inside 0.0.0.0", alloc(T, inside="0.0.0.0"), "nat.errors.missing_field"),
    ("no public address", alloc(T, outside=None), "nat.errors.missing_field"),
    ("no block", alloc(T, port_start=None, port_end=None), "nat.errors.missing_field"),
    ("end before start", alloc(T, port_start=3000, port_end=2047), "nat.errors.bad_range"),
    ("end past 65535", alloc(T, port_end=None, port_count=70000), "nat.errors.bad_range"),
    (
        "every other port",
        alloc(T, port_end=None, port_count=8, port_step=2),
        "nat.errors.stepped_block",
    ),
    ("NAT44 session create", alloc(T, event=4), "nat.session_events_ignored"),
    ("historic translation delete", alloc(T, event=2), "nat.session_events_ignored"),
    ("ports exhausted", alloc(T, event=12), "nat.other_events_ignored"),
]


@pytest.mark.parametrize(("record", "counter"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_and_other_records_are_counted_and_the_good_ones_kept(
    record: dict[str, Any], counter: str, caplog: pytest.LogCaptureFixture
) -> None:
    good_before = alloc(T - MIN, inside="100.64.0.7", port_start=4096, port_end=5119)
    good_after = alloc(T + MIN, inside="100.64.0.8", port_start=5120, port_end=6143)
    counters: Counter[str] = Counter()
    out = block_records(nat(good_before, record, good_after), 1, counters)
    assert out.column("inside_addr").to_pylist() == ["100.64.0.7", "100.64.0.8"]
    assert counters[counter] == 1 and counters["nat.block_events"] == 2
    if counter.startswith("nat.errors."):
        assert "record 2" in caplog.text and counter in caplog.text


def test_number_of_ports_gives_the_block_end() -> None:
    counters: Counter[str] = Counter()
    out = block_records(nat(alloc(T, port_end=None, port_count=512, port_step=1)), 1, counters)
    assert (out.column("port_start")[0].as_py(), out.column("port_end")[0].as_py()) == (1024, 1535)


def test_open_blocks_survive_a_restart(tmp_path: Path) -> None:
    counters: Counter[str] = Counter()
    before = PortBlockTracker(TIMEOUT_S)
    before.add(
        nat(alloc(T), alloc(T, inside="100.64.0.6", port_start=2048, port_end=3071)), counters
    )
    before.advance(T + MIN)
    assert before.closed(counters).num_rows == 0
    before.save(tmp_path / "open.arrow")
    after = PortBlockTracker(TIMEOUT_S)
    after.load(tmp_path / "open.arrow")
    after.add(nat(dealloc(T + 10 * MIN)), counters)
    assert rows(after.closed(counters)) == [(0, 10 * MIN, PUB, 1024, 2047, "100.64.0.5")]
    assert after.open_blocks == 1
    after.add(nat(dealloc(T + 20 * MIN, inside="100.64.0.7")), counters)  # record numbers go on
    after.closed(counters)
    assert counters["nat.release_without_allocation"] == 1


@pytest.mark.parametrize(
    "content",
    [b"", b"not arrow", b"ARROW1\x00\x00garbage"],
    ids=["empty", "text", "truncated"],
)
def test_unusable_state_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "open.arrow"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        PortBlockTracker(TIMEOUT_S).load(path)


def test_state_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "open.arrow"
    table = pa.table({"x": [1]}).replace_schema_metadata({"format": "99"})
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(ValueError, match="format"):
        PortBlockTracker(TIMEOUT_S).load(path)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """Time-ordered port-block records on a few public blocks (each block: allocations, some
    with their de-allocation before the block's next allocation) and cut points into batches."""
    records: list[dict[str, Any]] = []
    for slot in range(draw(st.integers(1, 4))):
        t = T + draw(st.integers(0, 10)) * MIN
        for _ in range(draw(st.integers(1, 5))):
            inside = f"100.64.0.{draw(st.integers(1, 6))}"
            block = {
                "inside": inside,
                "port_start": 1024 * (slot + 1),
                "port_end": 1024 * (slot + 2) - 1,
                "outside": PUB if slot < 2 else "198.51.100.2",
            }
            records.append(alloc(t, **block))
            t += draw(st.integers(1, 90)) * MIN
            if draw(st.booleans()):
                records.append(dealloc(t, **block))
                t += draw(st.integers(0, 30)) * MIN
    records.sort(key=lambda r: (r["ts"], r["event"]))
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=6)))
    return records, cuts


@pytest.mark.slow
@given(_streams())
@settings(max_examples=60)
def test_batches_give_what_one_batch_gives(stream: tuple[list[dict[str, Any]], list[int]]) -> None:
    """Pairing only the open blocks a batch can close gives the rows pairing everything at once
    gives, however the stream is cut into batches. (Gaps stay within the timeout: a block the
    stream already closed by its timeout is not reopened by a later record, as in a file.)"""
    records, cuts = stream
    counters: Counter[str] = Counter()
    whole = PortBlockTracker(86400.0)
    whole.add(nat(*records), counters)
    whole.advance(T + 10**10)
    expected = sorted(rows(whole.closed(counters)))
    batched = PortBlockTracker(86400.0)
    got = []
    for lo, hi in zip([0, *cuts], [*cuts, len(records)], strict=True):
        part = records[lo:hi]
        if part:
            batched.add(nat(*part), counters)
        got += rows(batched.closed(counters))
    batched.advance(T + 10**10)
    got += rows(batched.closed(counters))
    assert sorted(got) == expected
    assert batched.open_blocks == whole.open_blocks == 0
