"""Attribution speed: 1M lookups against 10M allocation intervals, with CGNAT port blocks.

    PYTHONPATH=src .venv/bin/python bench/attribution.py [--intervals 10000000] [--lookups 1000000]
        [--store DIR] [--reference]

The store is built first (not timed): dynamic addresses reassigned many times, CGNAT public
addresses shared by port blocks of 512 ports (two-stage rows: public address + block → inside
address), and the inside addresses' own allocations; 30 days. Then a fresh process times
:func:`mamori.attribute.attribute` on lookups half behind CGNAT (with ports), half direct, at
random times (the audit entry included) and reports wall time, lookups/s, CPU time (user +
system, all threads: less sensitive than wall time to other work on a shared machine) and that
process's peak RSS. The three logs are loaded as one batch, so the store holds one Parquet file
per hour partition. Every answer is checked against the generator's truth: a wrong subscriber fails the
run. ``--reference`` also times the textbook way (one range join of every lookup with every
session of its address, same engine) on the same data, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.attribute import attribute
from mamori.config import AddressPool, load_config
from mamori.governance import Governance

T0 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp() * 1000)
SPAN = 30 * 86_400_000
BLOCK = 512
BLOCKS_PER_ADDR = (65536 - 1024) // BLOCK  # 126
TS = pa.timestamp("ms", tz="UTC")
PLAN = (
    AddressPool(name="dynamic", kind="dynamic", prefixes=("10.0.0.0/8",)),
    AddressPool(name="cgnat", kind="cgnat", prefixes=("198.18.0.0/15",)),
)


def _ip(base: int, n: np.ndarray) -> pa.Array:
    v = (base + n).astype(np.uint32)
    parts = [pa.array((v >> s) & 255).cast(pa.string()) for s in (24, 16, 8, 0)]
    return pc.binary_join_element_wise(*parts, ".")


def _sessions(n_slots: int, per_slot: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``per_slot`` back-to-back sessions (with gaps) on each of ``n_slots`` slots."""
    slot = np.repeat(np.arange(n_slots), per_slot)
    length = rng.integers(10 * 60_000, 2 * SPAN // per_slot, slot.size)
    gap = rng.integers(1_000, 10 * 60_000, slot.size)
    step = (length + gap).reshape(n_slots, per_slot)
    start = T0 + np.cumsum(step, axis=1).reshape(-1) - step.reshape(-1)
    start += rng.integers(0, 3_600_000, n_slots).repeat(per_slot)
    return slot, start, start + length


def _write_queries(
    path: Path,
    rng: np.random.Generator,
    n: int,
    *,
    direct: tuple[np.ndarray, ...],
    blocks: tuple[np.ndarray, ...],
    inside: tuple[np.ndarray, ...],
) -> None:
    """Half direct, half CGNAT lookups at a moment inside a stored session, with the expected
    subscriber (None where the inside address was between holders: any answer but a wrong
    subscriber is right)."""
    slot, s, e = direct
    nd = n // 2
    k = rng.integers(0, slot.size, nd)
    at_d = s[k] + ((e[k] - s[k]) * rng.uniform(0.01, 0.99, nd)).astype(np.int64)
    pub, lo, s_b, e_b, inside_of = blocks
    nb = n - nd
    j = rng.integers(0, pub.size, nb)
    at_b = s_b[j] + ((e_b[j] - s_b[j]) * rng.uniform(0.01, 0.99, nb)).astype(np.int64)
    port = lo[j] + rng.integers(0, BLOCK, nb)
    # who held the inside address then: sessions of one inside slot are in start order, so one
    # search over (slot, start) finds the latest one started
    slot_i, s_i, e_i, _per = inside
    big = np.int64(4 * SPAN)
    keys = slot_i.astype(np.int64) * big + (s_i - T0)
    ins = inside_of[j]
    pos = np.searchsorted(keys, ins.astype(np.int64) * big + (at_b - T0), side="right") - 1
    held = (pos >= 0) & (slot_i[np.maximum(pos, 0)] == ins) & (e_i[np.maximum(pos, 0)] > at_b)
    # far enough from the session's edges that the clock-skew tolerance does not reach past them
    held &= (at_b - s_i[np.maximum(pos, 0)] > 5_000) & (e_i[np.maximum(pos, 0)] - at_b > 5_000)
    want_b = np.where(held, pos, -1)
    ips = pa.concat_arrays([_ip(0x0A000000, slot[k]), _ip(0xC6120000, pub[j])])
    want = [f"d{x}" for x in k.tolist()] + [f"c{x}" if x >= 0 else None for x in want_b.tolist()]
    table = pa.table(
        {
            "ip": ips,
            "port": pa.array(np.r_[np.zeros(nd, np.int64), port]).cast(pa.uint16()),
            "ts": pa.array(np.r_[at_d, at_b]).cast(TS),
            "want": pa.array(want, pa.string()),
        }
    )
    table = table.take(pa.array(rng.permutation(n)))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def build(store: Path, intervals: int, seed: int, n_queries: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    per_slot = 16
    n_direct = intervals * 45 // 100 // per_slot  # dynamic addresses
    n_blocks = intervals * 45 // 100 // per_slot  # CGNAT port-block slots
    n_pub = -(-n_blocks // BLOCKS_PER_ADDR)
    n_inside = n_blocks // 4
    inside_per = max(1, (intervals - (n_direct + n_blocks) * per_slot) // n_inside)
    gov = Governance(
        load_config(overrides={"store": store}).model_copy(update={"address_plan": PLAN})
    )
    try:
        # dynamic addresses: subscriber d<k> holds the k-th session
        slot, s, e = _sessions(n_direct, per_slot, rng)
        direct = pa.table(
            {
                "start": pa.array(s).cast(TS),
                "end": pa.array(e).cast(TS),
                "addr": _ip(0x0A000000, slot),
                "subscriber_id": pc.binary_join_element_wise(
                    "d", pa.array(np.arange(slot.size)).cast(pa.string()), ""
                ),
                "source": pa.array(["radius"] * slot.size, pa.string()),
            }
        )
        # inside addresses: subscriber c<k> holds the k-th inside session
        slot_i, s_i, e_i = _sessions(n_inside, inside_per, rng)
        inner = pa.table(
            {
                "start": pa.array(s_i).cast(TS),
                "end": pa.array(e_i).cast(TS),
                "addr": _ip(0x64400000, slot_i),
                "subscriber_id": pc.binary_join_element_wise(
                    "c", pa.array(np.arange(slot_i.size)).cast(pa.string()), ""
                ),
                "source": pa.array(["kea"] * slot_i.size, pa.string()),
            }
        )
        # port blocks: slot b = block b // n_pub of public address b % n_pub, each session given
        # to a random inside address
        slot_b, s_b, e_b = _sessions(n_blocks, per_slot, rng)
        pub = slot_b % n_pub
        lo = 1024 + (slot_b // n_pub) * BLOCK
        inside = rng.integers(0, n_inside, slot_b.size)
        blocks = pa.table(
            {
                "start": pa.array(s_b).cast(TS),
                "end": pa.array(e_b).cast(TS),
                "addr": _ip(0xC6120000, pub),
                "port_start": pa.array(lo, pa.uint16()),
                "port_end": pa.array(lo + BLOCK - 1, pa.uint16()),
                "inside_addr": _ip(0x64400000, inside),
                "source": pa.array(["cgnat-syslog"] * slot_b.size, pa.string()),
            }
        )
        # one load of the three logs: one file per hour partition (loaded log by log, the store
        # would hold three smaller files per hour, which DuckDB reads about 2.5 s slower)
        gov.write_registry(
            "allocations",
            pa.concat_tables([direct, inner, blocks], promote_options="default"),
            "bench",
            source="bench",
        )
    finally:
        gov.close()
    _write_queries(
        store.parent / "bench-queries.arrow",
        rng,
        n_queries,
        direct=(slot, s, e),
        blocks=(pub, lo, s_b, e_b, inside),
        inside=(slot_i, s_i, e_i, inside_per),
    )
    total = slot.size + slot_i.size + slot_b.size
    return {
        "intervals": int(total),
        "direct": int(slot.size),
        "inside": int(slot_i.size),
        "port_blocks": int(slot_b.size),
        "public_addresses": int(n_pub),
    }


def lookups(store: Path, reference: bool) -> dict[str, float | int | str]:
    with pa.memory_map(str(store.parent / "bench-queries.arrow")) as src:
        table = pa.ipc.open_file(src).read_all()
    queries = table.select(["ip", "port", "ts"])
    want = table.column("want")
    n = table.num_rows
    config = load_config(overrides={"store": store}).model_copy(update={"address_plan": PLAN})
    gov = Governance(config)
    try:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        out = attribute(gov, queries, measure="M5", actor="bench", basis="justified-act",
                        justification="benchmark")  # fmt: skip
        elapsed = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
        status = pc.value_counts(out.column("status")).to_pylist()
        ok = pc.equal(out.column("status"), "ok")
        wrong = pc.sum(pc.and_(ok, pc.not_equal(out.column("subscriber_id"), want))).as_py()
        missed = pc.sum(pc.and_(pc.is_valid(want), pc.invert(ok))).as_py()
        result: dict[str, float | int | str] = {
            "lookups": n,
            "seconds": round(elapsed, 2),
            "cpu_seconds": round(cpu_s, 2),
            "lookups_per_s": round(n / elapsed),
            "wrong": int(wrong or 0),
            "missed": int(missed or 0),
            "status": json.dumps({s["values"]: s["counts"] for s in status}),
        }
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if reference:
            t = time.perf_counter()
            naive = gov.combine(
                "SELECT count(*) FROM {q} q JOIN {a} a ON a.addr = q.ip "
                "AND (a.port_start IS NULL OR q.port BETWEEN a.port_start AND a.port_end) "
                "AND q.ts >= a.start - INTERVAL 2 SECOND "
                "AND q.ts < coalesce(a.\"end\", TIMESTAMPTZ '9999-12-31') + INTERVAL 2 SECOND",
                q=queries,
                a=gov.open(
                    "M5",
                    "allocations",
                    None,
                    "bench",
                    basis="justified-act",
                    justification="benchmark",
                ),
            ).fetchall()
            result["reference_range_join_s"] = round(time.perf_counter() - t, 2)
            result["reference_pairs"] = int(naive[0][0])
    finally:
        gov.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--intervals", type=int, default=10_000_000)
    ap.add_argument("--lookups", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, help="reuse (or build into) this store")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", action="store_true", help="also time a plain range join")
    ap.add_argument("--phase", choices=("all", "lookup"), default="all", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase == "lookup":
        print(json.dumps(lookups(args.store, args.reference)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp) / "store"
        store.parent.mkdir(parents=True, exist_ok=True)
        if not (store / "allocations").exists():
            t = time.perf_counter()
            info = build(store, args.intervals, args.seed, args.lookups)
            print(
                f"built {info['intervals']:,} intervals ({info['direct']:,} direct, "
                f"{info['inside']:,} inside-address, {info['port_blocks']:,} CGNAT port blocks on "
                f"{info['public_addresses']:,} public addresses) in "
                f"{time.perf_counter() - t:.1f} s"
            )
        cmd = [sys.executable, __file__, "--phase", "lookup", "--store", str(store)]
        if args.reference:
            cmd.append("--reference")
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(
        f"{res['lookups']:,} lookups in {res['seconds']} s = {res['lookups_per_s']:,} lookups/s "
        f"(CPU {res['cpu_seconds']} s, all threads); "
        f"peak RSS {res['peak_rss_mib']:,} MiB (lookup process); statuses {res['status']}; "
        f"wrong subscribers: {res['wrong']}; expected holder not named: {res['missed']}"
    )
    if "reference_range_join_s" in res:
        print(
            f"reference (plain range join, same engine): {res['reference_range_join_s']} s "
            f"for {res['reference_pairs']:,} candidate pairs"
        )
    if res["wrong"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
