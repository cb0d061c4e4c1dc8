"""IPFIX NAT events (RFC 8158) → CGNAT port blocks: decode speed and the cost of a flush.

    PYTHONPATH=src .venv/bin/python bench/ipfix_nat.py [--open 300000] [--batches 20]
        [--per-batch 2000]

A CGN with ``--open`` port blocks already allocated (one per inside address, blocks of 512 ports
on public addresses of 198.51.100.0/22 and on) exports IPFIX port block allocation records
(template set + data set, 25 records per message). Then ``--batches`` batches of ``--per-batch``
records follow: de-allocations of random open blocks and their re-allocation to other inside
addresses. Printed: decode rate of :class:`~mamori.ingest.netflow.FlowDecoder` on the messages
(NAT records/s); per flush, the time of :meth:`PortBlockTracker.closed` (only the blocks the batch
can close are paired again) against the reference of pairing every open block again with the new
records (``port_block_events`` + ``build_sessions`` over all of them), and the ratio.
"""

from __future__ import annotations

import argparse
import struct
import time
from collections import Counter

import numpy as np
import pyarrow as pa

from mamori.ingest.allocations.common import (
    IngestReport,
    Issues,
    build_sessions,
    port_block_events,
)
from mamori.ingest.allocations.ipfix_nat import PortBlockTracker, block_records
from mamori.ingest.netflow import FlowDecoder
from mamori.ingest.netflow.decoder import PackedDatagrams

T0 = 1_790_000_000_000
FIELDS = ((323, 8), (8, 4), (225, 4), (361, 2), (362, 2), (230, 1))
REC = np.dtype(
    [
        ("ms", ">u8"),
        ("inside", ">u4"),
        ("outside", ">u4"),
        ("lo", ">u2"),
        ("hi", ">u2"),
        ("ev", "u1"),
    ]
)
PER_MESSAGE = 25
BLOCK = 512
BLOCKS_PER_ADDR = 120  # ports 1024-62463


def template_set() -> bytes:
    body = struct.pack("!HH", 300, len(FIELDS)) + b"".join(struct.pack("!HH", *f) for f in FIELDS)
    return struct.pack("!HH", 2, 4 + len(body)) + body


def messages(rec: np.ndarray) -> PackedDatagrams:
    """IPFIX messages of PER_MESSAGE records each (the last may be shorter), packed."""
    tset = template_set()
    out, lengths = [], []
    raw = np.ascontiguousarray(rec, dtype=REC).tobytes()  # concatenate gives native order
    for i in range(0, len(rec), PER_MESSAGE):
        chunk = raw[i * REC.itemsize : (i + PER_MESSAGE) * REC.itemsize]
        dset = struct.pack("!HH", 300, 4 + len(chunk)) + chunk
        body = tset + dset
        msg = struct.pack("!HHIII", 10, 16 + len(body), T0 // 1000, i, 0) + body
        out.append(msg)
        lengths.append(len(msg))
    ln = np.asarray(lengths, dtype=np.int64)
    return PackedDatagrams(
        b"".join(out),
        np.cumsum(ln) - ln,
        ln,
        np.zeros(len(ln), dtype=np.int32),
        ["192.0.2.9"],
        np.full(len(ln), T0 / 1000 + 60.0),
    )


def records(n: int, ms: np.ndarray, inside: np.ndarray, block: np.ndarray, ev: int) -> np.ndarray:
    rec = np.zeros(n, dtype=REC)
    rec["ms"] = ms
    rec["inside"] = (100 << 24) | (64 << 16) + inside
    rec["outside"] = ((198 << 24) | (51 << 16) | (100 << 8)) + block // BLOCKS_PER_ADDR
    rec["lo"] = 1024 + (block % BLOCKS_PER_ADDR) * BLOCK
    rec["hi"] = rec["lo"] + BLOCK - 1
    rec["ev"] = ev
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--open", type=int, default=300_000)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--per-batch", type=int, default=2_000)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    n = args.open
    holder = np.arange(n)  # block i held by inside i
    first = records(n, T0 + np.arange(n) % 60_000, holder, np.arange(n), 16)

    decoder = FlowDecoder()
    packed = messages(first)
    t = time.perf_counter()
    result = decoder.decode_packed(packed)
    dt = time.perf_counter() - t
    assert result.nat.num_rows == n and result.flows.num_rows == 0
    print(
        f"decode: {n:,} NAT records in {len(packed.lengths):,} messages: {dt:.3f} s, "
        f"{n / dt:,.0f} records/s"
    )

    tracker = PortBlockTracker(86400.0)
    counters: Counter[str] = Counter()
    tracker.add(result.nat, counters)
    t = time.perf_counter()
    tracker.closed(counters)
    print(
        f"first flush ({n:,} blocks opened): {time.perf_counter() - t:.3f} s; "
        f"open {tracker.open_blocks:,}"
    )

    ours, ref = [], []
    next_inside = n
    now = T0 + 120_000
    for _ in range(args.batches):
        half = args.per_batch // 2
        blocks = rng.choice(n, half, replace=False)
        ms = np.full(half, now, dtype=np.int64)
        gone = records(half, ms, holder[blocks], blocks, 17)
        newcomers = np.arange(next_inside, next_inside + half)
        given = records(half, ms + 1000, newcomers, blocks, 16)
        holder[blocks] = newcomers
        next_inside += half
        now += 60_000
        batch = decoder.decode_packed(messages(np.concatenate([gone, given]))).nat
        # the reference: pair every open block again with the new records
        open_records = tracker._open_records  # what the reference pairs again
        t = time.perf_counter()
        new = block_records(batch, 0, Counter())
        work = pa.concat_tables([open_records, new]).combine_chunks()
        events = port_block_events(
            work.column("ts").to_numpy(),
            work.column("kind").to_numpy(),
            work.column("addr"),
            work.column("port_start"),
            work.column("port_end"),
            work.column("inside_addr"),
            work.column("seq").to_numpy(),
            timeout_ms=86_400_000,
        )
        build_sessions(events, Issues(IngestReport(format="ref", file="")))
        ref.append(time.perf_counter() - t)

        t = time.perf_counter()
        tracker.add(batch, counters)
        closed = tracker.closed(counters)
        ours.append(time.perf_counter() - t)
        assert closed.num_rows == half, closed.num_rows
    assert tracker.open_blocks == n
    o, r = float(np.median(ours)), float(np.median(ref))
    print(
        f"flush with {n:,} open blocks, {args.per_batch:,} new records: median {o * 1000:.1f} ms "
        f"(reference, all blocks paired again: {r * 1000:.1f} ms; {r / o:.1f}x)"
    )


if __name__ == "__main__":
    main()
