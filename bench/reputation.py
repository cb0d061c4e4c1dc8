"""Reputation feeds and M4 matching: parsing speed and detection quality on a simulated ISP.

    .venv/bin/python bench/reputation.py [--rows 500000] [--sim DIR | --scenario small]

1. Parsing: a generated ThreatFox CSV export and a plain list of ``--rows`` lines each (1 in
   1,000 lines malformed), parsed with :func:`parse_feed`; rows per second.
2. Matching: the simulated ISP's routers' exports are collected into a fresh store (M1), its
   Unbound query logs written as ``dns_queries`` (M7), its feeds loaded (Feodo, URLhaus,
   ThreatFox, STIX), then ``match_reputation`` is timed and its findings scored against
   ``truth.json`` with ``mamori.sim.score`` (kind ``infected``). No allocations are loaded, so
   unattributed addresses are included (``governance.unattributed = "include"``).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dns.rdatatype
import pyarrow as pa

from mamori.config import AddressPool, GovernanceConfig, load_config
from mamori.detect.reputation_match import match_reputation
from mamori.governance import Governance
from mamori.ingest.collector import Collector
from mamori.ingest.reputation import load_feed, parse_feed
from mamori.sim import score, simulate

_UNBOUND = re.compile(r"^\[(\d+)\] unbound\[[^\]]*\] info: (\S+) (\S+?)\.? (\S+) IN$")
_KIND = {"cgnat-public": "cgnat", "cgnat-inside": "dynamic"}


def bench_parse(rows: int, tmp: Path) -> None:
    tf = tmp / "threatfox.csv"
    plain = tmp / "plain.txt"
    with tf.open("w") as fh:
        fh.write('# "first_seen_utc","ioc_id","ioc_value","ioc_type","threat_type","fk_malware",'
                 '"malware_alias","malware_printable","last_seen_utc","confidence_level",'
                 '"reference","tags","anonymous","reporter"\n')  # fmt: skip
        for i in range(rows):
            a, b = (i >> 8) & 255, i & 255
            value, kind = (
                (f"198.{a}.{b}.{i % 200 + 1}:{1024 + i % 5000}", "ip:port")
                if i % 2
                else (f"c{i}.example", "domain")
            )
            if i % 1000 == 999:
                value = "bad value"
            fh.write(
                f'"2026-11-20 08:00:20", "{i}", "{value}", "{kind}", "botnet_cc", "win.x", '
                f'"None", "X", "", "75", "None", "X", "0", "bench"\n'
            )
    with plain.open("w") as fh:
        for i in range(rows):
            fh.write(f"203.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n" if i % 1000 else "x\n")
    for path, fmt in ((tf, "threatfox"), (plain, "plain")):
        t0 = time.perf_counter()
        table, report = parse_feed(path, fmt)
        dt = time.perf_counter() - t0
        print(
            f"parse {fmt:<10} {rows:>9,} lines: {dt:6.2f} s, {rows / dt:>10,.0f} lines/s "
            f"({report.rows_loaded:,} loaded, {report.rows_bad:,} malformed reported)"
        )
        assert table.num_rows == report.rows_loaded


def _dns_table(sim: Path) -> pa.Table:
    ts: list[datetime] = []
    client: list[str] = []
    qname: list[str] = []
    qtype: list[int] = []
    for log in sorted((sim / "dns").glob("unbound-*.log")):
        for line in log.read_text().splitlines():
            m = _UNBOUND.match(line)
            if m:
                ts.append(datetime.fromtimestamp(int(m.group(1)), UTC))
                client.append(m.group(2))
                qname.append(m.group(3).lower())
                qtype.append(int(dns.rdatatype.from_text(m.group(4))))
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "client_addr": client,
            "qname": qname,
            "qtype": pa.array(qtype, pa.uint16()),
        }
    )


def bench_match(sim: Path, tmp: Path) -> None:
    plan = json.loads((sim / "world" / "address_plan.json").read_text())
    pools = tuple(
        AddressPool(name=p["name"], kind=_KIND.get(p["kind"], p["kind"]), prefixes=(p["prefix"],))
        for p in plan["pools"]
    )
    cfg = load_config(overrides={"store": tmp / "store"}).model_copy(
        update={
            "address_plan": pools,
            "governance": GovernanceConfig(unattributed="include"),
            "detect": {"infected": {"cgnat_port_block": int(plan.get("cgnat_block_size", 0))}},
        }
    )
    with Governance(cfg) as gov:
        t0 = time.perf_counter()
        Collector(gov).replay_pcap(sim / "flows" / "exports.pcap")
        t_collect = time.perf_counter() - t0
        dq = _dns_table(sim)
        gov.write("M7", "dns_queries", dq, "bench")
        for name, fmt in (
            ("feodo-ipblocklist.csv", "feodo"),
            ("urlhaus.csv", "urlhaus"),
            ("threatfox.csv", "threatfox"),
            ("stix-bundle.json", "stix"),
        ):
            load_feed(gov, sim / "feeds" / name, fmt, actor="bench")
        n_flows = gov.open("M1", "flows", ["time_start"], "bench").arrow().num_rows
        t0 = time.perf_counter()
        gov.open("M4", "flows", ["time_start", "src_addr", "dst_addr"], "bench").arrow()
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = match_reputation(gov, actor="bench")
        t_match = time.perf_counter() - t0
    truth = json.loads((sim / "truth.json").read_text())
    s = score("infected", report.findings, truth)
    print(
        f"sim {sim.name}: {n_flows:,} flow records (collected in {t_collect:.1f} s), "
        f"{dq.num_rows:,} resolver queries"
    )
    print(
        f"match_reputation: {t_match:.2f} s (for reference, reading the flows' addresses "
        f"through M4's consent filter alone: {t_read:.2f} s); {report.indicators_ip} C&C addresses, "
        f"{report.indicators_domain} C&C names; {report.flow_matches:,} flow matches, "
        f"{report.dns_matches:,} query matches, {len(report.findings)} findings"
    )
    for h in report.held_back:
        print(
            f"  held back as a probable wrong listing: {h['indicator']} "
            f"({h['addresses']} of {h['active']} active subscriber addresses)"
        )
    print(
        f"eval infected: precision {s.precision:.3f}, recall {s.recall:.3f} "
        f"({s.true_positives} TP, {s.false_positives} FP, {s.false_negatives} infected "
        f"subscribers missed: {s.missed[:10]})"
    )
    unlisted = {(e["ip"], e["port"]) for e in truth["feeds"]["unlisted"] if e["role"] == "cc"}
    wrong = {f"{w['ip']}:{w['port']}" for w in truth["feeds"]["wrong_entries"]}
    wrong |= {w["domain"] for w in truth["feeds"]["wrong_entries"] if w.get("domain")}
    by_key = {f"{f['ip']}:{f['port']}": f for f in report.findings}
    on_wrong = [k for k in s.spurious if set(by_key[k]["evidence"]["indicators"]) <= wrong]
    print(
        f"false positives resting only on entries the feeds list by mistake (benign services): "
        f"{len(on_wrong)} of {s.false_positives}"
    )
    print(f"(C&C servers the feeds never list: {len(unlisted)}; their bots cannot be matched)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--sim", type=Path, help="an existing `mamori simulate` output")
    ap.add_argument("--scenario", default="small")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_parse(args.rows, tmp)
        sim = args.sim
        if sim is None:
            sim = tmp / "sim"
            simulate(args.scenario, sim, seed=0)
        bench_match(sim, tmp)


if __name__ == "__main__":
    main()
