"""DDoS engine throughput, one core, at several revisions side by side (issue 16).

    PYTHONPATH=$PWD/src python bench/ddos_throughput.py [--revs 049753b HEAD .] [--repeat 3]
        [--batches 10] [--text] [--param prefix_factor=20]

Each revision's ``src/mamori/detect/ddos.py`` is loaded from git (``git show REV:…``; ``.`` is
the working tree) and fed the same synthetic batches as ``bench/ddos.py``'s ``throughput()``
(``--batches`` × 100,000 records, one batch per second, half inbound to a /14, 1/1,000
sampling); the revisions are interleaved, so machine load hits them alike. The batches carry the
addresses as the collector hands them to ``collect --detect-ddos``: text plus the decoder's
integers (``src_addr_v4``, ``dst_addr_v4``); ``--text`` leaves the integers out (``detect ddos``
over stored flows, and revisions before the integers were passed). Prints records/s (CPU time
of this process) per run, and the candidate keys held at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]


def load(rev: str, tmp: Path) -> ModuleType:
    if rev == ".":
        src = (ROOT / "src/mamori/detect/ddos.py").read_text()
    else:
        src = subprocess.run(["git", "show", f"{rev}:src/mamori/detect/ddos.py"], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
    path = tmp / f"ddos_{rev.replace('/', '_').replace('.', 'worktree')}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    return mod


def batches(now: float, count: int = 10, *, numeric: bool = True) -> list[pa.Table]:
    rng = np.random.default_rng(1)
    n = 100_000

    def text(ints: np.ndarray) -> pa.Array:
        o = [(ints >> s) & 255 for s in (24, 16, 8, 0)]
        return pa.array([f"{a}.{b}.{c}.{d}" for a, b, c, d in zip(*[x.tolist() for x in o],
                                                                  strict=True)])  # fmt: skip

    out = []
    us = pa.timestamp("us", tz="UTC")
    for i in range(count):
        ins = (10 << 24) + rng.integers(0, 2**18, n)
        outs = rng.integers(1 << 30, 3 << 30, n)
        inbound = rng.random(n) < 0.5
        ts = now + i + rng.uniform(-60, 0, n)
        te = np.minimum(ts + rng.uniform(0, 60, n), now + i)
        src, dst = np.where(inbound, outs, ins), np.where(inbound, ins, outs)
        numbers = {"src_addr_v4": pa.array(src.astype(np.uint32)),
                   "dst_addr_v4": pa.array(dst.astype(np.uint32))} if numeric else {}  # fmt: skip
        out.append(pa.table({
            "time_start": pa.array((ts * 1e6).astype(np.int64)).cast(us),
            "time_end": pa.array((te * 1e6).astype(np.int64)).cast(us),
            "src_addr": text(src),
            "dst_addr": text(dst),
            "src_port": pa.array(rng.integers(1, 65535, n).astype(np.uint16)),
            "protocol": pa.array(rng.choice([6, 17], n).astype(np.uint8)),
            "tcp_flags": pa.array(rng.integers(0, 64, n).astype(np.uint8)),
            "packets": pa.array(rng.choice([1, 1, 1, 2, 3], n).astype(np.uint64)),
            "bytes": pa.array(rng.integers(60, 3000, n).astype(np.uint64)),
            "sampling_rate": pa.array(np.full(n, 1000, np.uint32)),
            **numbers,
        }))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--revs", nargs="+", default=["049753b", "HEAD"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batches", type=int, default=10, help="seconds of traffic (100,000 each)")
    ap.add_argument("--text", action="store_true", help="addresses as text only")
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [detect.ddos] setting for every revision's engine, e.g. prefix_factor=20: the "
        "synthetic /24s carry ~78,000 pps each, over the default carpet threshold, so every "
        "prefix is a candidate; an operator of such a dense network sets it higher",
    )
    args = ap.parse_args()
    params = {k: float(v) for k, v in (p.split("=", 1) for p in args.param)}
    now = time.time()
    data = batches(now, args.batches, numeric=not args.text)
    with tempfile.TemporaryDirectory() as tmp:
        mods = {rev: load(rev, Path(tmp)) for rev in args.revs}
        res: dict[str, list[float]] = {rev: [] for rev in mods}
        held: dict[str, int] = {}
        for _ in range(args.repeat):
            for rev, m in mods.items():
                engine = m.DdosEngine(m.DdosParams(**params), [ipaddress.ip_network("10.0.0.0/14")])
                t0 = time.process_time()
                for i, b in enumerate(data):
                    engine.feed(b, now=now + i)
                res[rev].append(len(data) * 100_000 / (time.process_time() - t0))
                held[rev] = len(engine.bins)
    for rev, runs in res.items():
        print(
            f"{rev}: best {max(runs):,.0f} records/s; runs "
            + ", ".join(f"{x:,.0f}" for x in runs)
            + f"; {held[rev]:,} candidate keys held at the end"
        )


if __name__ == "__main__":
    main()
