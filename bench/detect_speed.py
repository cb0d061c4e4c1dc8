"""How long ``mamori detect c2`` takes over many stored flow records, and how much memory.

    PYTHONPATH=src .venv/bin/python bench/detect_speed.py [--flows 10000000] [--store DIR]

Generates N flow records with NumPy (20,000 subscriber addresses, 50,000 outside endpoints with a
Zipf popularity, a 200-bot botnet talking to 3 listed and 5 unlisted C&C servers every few
minutes, 6 hours), stores them under M1 through governance (``open_stream``, as the collector
does), lists the 3 C&C in reputation, then runs ``mamori detect c2`` (correlation + beacon +
learned: training a model with ``--train``, then with the stored model) in a child process and
reports its wall time and peak resident memory
(``getrusage`` of the child). The target (issue 5): ≤ 60 s and < 4 GiB for 10M records on the
2-core development machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from mamori.config import AddressPool, load_config
from mamori.governance import Governance

T0 = datetime(2026, 11, 2, tzinfo=UTC)
SPAN_MS = 6 * 3600 * 1000
PLAN = '[[address_plan]]\nname = "dyn"\nkind = "dynamic"\nprefixes = ["10.0.0.0/8"]\n'


def _addr(prefix: str, idx: np.ndarray) -> pa.Array:  # type: ignore[type-arg]
    a = (idx // 65536) % 256
    b = (idx // 256) % 256
    c = idx % 256
    return pa.array(
        np.char.add(
            np.char.add(np.char.add(prefix, a.astype(str)), np.char.add(".", b.astype(str))),
            np.char.add(".", c.astype(str)),
        )
    )


def generate(n: int, rng: np.random.Generator) -> pa.Table:
    subs = rng.integers(1, 20_000, n)
    ext = np.minimum(rng.zipf(1.3, n), 50_000)
    bot = rng.random(n) < 0.01  # 1 % of records are C&C traffic of 200 bots
    subs = np.where(bot, rng.integers(1, 201, n), subs)
    cc = rng.integers(0, 8, n)
    ext = np.where(bot, 60_000 + cc, ext)
    ts = rng.integers(0, SPAN_MS, n)
    dport = np.where(bot, 8080, np.where(rng.random(n) < 0.8, 443, 53)).astype(np.uint16)
    proto = np.where(dport == 53, 17, 6).astype(np.uint8)
    outbound = rng.random(n) < 0.5
    host = _addr("10.", subs)
    extaddr = _addr("203.", ext)
    sport = rng.integers(1024, 65535, n).astype(np.uint16)
    t0 = np.datetime64(T0.replace(tzinfo=None), "ms") + ts.astype("timedelta64[ms]")
    return pa.table(
        {
            "time_start": pa.array(t0, pa.timestamp("ms", tz="UTC")),
            "time_end": pa.array(t0 + np.timedelta64(800, "ms"), pa.timestamp("ms", tz="UTC")),
            "src_addr": pa.array(np.where(outbound, host, extaddr)),
            "dst_addr": pa.array(np.where(outbound, extaddr, host)),
            "src_port": pa.array(np.where(outbound, sport, dport)),
            "dst_port": pa.array(np.where(outbound, dport, sport)),
            "protocol": pa.array(proto),
            "tcp_flags": pa.array(np.where(proto == 6, 0x1B, 0).astype(np.uint8)),
            "tos": pa.array(np.zeros(n, np.uint8)),
            "packets": pa.array(rng.integers(1, 40, n).astype(np.uint64)),
            "bytes": pa.array(rng.integers(60, 40_000, n).astype(np.uint64)),
            "exporter": pa.array(["127.0.1.1"] * n),
            "input_if": pa.array(np.ones(n, np.uint32)),
            "output_if": pa.array(np.full(n, 2, np.uint32)),
            "sampling_rate": pa.array(np.ones(n, np.uint32)),
            "observation_domain": pa.array(np.ones(n, np.uint32)),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=10_000_000)
    ap.add_argument("--store", type=Path, help="keep the store here (default: a temp dir)")
    ap.add_argument("--chunk", type=int, default=2_000_000)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    store = args.store or Path(tmp.name) / "store"
    conf = store.parent / "mamori-speed.toml"
    store.mkdir(parents=True, exist_ok=True)
    conf.write_text(PLAN, encoding="ascii")
    cfg = load_config(overrides={"store": store}).model_copy(
        update={
            "address_plan": (AddressPool(name="dyn", kind="dynamic", prefixes=("10.0.0.0/8",)),)
        }
    )
    rng = np.random.default_rng(5)
    t = time.perf_counter()
    with Governance(cfg) as gov:
        if not any(store.glob("flows/**/*.parquet")):
            stream = gov.open_stream("M1", "flows", "bench")
            left = args.flows
            while left > 0:
                stream.write(generate(min(args.chunk, left), rng))
                left -= args.chunk
            stream.commit()
            cc = [f"203.0.234.{96 + i}" for i in range(3)]
            gov.write_registry(
                "reputation",
                pa.table(
                    {
                        "loaded": pa.array([T0] * 3, pa.timestamp("ms", tz="UTC")),
                        "indicator_type": ["ip-port"] * 3,
                        "ip": cc,
                        "port": pa.array([8080] * 3, pa.uint16()),
                        "category": ["c2"] * 3,
                    }
                ),
                "bench",
                source="bench",
            )
    gen_s = time.perf_counter() - t
    print(f"stored {args.flows:,} flow records in {gen_s:.1f} s", flush=True)
    modes = (
        ("correlation+beacon", ["--method", "correlation", "--method", "beacon"]),
        ("all three, --train", ["--train"]),
        ("all three, stored model", []),
    )
    for label, extra in modes:
        cmd = [sys.executable, "-m", "mamori", "--config", str(conf), "--store", str(store),
               "detect", "c2", "--json", *extra]  # fmt: skip
        t = time.perf_counter()
        out_path = store.parent / "findings.jsonl"
        with out_path.open("w") as fh, (store.parent / "stderr.txt").open("w") as eh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=eh)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        code = os.waitstatus_to_exitcode(status)
        findings = sum(1 for line in out_path.read_text().splitlines() if line.startswith("{"))
        print(
            f"detect c2 ({label}) over {args.flows:,} records: {wall:.1f} s wall, peak RSS "
            f"{usage.ru_maxrss / 1024 / 1024:.2f} GiB, {findings} findings, exit {code}"
            f"  [target: <= 60 s, < 4 GiB]",
            flush=True,
        )
        if code:
            print((store.parent / "stderr.txt").read_text()[-2000:], file=sys.stderr)
    tmp.cleanup()


if __name__ == "__main__":
    main()
