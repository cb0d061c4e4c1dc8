"""Decode real sFlow v5 datagrams (pmacct sfprobe fixture) in batches; print samples/s.

python bench/decode_sflow.py [--repeat N] [--batch DATAGRAMS]
"""

from __future__ import annotations

import argparse
import struct
import time
from pathlib import Path

from mamori.ingest.sflow import decode_sflow

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "pmacct_sfprobe_marked.bin"


def frames(path: Path) -> list[bytes]:
    raw, out, o = path.read_bytes(), [], 0
    while o < len(raw):
        (n,) = struct.unpack_from(">H", raw, o)
        out.append(raw[o + 2 : o + 2 + n])
        o += 2 + n
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--batch", type=int, default=2000, help="datagrams per decode_sflow call")
    args = ap.parse_args()
    base = frames(FIXTURE)
    stream = [("127.0.0.1", d, 1.7e9 + i) for i in range(args.repeat) for d in base]
    decode_sflow(stream[: args.batch])  # warm up
    rows = 0
    t0 = time.perf_counter()
    for i in range(0, len(stream), args.batch):
        table, _ = decode_sflow(stream[i : i + args.batch])
        rows += table.num_rows
    dt = time.perf_counter() - t0
    print(
        f"{len(stream)} datagrams, {rows} flow samples in {dt:.2f} s: "
        f"{rows / dt:,.0f} samples/s, {len(stream) / dt:,.0f} datagrams/s (one core)"
    )


if __name__ == "__main__":
    main()
