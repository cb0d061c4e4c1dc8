"""How fast third-party reports are read and checked (``mamori ingest report``).

    .venv/bin/python bench/report_parse.py [--lines 500000]

Writes a Shadowserver ``event4_sinkhole`` CSV of N records (1 in 1000 malformed) and times
:func:`mamori.ingest.reports.parse_report` against the obvious per-record reader (``csv.DictReader``
+ ``ipaddress.ip_address`` + ``datetime.strptime`` per row) in the same process.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mamori.ingest.reports import parse_report

logging.disable(logging.WARNING)  # 1 in 1000 records is bad on purpose

HEADER = (
    '"timestamp","protocol","src_ip","src_port","src_asn","src_geo","src_region","src_city",'
    '"src_hostname","src_naics","src_sector","device_vendor","device_type","device_model",'
    '"dst_ip","dst_port","dst_asn","dst_geo","dst_region","dst_city","dst_hostname","dst_naics",'
    '"dst_sector","public_source","infection","family","tag","application","version","event_id"\n'
)


def _write(path: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 1 << 16, n)
    port = rng.integers(1024, 65536, n)
    sec = rng.integers(0, 86400, n)
    with path.open("w", encoding="ascii") as fh:
        fh.write(HEADER)
        for i in range(n):
            ip = f"10.16.{a[i] >> 8}.{a[i] & 255}" if i % 1000 else "10.16.0.300"
            s = int(sec[i])
            fh.write(
                f'"2026-11-02 {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}","tcp","{ip}",'
                f'{port[i]},64500,"JP","TOKYO","CHIYODA",,,,,,,"198.51.100.7",443,64511,"US",,,,,,'
                '"CWG","mirai","mirai",,,,\n'
            )


def _naive(path: Path) -> tuple[int, int]:
    good = bad = 0
    with path.open(encoding="ascii") as fh:
        for row in csv.DictReader(fh):
            try:
                ipaddress.ip_address(row["src_ip"])
                datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                if not 0 <= int(row["src_port"]) <= 65535:
                    raise ValueError
                good += 1
            except ValueError:
                bad += 1
    return good, bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=500_000)
    n = ap.parse_args().lines
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "event4_sinkhole.csv"
        _write(path, n)
        # CPU time: the machine is shared, wall time says more about the neighbours than us.
        t0 = time.process_time()
        p = parse_report(path, "shadowserver")
        ours = time.process_time() - t0
        t0 = time.process_time()
        good, bad = _naive(path)
        ref = time.process_time() - t0
    assert (p.good, len(p.bad)) == (good, bad), ((p.good, len(p.bad)), (good, bad))
    print(f"records {n:,}: {p.good:,} good, {len(p.bad):,} bad (with line numbers)")
    print(f"parse_report     {ours:6.2f} s CPU  {n / ours:12,.0f} records/s")
    print(f"per-record csv   {ref:6.2f} s CPU  {n / ref:12,.0f} records/s")
    print(f"ratio            {ref / ours:6.2f}x")


if __name__ == "__main__":
    main()
