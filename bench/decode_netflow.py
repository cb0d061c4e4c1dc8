"""Records per second of FlowDecoder on softflowd's NetFlow v9 and IPFIX datagrams.

    python bench/decode_netflow.py [--records 2000000] [--batch 4096]

The 1,479 captured datagrams (40,568 records) of each version are replicated to about --records
records and decoded in batches of --batch datagrams, on one core, in this process, three ways:
``decode_packed`` on batches already packed (what the collector's receiver hands over),
``decode`` on lists of Datagram objects (packs them first), and ``decode_reference`` (the
per-datagram Python walk). For reference,
on the machine PROVENANCE.md describes, the PyPI ``netflow`` package decodes 123k records/s (v9)
and 51k/s (IPFIX); nfcapd stores ~1.78M records/s lossless.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import time
from pathlib import Path

from mamori.ingest.netflow import Datagram, FlowDecoder, PackedDatagrams

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "netflow"


CLOCK = time.perf_counter


def load(version: int) -> list[bytes]:
    raw = gzip.decompress((DATA / f"softflowd_v{version}_packets.bin.gz").read_bytes())
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("!H", raw, pos)
        out.append(raw[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def bench(version: int, records: int, batch: int, how: str, repeat: int) -> tuple[int, float]:
    """Records decoded in one pass over the stream, and the best time of ``repeat`` passes (each
    pass with a fresh decoder, warmed up on the first batch)."""
    best = float("inf")
    for _ in range(repeat):
        n, dt = _pass(version, records, batch, how)
        best = min(best, dt)
    return n, best


def _pass(version: int, records: int, batch: int, how: str) -> tuple[int, float]:
    payloads = load(version)
    per_copy = 40_568
    copies = max(1, round(records / per_copy))
    dgs = [Datagram("192.0.2.1", p, 1.7e9) for _ in range(copies) for p in payloads]
    batches = [dgs[i : i + batch] for i in range(0, len(dgs), batch)]
    dec = FlowDecoder()
    if how == "decode_packed":
        packed = [PackedDatagrams.pack(b) for b in batches]
        dec.decode_packed(packed[0])  # warm up: imports, templates
        total = 0
        t0 = CLOCK()
        for p in packed:
            total += dec.decode_packed(p).flows.num_rows
        return total, CLOCK() - t0
    run = dec.decode if how == "decode" else dec.decode_reference
    run(batches[0])
    total = 0
    t0 = CLOCK()
    for b in batches:
        total += run(b).flows.num_rows
    return total, CLOCK() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=4096, help="datagrams per decode() call")
    ap.add_argument("--repeat", type=int, default=3, help="passes; the best is reported")
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="time with process CPU time instead of wall time (steadier on a shared machine)",
    )
    args = ap.parse_args()
    global CLOCK
    if args.cpu:
        CLOCK = time.process_time
    for version, name in ((9, "NetFlow v9"), (10, "IPFIX")):
        for how in ("decode_packed", "decode", "decode_reference"):
            n, dt = bench(version, args.records, args.batch, how, args.repeat)
            print(
                f"{name:10s} {how:16s} {n:>10,d} records in {dt:6.2f} s: "
                f"{n / dt / 1e6:5.2f} M records/s (batch {args.batch} datagrams"
                f"{', CPU time' if args.cpu else ''})"
            )


if __name__ == "__main__":
    main()
