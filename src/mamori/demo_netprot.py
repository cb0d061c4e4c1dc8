"""Network protection on the simulated ISP: DDoS, reflection and spoofing (M10, M13, BCP 38)
scored against the simulator's ground truth, on several seeds, at a chosen sampling rate.

Each world is simulated with every router sampling 1-in-``sampling`` (1/1,000 by default, the
issue's target), its export packets are decoded by the real collector (``replay_pcap``) into a
store whose address plan, ISP resolvers and customer-facing interfaces are the simulated ISP's,
and the three detectors run with the thresholds of ``[detect.*]`` (FastNetMon's defaults for
DDoS): nothing is fitted to the simulator, so there is no training seed; every seed is a test.

Scoring (:func:`mamori.sim.evaluate.score`): DDoS victims whose attack rate (in the truth) is at
or above the configured threshold must be found; victims below it may be found or not (neither a
hit nor a false alarm). Reflectors, and the customer-facing interfaces spoofed packets entered on,
must be found. Results are the mean and the worst seed.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mamori.config import AddressPool, MamoriConfig, load_config
from mamori.config_network import CustomerInterface
from mamori.detect.base import Window
from mamori.detect.ddos import DdosParams
from mamori.detect.registry import build, params_for
from mamori.governance import Governance
from mamori.sim import scenario_config, score, simulate

__all__ = ["KINDS", "NetEval", "NetSeed", "detect_network", "evaluate_network", "network_config"]

ACTOR = "demo:netprot"
KINDS = ("ddos", "reflection", "spoofing")
_POOL_KINDS = {"static": "static", "dynamic": "dynamic", "cgnat-public": "cgnat"}
#: the simulated border routers' customer-facing ifIndex (one per access region)
_CUSTOMER_IFINDEX = range(100, 104)
#: the simulated ISP's resolvers (its world; written to no file the simulator exports)
_RESOLVERS = ("10.0.0.53/32", "10.0.1.53/32")


def network_config(base: MamoriConfig, sim_dir: Path, store: Path) -> MamoriConfig:
    """``base`` with the simulated ISP's address plan, resolvers and customer interfaces."""
    plan = json.loads((sim_dir / "world" / "address_plan.json").read_text(encoding="utf-8"))
    summary = json.loads((sim_dir / "summary.json").read_text(encoding="utf-8"))
    pools = tuple(
        AddressPool(name=p["name"], kind=_POOL_KINDS[p["kind"]], prefixes=(p["prefix"],))
        for p in plan["pools"]
        if p["kind"] in _POOL_KINDS
    )
    customer = tuple(p.name for p in pools if p.name != "infra")
    # subscribers behind CGNAT reach the ISP's own services from their inside addresses
    inside = tuple(p["prefix"] for p in plan["pools"] if p["kind"] == "cgnat-inside")
    # the border routers' access-facing interfaces; a data-centre router's also carry the
    # ISP's own servers (mail relay), so they are not customer edges
    border = {r.name for r in scenario_config(summary["scenario"]).routers if r.role == "border"}
    ifaces = tuple(
        CustomerInterface(
            exporter=r["exporter_ip"],
            ifindex=i,
            name=f"{r['name']}.{i}",
            pools=customer,
            prefixes=inside,
        )
        for r in summary["routers"]
        if r["name"] in border
        for i in _CUSTOMER_IFINDEX
    )
    network = base.network.model_copy(
        update={
            "resolvers": tuple(ipaddress.ip_network(r) for r in _RESOLVERS),
            "customer_interfaces": ifaces,
        }
    )
    return base.model_copy(update={"store": store, "address_plan": pools, "network": network})


def collect_pcap(gov: Governance, pcap: Path) -> int:
    """Decode the simulated export packets with the real collector; flow records stored."""
    from mamori.ingest.collector import Collector, replaying

    collector = Collector(gov, replaying(gov.config.collector))
    stats = collector.replay_pcap(pcap)
    return sum(c["records"] for c in stats.by_exporter.values())


def finding_json(row: dict[str, Any]) -> dict[str, Any]:
    """A finding as ``mamori detect … --json`` prints it (what ``mamori eval`` reads)."""
    out = {k: row[k] for k in ("finding_id", "kind", "method", "ip", "port", "score", "measure")}
    for k in ("first_seen", "last_seen"):
        out[k] = row[k].isoformat() if row[k] else None
    out["evidence"] = json.loads(row["evidence"]) if row["evidence"] else None
    return out


def detect_network(
    gov: Governance, *, write: bool = False, actor: str = ACTOR
) -> dict[str, list[dict[str, Any]]]:
    """The DDoS, reflection and spoofing detectors over everything stored, as configured."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        det: Any = build(kind, dict(gov.config.detect))
        det.write = write
        rows = det.run(gov, Window(), actor=actor).findings.to_pylist()
        out[kind] = [finding_json(r) for r in rows]
    return out


def threshold_pps(config: MamoriConfig) -> float:
    """``[detect.ddos] threshold_pps``: attacks at or above it are the ones to find."""
    params = params_for(dict(config.detect), "ddos")
    assert isinstance(params, DdosParams)
    return float(params.threshold_pps)


class NetSeed(BaseModel):
    seed: int
    records: int
    scores: dict[str, dict[str, Any]]


class NetEval(BaseModel):
    scenario: str
    sampling: int
    threshold_pps: float
    seeds: list[NetSeed]

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for kind in KINDS:
            p = [s.scores[kind]["precision"] for s in self.seeds]
            r = [s.scores[kind]["recall"] for s in self.seeds]
            out[kind] = {
                "precision_mean": round(sum(p) / len(p), 4),
                "precision_worst": min(p),
                "recall_mean": round(sum(r) / len(r), 4),
                "recall_worst": min(r),
            }
        return out


def _world(scenario: str, seed: int, sampling: int, work: Path) -> tuple[Path, dict[str, Any]]:
    sim = work / f"{scenario}-1in{sampling}-s{seed}"
    if not (sim / "truth.json").exists():
        shutil.rmtree(sim, ignore_errors=True)
        routers = tuple(
            r.model_copy(update={"sampling": sampling}) for r in scenario_config(scenario).routers
        )
        simulate(scenario, sim, seed=seed, routers=routers)
    return sim, json.loads((sim / "truth.json").read_text(encoding="utf-8"))


def evaluate_network(
    scenario: str,
    seeds: Sequence[int],
    work: Path,
    *,
    sampling: int = 1000,
    base: MamoriConfig | None = None,
) -> NetEval:
    """Simulate each seed at 1-in-``sampling``, collect, detect, score; ``work`` keeps the
    simulated worlds (reused) and the stores (rebuilt)."""
    base = base or load_config()
    work.mkdir(parents=True, exist_ok=True)
    results = []
    thr = threshold_pps(base)
    for seed in seeds:
        sim, truth = _world(scenario, seed, sampling, work)
        store = work / f"{sim.name}-store"
        shutil.rmtree(store, ignore_errors=True)
        with Governance(network_config(base, sim, store)) as gov:
            records = collect_pcap(gov, sim / "flows" / "exports.pcap")
            found = detect_network(gov)
        scores = {kind: score(kind, found[kind], truth, min_pps=thr).model_dump() for kind in KINDS}
        results.append(NetSeed(seed=seed, records=records, scores=scores))
    return NetEval(scenario=scenario, sampling=sampling, threshold_pps=thr, seeds=results)
