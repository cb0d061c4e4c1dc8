"""Standing reflection filter benchmark: render N dynamic prefixes for every target.

    PYTHONPATH=src python bench/filters.py [--prefixes 100000] [--nft]

Builds an address plan of N dynamic /24 prefixes (plus a static pool and two resolvers inside
the dynamic space, so the resolver carve-out runs), reads it as ``mamori.toml`` would be read
(the plan's validation included), then times the plan and each rendering (nftables, Junos,
IOS-XR, FlowSpec). With ``--nft`` (root, Debian nftables) it also loads the nftables rendering
into a fresh network namespace and times ``nft -f`` (the router's side, for reference).
Target (issue 16): ≤ 5 s per rendering for 100,000 prefixes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mamori.act.flowspec import flowspec_reflection
from mamori.act.nft import render_reflection
from mamori.act.reflection import reflection_plan
from mamori.act.routers import iosxr_reflection, junos_reflection
from mamori.config import load_config


def plan_toml(n: int) -> str:
    # /24s from 10.0.0.0 upwards (10.0.0.0/8 holds 65,536; continue in 100.64.0.0/10 and beyond)
    prefixes = []
    base = [(10 << 24), (100 << 24) | (64 << 16), (172 << 24) | (16 << 16)]
    room = [65536, 16384, 4096]
    i = 0
    for start, count in zip(base, room, strict=True):
        for k in range(min(count, n - i)):
            a = start + (k << 8)
            prefixes.append(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.0/24")
        i = len(prefixes)
    while len(prefixes) < n:  # past those: documentation-free public space, /28s
        a = (44 << 24) + ((len(prefixes) - i) << 4)
        prefixes.append(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/28")
    body = ",\n".join(f'  "{p}"' for p in prefixes)
    return (
        f'[[address_plan]]\nname = "dynamic"\nkind = "dynamic"\nprefixes = [\n{body}\n]\n'
        '[[address_plan]]\nname = "static"\nkind = "static"\nprefixes = ["192.0.2.0/24"]\n'
        '[network]\nresolvers = ["10.0.0.53/32", "10.200.1.53/32"]\n'
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefixes", type=int, default=100_000)
    ap.add_argument("--nft", action="store_true", help="also load the ruleset with nft (root)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mamori-filters-bench-") as tmp:
        toml = Path(tmp) / "mamori.toml"
        toml.write_text(plan_toml(args.prefixes))
        t0 = time.perf_counter()
        cfg = load_config(toml, overrides={"store": Path(tmp) / "store"})
        t_cfg = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan = reflection_plan(cfg)
        t_plan = time.perf_counter() - t0
        print(
            f"{args.prefixes:,} dynamic prefixes -> {plan.prefixes:,} after carving out "
            f"{len(plan.resolvers4)} resolvers; {len(plan.protocols)} protocols"
        )
        print(f"  mamori.toml read and validated  {t_cfg:6.2f} s")
        print(f"  plan (pools, resolvers carved)  {t_plan:6.2f} s")
        renders = {
            "nftables": lambda: render_reflection(plan, cfg.network.nft, "bench").text,
            "junos": lambda: junos_reflection(plan, "bench"),
            "iosxr": lambda: iosxr_reflection(plan, "bench"),
            "flowspec": lambda: flowspec_reflection(plan, "bench"),
        }
        nft_text = ""
        for name, fn in renders.items():
            t0 = time.perf_counter()
            text = fn()
            took = time.perf_counter() - t0
            verdict = "ok" if took + t_plan <= 5.0 else "OVER 5 s"
            print(
                f"  render {name:<9} {took:6.2f} s  (+ plan {took + t_plan:5.2f} s, "
                f"{len(text) / 1e6:5.1f} MB, {text.count(chr(10)):,} lines)  {verdict}"
            )
            if name == "nftables":
                nft_text = text
        if args.nft:
            ns = f"mamori-bench-{int(time.time())}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            try:
                t0 = time.perf_counter()
                r = subprocess.run(
                    ["ip", "netns", "exec", ns, "nft", "-f", "-"],
                    input=nft_text,
                    text=True,
                    capture_output=True,
                )
                took = time.perf_counter() - t0
                print(f"  nft -f (load into a namespace) {took:6.2f} s  rc={r.returncode}")
                if r.returncode:
                    print(r.stderr[:500])
            finally:
                subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
