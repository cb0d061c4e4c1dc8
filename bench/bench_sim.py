"""Simulator throughput: flows generated per second and flow records exported per second.

    python bench/bench_sim.py [--subscribers N] [--hours H]

Export is measured end to end (sampling, NetFlow v9 / IPFIX encoding, per-router spooling, the
time-ordered merge and the pcap write) on unsampled routers, so every generated flow becomes one
exported record. One process, one core.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mamori.sim import RouterSpec, scenario_config
from mamori.sim.simulate import _export
from mamori.sim.traffic import generate
from mamori.sim.world import build_world

ROUTERS = (
    RouterSpec(name="b1", protocol="netflow9", source_id=1),
    RouterSpec(name="b2", protocol="ipfix", source_id=2, port=4739, exporter_ip="127.0.1.2"),
    RouterSpec(
        name="dc", role="dc", protocol="ipfix", source_id=3, port=4739, exporter_ip="127.0.1.3"
    ),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, default=20_000)
    ap.add_argument("--hours", type=float, default=2.0)
    args = ap.parse_args()
    cfg = scenario_config("demo", subscribers=args.subscribers, hours=args.hours, routers=ROUTERS)
    t = time.perf_counter()
    world = build_world(cfg, 0)
    t_world = time.perf_counter() - t
    t = time.perf_counter()
    traffic = generate(world, 0)
    t_gen = time.perf_counter() - t
    n = len(traffic.flows)
    with tempfile.TemporaryDirectory() as d:
        pcap = Path(d) / "exports.pcap"
        t = time.perf_counter()
        packets, routers = _export(world, traffic.flows, 0, pcap)
        t_exp = time.perf_counter() - t
        size = pcap.stat().st_size
    records = sum(r.records for r in routers)
    print(f"subscribers={args.subscribers} hours={args.hours} sessions={world.sessions.sub.size}")
    print(f"world      {t_world:8.2f} s")
    print(f"traffic    {t_gen:8.2f} s  {n:>12,} flows    {n / t_gen:>12,.0f} flows/s")
    print(
        f"export     {t_exp:8.2f} s  {records:>12,} records  {records / t_exp:>12,.0f} records/s"
        f"  ({packets:,} packets, {size / 1e6:,.0f} MB pcap)"
    )


if __name__ == "__main__":
    main()
