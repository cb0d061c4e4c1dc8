"""Records per second of FlowDecoder.decode on softflowd's NetFlow v9 and IPFIX datagrams.

    python bench/decode_netflow.py [--records 2000000] [--batch 4096]

The 1,479 captured datagrams (40,568 records) of each version are replicated to about --records
records and decoded in batches of --batch datagrams, on one core, in this process. For reference,
on the machine PROVENANCE.md describes, the PyPI ``netflow`` package decodes 123k records/s (v9)
and 51k/s (IPFIX); nfcapd stores ~1.78M records/s lossless.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import time
from pathlib import Path

from mamori.ingest.netflow import Datagram, FlowDecoder

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "netflow"


def load(version: int) -> list[bytes]:
    raw = gzip.decompress((DATA / f"softflowd_v{version}_packets.bin.gz").read_bytes())
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("!H", raw, pos)
        out.append(raw[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def bench(version: int, records: int, batch: int) -> tuple[int, float]:
    payloads = load(version)
    per_copy = 40_568
    copies = max(1, round(records / per_copy))
    dgs = [Datagram("192.0.2.1", p, 1.7e9) for _ in range(copies) for p in payloads]
    dec = FlowDecoder()
    dec.decode(dgs[:batch])  # warm up: imports, templates
    total = 0
    t0 = time.perf_counter()
    for i in range(0, len(dgs), batch):
        total += dec.decode(dgs[i : i + batch]).flows.num_rows
    return total, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=4096, help="datagrams per decode() call")
    args = ap.parse_args()
    for version, name in ((9, "NetFlow v9"), (10, "IPFIX")):
        n, dt = bench(version, args.records, args.batch)
        print(
            f"{name:10s} {n:>10,d} records in {dt:6.2f} s: {n / dt / 1e6:5.2f} M records/s "
            f"(batch {args.batch} datagrams)"
        )


if __name__ == "__main__":
    main()
