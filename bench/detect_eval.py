"""C&C discovery on the simulated ISP at several sampling rates, scored against the truth.

    PYTHONPATH=src .venv/bin/python bench/detect_eval.py [--work /tmp/detect-eval]
        [--rates 1,1000,10000] [--scenario demo] [--big-botnet]

For each rate: simulate the scenario with every router sampling 1-in-rate (seed 0 to detect on,
seed 1 to train the learned model on — it never sees the evaluated world), replay the routers'
exports into a fresh store with the collector (what ``mamori collect --pcap`` runs), load the
simulated Feodo Tracker, ThreatFox and URLhaus feeds with the reputation loader, then run
``detect_c2`` per method and combined:

* over the whole window: precision, recall on C&C *unknown* at the window's end (not listed, or
  listed later), precision@10;
* hourly, for the three methods together (data and feeds as known at each hour): lead time, the
  share of C&C that the feeds list late or never found before their listing.

Every entry a feed lists is used as a seed only from the time the feed lists it. Targets (issue 5)
are printed next to the figures. ``--big-botnet`` adds runs with botnets of 1,000 bots (20,000 subscribers) at the rates of
``--big-rates`` (default 1/10,000).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mamori.config import AddressPool, MamoriConfig, load_config
from mamori.detect.c2 import METHODS, run_c2
from mamori.governance import Governance
from mamori.ingest.collector import Collector
from mamori.ingest.reputation import load_feed
from mamori.sim import lead_time, scenario_config, score_c2, simulate
from mamori.sim.config import IotBotnet, PcBotnet

FEEDS = (("feodo", "feodo-ipblocklist.csv"), ("threatfox", "threatfox.csv"),
         ("urlhaus", "urlhaus.csv"))  # fmt: skip
_KINDS = {"cgnat-public": "cgnat", "dynamic": "dynamic", "static": "static"}


def config_for(sim: Path, store: Path) -> MamoriConfig:
    """The ISP's address plan as the simulator wrote it (the CGNAT inside range never reaches a
    border router, so it is not part of the plan the detector sees)."""
    plan = json.loads((sim / "world" / "address_plan.json").read_text(encoding="ascii"))
    pools = tuple(
        AddressPool(name=p["name"], kind=_KINDS[p["kind"]], prefixes=(p["prefix"],))
        for p in plan["pools"]
        if p["kind"] in _KINDS
    )
    return load_config(overrides={"store": store}).model_copy(update={"address_plan": pools})


def build(scenario: str, rate: int, seed: int, work: Path, **over: Any) -> tuple[Path, Path]:
    """Simulated ISP + store with its flows and feeds; cached under ``work``."""
    tag = f"{scenario}-r{rate}-s{seed}" + ("-big" if over else "")
    sim, store = work / tag / "sim", work / tag / "store"
    if (work / tag / "done").exists():
        return sim, store
    shutil.rmtree(store, ignore_errors=True)
    if not (sim / "truth.json").exists():  # a finished simulation is kept
        shutil.rmtree(sim, ignore_errors=True)
        base = scenario_config(scenario, **over)
        routers = tuple(r.model_copy(update={"sampling": rate}) for r in base.routers)
        simulate(base.model_copy(update={"routers": routers}), sim, seed=seed)
    gov = Governance(config_for(sim, store))
    try:
        Collector(gov, gov.config.collector).replay_pcap(sim / "flows" / "exports.pcap")
        for fmt, name in FEEDS:
            load_feed(gov, sim / "feeds" / name, fmt, actor="bench", source=f"sim-{fmt}")
    finally:
        gov.close()
    (work / tag / "done").write_text("ok\n")
    return sim, store


def _dicts(t: Any) -> list[dict[str, Any]]:
    return [{"ip": r["ip"], "port": r["port"], "score": r["score"]} for r in t.to_pylist()]


def evaluate(scenario: str, rate: int, work: Path, **over: Any) -> list[dict[str, Any]]:
    t_build = time.perf_counter()
    # The model is trained on another world (seed 1). At 1/1 that world is trained at 1/10: the
    # simulator's unsampled sFlow export of a second demo world does not fit this machine's memory
    # next to the rest.
    train_sim, train_store = build(scenario, max(rate, 10), 1, work, **over)
    sim, store = build(scenario, rate, 0, work, **over)
    t_build = time.perf_counter() - t_build
    truth = json.loads((sim / "truth.json").read_text(encoding="utf-8"))
    start = datetime.fromisoformat(truth["window"]["from"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(truth["window"]["until"].replace("Z", "+00:00"))
    tgov = Governance(config_for(train_sim, train_store))
    note = ""
    try:
        trained = run_c2(tgov, actor="bench", methods=(), train=True, write=False)
        assert trained.model is not None
        model_files = [trained.model.path, trained.model.path.with_suffix(".json")]
        note = f"model v{trained.model.version} {trained.model.meta['metrics']}"
    except Exception as exc:
        model_files = []
        note = f"no model: {exc}"
    finally:
        tgov.close()
    gov = Governance(config_for(sim, store))
    mdir = gov.state_dir("models")
    for f in mdir.glob("c2-v*"):
        f.unlink()
    for f in model_files:
        shutil.copy(f, mdir / f.name)
    bots: dict[str, int] = {}
    for inf in truth["infected"]:
        bots[inf["family"]] = bots.get(inf["family"], 0) + 1
    rows = []
    try:
        for methods in [*((m,) for m in METHODS), METHODS]:
            t0 = time.perf_counter()
            final = run_c2(gov, actor="bench", methods=methods, write=False)
            dt = time.perf_counter() - t0
            sc = score_c2(_dicts(final.findings), truth, k=10)
            runs = []
            hour = start + timedelta(hours=1)
            while len(methods) > 1 and hour <= end:  # lead time: the combined detector
                r = run_c2(gov, actor="bench", until=hour, methods=methods, write=False)
                runs.append((hour.isoformat(), _dicts(r.findings)))
                hour += timedelta(hours=1)
            lt = lead_time(runs, truth) if runs else None
            rows.append(
                {
                    "rate": rate,
                    "method": "+".join(methods) if len(methods) > 1 else methods[0],
                    "findings": sc.findings,
                    "precision": sc.precision,
                    "precision_hostile": sc.precision_hostile,
                    "recall_unknown": sc.recall_unknown,
                    "unknown": f"{sc.unknown_found}/{sc.unknown_total}",
                    "p_at_10": sc.precision_at_k,
                    "lead": lt.share if lt else None,
                    "lead_n": f"{lt.found_before_listing}/{lt.late_or_unlisted}" if lt else "-",
                    "spurious": sc.spurious,
                    "missed": sc.missed_unknown,
                    "seconds": round(dt, 2),
                    "seeds": final.summary.get("seeds"),
                    "bots": bots,
                }
            )
    finally:
        gov.close()
    print(f"# rate 1/{rate}: build {t_build:.0f} s; {note}", file=sys.stderr)
    for r in rows:  # as each rate finishes: a long run still shows what it has
        print("# " + json.dumps(r), file=sys.stderr, flush=True)
    return rows


TARGETS = {1: "P>=0.95 R>=0.90", 1000: "P>=0.95 R>=0.70", 10000: "P>=0.95 (>=1000 bots)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/detect-eval"))
    ap.add_argument("--rates", default="1,1000,10000")
    ap.add_argument("--scenario", default="demo")
    ap.add_argument("--big-botnet", action="store_true")
    ap.add_argument("--big-rates", default="10000", help="rates of the --big-botnet runs")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for rate in (int(r) for r in args.rates.split(",")):
        rows += evaluate(args.scenario, rate, args.work)
    if args.big_botnet:
        big = {
            "subscribers": 20_000,
            "iot": IotBotnet(bots=1000, cc_servers=2, scans_per_bot_hour=60),
            "pc": PcBotnet(bots=1000, cc_servers=8, active_cc=3, rotate_hours=2.0),
        }
        for big_rate in (int(r) for r in args.big_rates.split(",")):
            for r in evaluate(args.scenario, big_rate, args.work, **big):
                r["rate"] = f"{big_rate} big"
                rows.append(r)
    head = (f"{'rate':>10} {'method':<26} {'found':>5} {'prec':>6} {'P_hos':>6} {'R_unk':>6} {'unk':>6} "
            f"{'P@10':>5} {'lead':>6} {'lead n':>7} {'sec':>6}  target")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        rate_key = int(str(r["rate"]).split()[0])
        print(
            f"{r['rate']!s:>10} {r['method']:<26} {r['findings']:>5} {r['precision']:>6.3f} "
            f"{r['precision_hostile']:>6.3f} "
            f"{r['recall_unknown']:>6.3f} {r['unknown']:>6} {r['p_at_10']:>5.2f} "
            f"{'-' if r['lead'] is None else format(r['lead'], '.3f'):>6} {r['lead_n']:>7} "
            f"{r['seconds']:>6.2f}  "
            f"{TARGETS.get(rate_key, '')}; lead>=0.30"
        )
    for r in rows:
        if r["spurious"] or r["missed"]:
            print(f"1/{r['rate']} {r['method']}: spurious {r['spurious']} missed {r['missed']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
