"""M4 matching (``detect infected``, default ``[detect.infected]``) on several simulator worlds and
their noisy feeds (each lists a benign service or two by mistake).

    PYTHONPATH=src .venv/bin/python bench/infected_seeds.py [--scenario small]
        [--seeds 21,22,23,24,25] [--no-popular] [--work /tmp/m4sims]

Per seed: simulate, collect the exports, write the resolver logs as ``dns_queries``, load the
four feeds, ``match_reputation`` (nothing written), score with ``mamori.sim.score``. Prints each
seed with the entries held for review and why, and the feeds' wrong entries; then the mean and
the worst seed. ``--no-popular`` turns the popularity hold-back off, to see what the
ordinary-traffic hold-back catches on its own (a benign site too few subscribers visit for the
popularity rule). Seeds 11-15 were looked at while building the hold-back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from mamori.config import AddressPool, GovernanceConfig, load_config
from mamori.detect.reputation_match import InfectedParams, match_reputation
from mamori.governance import Governance
from mamori.ingest.collector import Collector
from mamori.ingest.reputation import load_feed
from mamori.sim import score, simulate

sys.path.insert(0, str(Path(__file__).parent))
import reputation as rb

FEEDS = (("feodo-ipblocklist.csv", "feodo"), ("urlhaus.csv", "urlhaus"),
         ("threatfox.csv", "threatfox"), ("stix-bundle.json", "stix"))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="small")
    ap.add_argument("--seeds", default="21,22,23,24,25")
    ap.add_argument("--no-popular", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/m4sims"))
    args = ap.parse_args()
    res: list[tuple[float, float]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        sim = args.work / f"{args.scenario}-{seed}"
        if not (sim / "truth.json").exists():
            simulate(args.scenario, sim, seed=seed)
        plan = json.loads((sim / "world" / "address_plan.json").read_text())
        pools = tuple(
            AddressPool(name=p["name"], kind=rb._KIND.get(p["kind"], p["kind"]),
                        prefixes=(p["prefix"],))
            for p in plan["pools"]
        )  # fmt: skip
        settings = InfectedParams(
            cgnat_port_block=int(plan.get("cgnat_block_size", 0)),
            **({"popular_min_addresses": 10**9} if args.no_popular else {}),
        )
        with tempfile.TemporaryDirectory() as d:
            cfg = load_config(overrides={"store": Path(d) / "store"}).model_copy(
                update={"address_plan": pools,
                        "governance": GovernanceConfig(unattributed="include")}
            )  # fmt: skip
            with Governance(cfg) as gov:
                Collector(gov).replay_pcap(sim / "flows" / "exports.pcap")
                gov.write("M7", "dns_queries", rb._dns_table(sim), "bench")
                for name, fmt in FEEDS:
                    load_feed(gov, sim / "feeds" / name, fmt, actor="bench")
                report = match_reputation(gov, actor="bench", write=False, settings=settings)
        truth = json.loads((sim / "truth.json").read_text())
        s = score("infected", report.findings, truth)
        res.append((s.precision, s.recall))
        wrong = sorted({f"{w['ip']}:{w['port']}" for w in truth["feeds"]["wrong_entries"]}
                       | {w["domain"] for w in truth["feeds"]["wrong_entries"] if w.get("domain")})  # fmt: skip
        held = [(h["indicator"], h["why"]) for h in report.held_back]
        print(f"seed {seed}: precision {s.precision:.3f} recall {s.recall:.3f} "
              f"({s.true_positives} TP, {s.false_positives} FP, {s.false_negatives} FN); "
              f"held {held}; wrong entries {wrong}", flush=True)  # fmt: skip
    p, r = [x[0] for x in res], [x[1] for x in res]
    print(f"precision mean {statistics.mean(p):.3f} worst {min(p):.3f} | "
          f"recall mean {statistics.mean(r):.3f} worst {min(r):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
