"""Rebuild this folder's fixtures from ../shared/data/labelled-flows (Stratosphere Laboratory,
CTU Prague; GPL-2.0): header columns only, gzipped.

    python tests/data/labelled-flows/make_fixtures.py /work/shared/data/labelled-flows
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path

ZEEK = ["ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "duration", "history",
        "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes"]  # fmt: skip
ARGUS = ["StartTime", "Dur", "Proto", "SrcAddr", "Sport", "Dir", "DstAddr", "Dport", "State",
         "TotPkts", "TotBytes", "SrcBytes", "Label"]  # fmt: skip


def zeek(src: Path, dst: Path) -> None:
    names: list[str] = []
    rows: list[dict[str, str]] = []
    for line in src.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            rows.append({k: str(v) for k, v in json.loads(line).items()})
        elif line.startswith("#fields"):
            names = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(names, line.split("\t"), strict=False)))
    with gzip.open(dst, "wt", encoding="utf-8") as out:
        out.write("#separator \\x09\n#fields\t" + "\t".join(ZEEK) + "\n")
        for r in rows:
            out.write("\t".join(r.get(k, "-") for k in ZEEK) + "\n")


def argus(src: Path, dst: Path) -> None:
    with src.open(encoding="utf-8", newline="") as fh, gzip.open(dst, "wt", encoding="utf-8",
                                                               newline="") as out:  # fmt: skip
        w = csv.writer(out)
        w.writerow(ARGUS)
        for r in csv.DictReader(fh):
            w.writerow([r.get(k, "") for k in ARGUS])


def main() -> None:
    src = Path(sys.argv[1])
    here = Path(__file__).parent
    zeek(src / "005-zeek-scenario-malicious/conn.log", here / "simda-conn.log.gz")
    zeek(src / "002-zeek-scenario-port-scanning/conn.log", here / "portscan-conn.log.gz")
    argus(src / "CTU-Normal-7-2013-13-07.binetflow", here / "normal7.binetflow.gz")
    argus(src / "test-sality.binetflow", here / "sality.binetflow.gz")


if __name__ == "__main__":
    main()
