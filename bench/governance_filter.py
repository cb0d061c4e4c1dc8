"""How fast governance removes opted-out subscribers' flows before a consent-based measure sees them.

    .venv/bin/python bench/governance_filter.py [--flows 2000000] [--subscribers 50000]

Builds a store with N flows between subscriber addresses (two allocations per address over the
window, so holders change) and outside servers, opts 5 % of subscribers out, and times
`Governance.open("M4", "flows", …)` materialised to Arrow against a plain scan of the same columns.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from mamori.config import AddressPool, load_config
from mamori.governance import Governance

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=2_000_000)
    ap.add_argument("--subscribers", type=int, default=50_000)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    n, s = args.flows, args.subscribers
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(overrides={"store": Path(tmp)}).model_copy(
            update={
                "address_plan": (AddressPool(name="dyn", kind="dynamic", prefixes=("10.0.0.0/8",)),)
            }
        )
        gov = Governance(cfg)
        addrs = np.array([f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(s)])
        half = T0 + timedelta(hours=12)
        gov.write_registry(
            "allocations",
            pa.table(
                {
                    "start": pa.array([T0] * s + [half] * s, pa.timestamp("ms", tz="UTC")),
                    "end": pa.array([half] * s + [None] * s, pa.timestamp("ms", tz="UTC")),
                    "addr": np.concatenate([addrs, addrs]),
                    "subscriber_id": [f"s{i}" for i in range(s)]
                    + [f"s{(i + 1) % s}" for i in range(s)],
                }
            ),
            "bench",
            source="csv",
        )
        ts = np.datetime64(T0.replace(tzinfo=None), "ms") + rng.integers(0, 86_400_000, n).astype(
            "timedelta64[ms]"
        )
        gov.write(
            "M1",
            "flows",
            pa.table(
                {
                    "time_start": pa.array(ts, pa.timestamp("ms", tz="UTC")),
                    "time_end": pa.array(ts, pa.timestamp("ms", tz="UTC")),
                    "src_addr": addrs[rng.integers(0, s, n)],
                    "dst_addr": np.array([f"203.0.113.{i}" for i in range(256)])[
                        rng.integers(0, 256, n)
                    ],
                    "src_port": rng.integers(1024, 65535, n).astype(np.uint16),
                    "dst_port": np.full(n, 443, np.uint16),
                    "protocol": np.full(n, 6, np.uint8),
                    "packets": np.ones(n, np.uint64),
                    "bytes": np.full(n, 60, np.uint64),
                }
            ),
            "bench",
        )
        out = [f"s{i}" for i in range(0, s, 20)]
        gov._engine.write(
            __import__("mamori.schemas", fromlist=["CONSENT"]).CONSENT,
            pa.table(
                {
                    "changed": pa.array(
                        [T0 - timedelta(days=1)] * len(out), pa.timestamp("ms", tz="UTC")
                    ),
                    "subscriber_id": out,
                    "measure": ["M4"] * len(out),
                    "state": ["out"] * len(out),
                    "actor": ["bench"] * len(out),
                    "channel": ["terms"] * len(out),
                }
            ),
        )
        cols = ["time_start", "src_addr", "dst_addr", "src_port", "dst_port"]
        t = time.perf_counter()
        plain = gov.open("M2", "flows", cols, "bench").arrow()
        t_plain = time.perf_counter() - t
        t = time.perf_counter()
        kept = gov.open("M4", "flows", cols, "bench").arrow()
        t_gov = time.perf_counter() - t
        print(f"{n:,} flows, {s:,} subscribers ({len(out):,} opted out), 2 holders per address")
        print(f"plain scan (M2, no consent): {t_plain:.2f} s ({n / t_plain:,.0f} flows/s)")
        print(
            f"consent-filtered (M4):       {t_gov:.2f} s ({n / t_gov:,.0f} flows/s), "
            f"kept {kept.num_rows:,} of {plain.num_rows:,}; overhead {t_gov / t_plain:.1f}x"
        )
        gov.close()


if __name__ == "__main__":
    main()
