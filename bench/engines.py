"""DuckDB against Spark ``local[2]`` on the same store: ``detect c2``, ``detect infected`` and the
transparency report, as wall time and peak memory per size.

    PYTHONPATH=$PWD/src .venv/bin/python bench/engines.py --flows 1000000 --flows 10000000 \
        --flows 100000000 --store /var/tmp/mamori-bench --json engines.json --timeout-s 3600

For each size it stores N flow records (the generator of ``bench/detect_speed.py``: 20,000
subscriber addresses, Zipf-popular outside endpoints, a 200-bot botnet, 6 hours) plus one
allocation per subscriber address and 40 opt-outs (so M4's consent filter has
work to do), lists 3 of the C&C in reputation, then runs each command once per engine as a child
process (``mamori --config … ``) and samples the resident memory and CPU time of the child and
everything it starts (Spark's JVM) every 0.2 s. The Spark runs include the JVM's start-up (≈5 s
idle, more on a loaded machine): that is what a scheduled job pays.

Stores are kept under ``--store`` (``store-<N>``, generated once, reused by later runs: 100M
records take about 2.5 GB and most of an hour to generate on two cores). A command that runs past
``--timeout-s`` is killed with its process tree and reported as such. Every row also carries the
load average when the command ended: the figures mean little on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

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


def _tree(pid: int) -> tuple[int, dict[int, float]]:
    """Resident bytes of ``pid`` and its descendants, and each one's CPU seconds (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
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
        # utime, stime and the waited-for children's: the field numbers of proc(5) minus 3
        cpu[p] = sum(int(x) for x in fields[11:15]) / tick
    total, todo, mine = 0, [pid], {}
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        mine[p] = cpu.get(p, 0.0)
        todo += children.get(p, [])
    return total, mine


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


def run(conf: Path, args: list[str], log: Path, timeout_s: float) -> dict[str, Any]:
    """Run one command; wall and CPU seconds, peak RSS of the process tree, exit code (None when
    killed at ``timeout_s``), JSON lines printed."""
    cmd = [sys.executable, "-m", "mamori", "--config", str(conf), *args]
    t = time.perf_counter()
    cpu: dict[int, float] = {}
    with (log.with_suffix(".out")).open("w") as out, log.open("w") as err:
        # its own process group: a timeout kills the JVM too
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True)
        peak = 0
        code: int | None = None
        while (code := proc.poll()) is None:
            rss, seen = _tree(proc.pid)
            peak = max(peak, rss)
            for p, c in seen.items():
                cpu[p] = max(cpu.get(p, 0.0), c)
            if time.perf_counter() - t > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
                break
            time.sleep(0.2)
    wall = time.perf_counter() - t
    lines = sum(1 for x in log.with_suffix(".out").read_text().splitlines() if x.startswith("{"))
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(sum(cpu.values()), 1),
        "peak_gib": round(peak / 2**30, 2),
        "exit": code,
        "json_lines": lines,
        "load_avg": [round(x, 1) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--flows", type=int, action="append", help="a size in flow records (repeatable; "
        "default 1,000,000 and 10,000,000)",
    )  # fmt: skip
    ap.add_argument("--engines", default="duckdb,spark", help="engines to run, comma-separated")
    ap.add_argument("--master", default="local[2]", help="Spark master for the spark runs")
    ap.add_argument(
        "--store", "--store-dir", dest="store", type=Path,
        help="keep the generated stores here and reuse them next time (default: a temporary "
        "directory, removed at the end)",
    )  # fmt: skip
    ap.add_argument(
        "--timeout-s", type=float, default=3600.0,
        help="kill a command (and its JVM) that runs longer than this (default 3600)",
    )  # fmt: skip
    ap.add_argument("--json", type=Path, help="also write every row to this JSON file")
    ap.add_argument(
        "--commands", default=",".join(COMMANDS),
        help=f"commands to run, comma-separated (default: {', '.join(COMMANDS)})",
    )  # fmt: skip
    args = ap.parse_args()
    sizes = args.flows or [1_000_000, 10_000_000]
    tmp = tempfile.TemporaryDirectory()
    base = args.store or Path(tmp.name)
    base.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    labels = [c.strip() for c in args.commands.split(",")]
    for n in sizes:
        store = base / f"store-{n}"
        done = store / ".bench-complete"
        if not done.exists():
            if store.exists():
                shutil.rmtree(store)  # a generation cut short
            print(f"[{time.strftime('%H:%M:%S')}] generating {n:,} flow records …", flush=True)
            t = time.perf_counter()
            build(store, n)
            done.write_text(str(n))
            print(f"stored {n:,} flow records in {time.perf_counter() - t:.1f} s", flush=True)
        plan = '[[address_plan]]\nname = "dyn"\nkind = "dynamic"\nprefixes = ["10.0.0.0/8"]\n'
        for engine in args.engines.split(","):
            conf = base / f"{engine}-{n}.toml"
            head = f'store = "{store}"\nengine = "{engine}"\n'
            spark = f'[spark]\nmaster = "{args.master}"\n' if engine == "spark" else ""
            conf.write_text(head + plan + spark, encoding="utf-8")
            for label in labels:
                log = base / f"{engine}-{n}-{label.replace(' ', '_')}.err"
                print(f"[{time.strftime('%H:%M:%S')}] {n:,} {engine} {label} …", flush=True)
                row = {"flows": n, "engine": engine, "command": label,
                       **run(conf, COMMANDS[label], log, args.timeout_s)}  # fmt: skip
                results.append(row)
                print(json.dumps(row), flush=True)
                if row["exit"] != 0:
                    print(log.read_text()[-1500:], file=sys.stderr)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(
        "\n| flows | command | engine | wall s | CPU s | peak GiB | load avg (1 min) |"
        "\n|---|---|---|---|---|---|---|"
    )
    for r in results:
        wall = (
            r["wall_s"]
            if r["exit"] == 0
            else f"{r['wall_s']} ({'timeout' if r['exit'] is None else 'exit ' + str(r['exit'])})"
        )
        print(f"| {r['flows']:,} | {r['command']} | {r['engine']} | {wall} | {r['cpu_s']} | "
              f"{r['peak_gib']} | {r['load_avg'][0]} |")  # fmt: skip
    tmp.cleanup()


if __name__ == "__main__":
    main()
