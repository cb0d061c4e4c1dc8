"""DuckDB against Spark ``local[2]`` on the same store: ``detect c2``, ``detect infected`` and the
transparency report, as wall time and peak memory per size.

    PYTHONPATH=src .venv/bin/python bench/engines.py --flows 1000000 [--flows 10000000] \
        [--engines duckdb,spark] [--store-dir DIR]

For each size it stores N flow records (the generator of ``bench/detect_speed.py``: 20,000
subscriber addresses, Zipf-popular outside endpoints, a 200-bot botnet, 6 hours) plus one
allocation per subscriber address and 40 opt-outs (so M4's consent filter has
work to do), lists 3 of the C&C in reputation, then runs each command once per engine as a child
process (``mamori --config … ``) and samples the resident memory of the child and everything it
starts (Spark's JVM) every 0.2 s. The Spark runs include the JVM's start-up (≈5 s idle, more on a
loaded machine): that is what a scheduled job pays.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from detect_speed import T0, generate
from mamori.config import AddressPool, load_config
from mamori.governance import Governance

COMMANDS = {
    "detect c2": ["detect", "c2", "--json", "--method", "correlation", "--method", "beacon"],
    "detect infected": ["detect", "infected", "--json", "--dry-run"],
    "transparency report": ["report", "transparency", "--period", "2026-11", "--json"],
}


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(entry)
        children.setdefault(int(fields[1]), []).append(p)
        rss[p] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def build(store: Path, n: int) -> None:
    cfg = load_config(overrides={"store": store}).model_copy(
        update={
            "address_plan": (AddressPool(name="dyn", kind="dynamic", prefixes=("10.0.0.0/8",)),)
        }
    )
    rng = np.random.default_rng(5)
    with Governance(cfg) as gov:
        stream = gov.open_stream("M1", "flows", "bench")
        left = n
        while left > 0:
            stream.write(generate(min(2_000_000, left), rng))
            left -= 2_000_000
        stream.commit()
        subs = np.arange(1, 20_000)
        addrs = [f"10.{(i // 65536) % 256}.{(i // 256) % 256}.{i % 256}" for i in subs]
        ts = pa.timestamp("ms", tz="UTC")
        gov.write_registry(
            "allocations",
            pa.table(
                {
                    "start": pa.array([T0 - timedelta(days=1)] * len(subs), ts),
                    "end": pa.array([None] * len(subs), ts),
                    "addr": addrs,
                    "subscriber_id": [f"S{i}" for i in subs],
                }
            ),
            "bench",
            source="bench",
        )
        for i in subs[::500]:  # 40 opt-outs (each is a file and an audit entry)
            gov.consent.set(f"S{i}", "M4", False, actor="bench", channel="cli")
        cc = [f"203.0.234.{96 + i}" for i in range(3)]
        gov.write_registry(
            "reputation",
            pa.table(
                {
                    "loaded": pa.array([T0] * 3, ts),
                    "indicator_type": ["ip-port"] * 3,
                    "ip": cc,
                    "port": pa.array([8080] * 3, pa.uint16()),
                    "category": ["c2"] * 3,
                }
            ),
            "bench",
            source="bench",
        )


def run(conf: Path, args: list[str], log: Path) -> tuple[float, int, int, int]:
    """(wall seconds, peak RSS bytes of the process tree, exit code, JSON lines printed)."""
    cmd = [sys.executable, "-m", "mamori", "--config", str(conf), *args]
    t = time.perf_counter()
    with (log.with_suffix(".out")).open("w") as out, log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.2)
    wall = time.perf_counter() - t
    lines = sum(1 for x in log.with_suffix(".out").read_text().splitlines() if x.startswith("{"))
    return wall, peak, proc.returncode, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, action="append", help="sizes (repeatable)")
    ap.add_argument("--engines", default="duckdb,spark")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--store-dir", type=Path, help="keep the stores here (default: temp)")
    args = ap.parse_args()
    sizes = args.flows or [1_000_000, 10_000_000]
    tmp = tempfile.TemporaryDirectory()
    base = args.store_dir or Path(tmp.name)
    results = []
    for n in sizes:
        store = base / f"store-{n}"
        if not store.exists():
            t = time.perf_counter()
            build(store, n)
            print(f"stored {n:,} flow records in {time.perf_counter() - t:.1f} s", flush=True)
        plan = '[[address_plan]]\nname = "dyn"\nkind = "dynamic"\nprefixes = ["10.0.0.0/8"]\n'
        for engine in args.engines.split(","):
            conf = base / f"{engine}-{n}.toml"
            head = f'store = "{store}"\nengine = "{engine}"\n'
            spark = f'[spark]\nmaster = "{args.master}"\n' if engine == "spark" else ""
            conf.write_text(head + plan + spark, encoding="utf-8")
            for label, cmd in COMMANDS.items():
                log = base / f"{engine}-{n}-{label.replace(' ', '_')}.err"
                wall, peak, code, lines = run(conf, cmd, log)
                row = {"flows": n, "engine": engine, "command": label, "wall_s": round(wall, 1),
                       "peak_gib": round(peak / 2**30, 2), "exit": code, "json_lines": lines}  # fmt: skip
                results.append(row)
                print(json.dumps(row), flush=True)
                if code:
                    print(log.read_text()[-1500:], file=sys.stderr)
    print("\n| flows | command | engine | wall s | peak GiB |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['flows']:,} | {r['command']} | {r['engine']} | {r['wall_s']} | "
              f"{r['peak_gib']} |")  # fmt: skip
    tmp.cleanup()


if __name__ == "__main__":
    main()
