"""``detect_c2``: run the C&C discovery methods over a window and store their findings (M2).

Methods: ``correlation`` (:mod:`mamori.detect.c2_correlation`), ``learned``
(:mod:`mamori.detect.c2_learned`) and ``beacon`` (:mod:`mamori.detect.beacon`). Each endpoint is
reported once, with the methods that found it (``method`` is e.g. ``correlation+beacon``), the best
score, and per-method evidence. Findings name endpoints only — never an internal host — and:

* an endpoint inside the ISP's own address plan is never reported (our own servers are handled by
  other measures, and reporting them would point at a subscriber);
* nor an address no C&C can be served from across the Internet: multicast (SSDP's
  239.255.255.250), broadcast, link-local, loopback, private, shared (CGNAT), reserved and
  documentation ranges (``never_report``; the documentation ranges only while
  ``report_documentation`` is false: test worlds such as the simulator's use them as the Internet);
* an endpoint already listed in reputation (C&C or first-stage) is *known*: it is left out, or with
  ``include_known`` kept and marked ``"known": true`` in its evidence.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from mamori.detect.base import DetectorParams, DetectorRun, Window
from mamori.detect.beacon import BeaconParams, beacon_endpoints_sql, materialise_pairs
from mamori.detect.c2_correlation import CorrelationParams, correlate
from mamori.detect.c2_learned import (
    LearnedModel,
    endpoint_features,
    load_model,
    train_model,
)
from mamori.detect.flowdays import FlowDaysParams, open_window
from mamori.detect.flowview import FlowView, rate_value
from mamori.detect.reviews import CORROBORATED, Reviews
from mamori.detect.seeds import Seeds, open_seeds
from mamori.governance import Governance

__all__ = ["METHODS", "C2Detector", "C2Params", "C2Run", "detect_c2", "run_c2"]

METHODS = ("correlation", "learned", "beacon")
_PROTO = {6: "tcp", 17: "udp"}


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IANA special-purpose blocks that are not globally reachable (documentation apart)
NEVER_REPORT: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
        "240.0.0.0/4", "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64",
        "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip
DOCUMENTATION: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


class Corroboration(DetectorParams):
    """How beacon evidence is weighed: a regular rhythm is what benign services (IoT clouds,
    push keep-alives, NTP, VPN) do best, so rhythm alone never scores above ``alone``; what
    lifts a beacon towards 1 is corroboration — the beaconing hosts are suspects (they also
    reach a listed C&C or first-stage server). Within the uncorroborated range, beacons rank by
    rhythm, intensity (a RAT calls home hundreds of times an hour) and rarity, and lose weight
    when the endpoint behaves like a service (many ports served). An endpoint that serves
    content (answers many times larger than what it is sent) or never answers is filtered out."""

    #: the most a beacon scores with no suspect among its beaconing hosts (below 0.5: a rhythm
    #: alone is never more likely C&C than not)
    alone: float = Field(default=0.45, gt=0, le=1)
    #: weight of intensity (connections per hour of the busiest pair) against rhythm
    intensity_weight: float = Field(default=0.5, ge=0, le=1)
    #: connections per hour (sampled records scaled by the rate) at which intensity is full
    intensity_full_per_hour: float = Field(default=240.0, gt=0)
    #: a pair this intense is evidence even when its timing is irregular (a RAT's bursts): one
    #: host, one endpoint, hundreds of connections an hour
    rat_min_per_hour: float = Field(default=100.0, gt=0)
    #: infrastructure protocols whose traffic is periodic by nature (a remote resolver, time
    #: servers, DHCP, NetBIOS, SSDP, mDNS, LLMNR): "PORT/PROTO"; C&C over DNS is the resolver
    #: measures' to find, not the flows'
    service_ports: tuple[str, ...] = (
        "53/udp", "53/tcp", "123/udp", "67/udp", "68/udp", "137/udp", "138/udp", "1900/udp",
        "5353/udp", "5355/udp",
    )  # fmt: skip
    service_port_penalty: float = Field(default=0.3, gt=0, le=1)
    #: weight of rarity (hosts using the endpoint against the most a beacon may have)
    rarity_weight: float = Field(default=0.5, ge=0, le=1)
    #: an endpoint serving more distinct ports than this to our hosts looks like a service
    max_ports_served: int = Field(default=3, ge=1)
    ports_penalty: float = Field(default=0.5, gt=0, le=1)
    #: an endpoint sending more than this many times the bytes it receives serves content (a
    #: download, a page and its parts), not a check-in: never a beacon finding
    max_in_out: float = Field(default=10.0, gt=0)
    #: … and one sending back less than this share is no server at all (a flood's victim, a
    #: scan's silent target): never a beacon finding either
    min_in_out: float = Field(default=0.01, ge=0)
    #: suspects among the beaconing hosts lift the score fully from this many on (one bot's
    #: periodic use of a benign service is not a botnet converging on it)
    suspects_for_full_lift: int = Field(default=2, ge=1)


class C2Params(DetectorParams):
    """``[detect.c2]``: C&C discovery (M2)."""

    correlation: CorrelationParams = Field(default_factory=CorrelationParams)
    beacon: BeaconParams = Field(default_factory=BeaconParams)
    #: beacon findings only for endpoints at most this share of hosts use (or ``beacon_min_hosts``)
    beacon_max_share: float = Field(default=0.005, gt=0, le=1)
    beacon_min_hosts: int = Field(default=3, ge=1)
    #: calibrated probability from which the learned model reports an endpoint
    learned_threshold: float = Field(default=0.5, ge=0, le=1)
    #: the learned model also needs an exchange from at least this many distinct hosts
    learned_min_hosts: int = Field(default=1, ge=1)
    #: memory of the run's sandbox (spills to the store past it); None: the governance default
    memory_limit_mb: int | None = Field(default=3072, ge=64)
    #: windows of days to weeks: older days read as per-day aggregates
    days: FlowDaysParams = Field(default_factory=FlowDaysParams)
    #: prefixes never reported: no C&C is served from them across the Internet (IANA
    #: special-purpose registry: unspecified, private, shared/CGNAT, loopback, link-local,
    #: IETF protocol assignments, multicast, reserved and limited broadcast; IPv6 alike)
    never_report: tuple[IPNetwork, ...] = NEVER_REPORT
    #: the documentation ranges (RFC 5737, RFC 3849) are never reported either, unless this is
    #: true: only for a test world that uses them as its Internet (the simulator's)
    report_documentation: bool = False
    corroboration: Corroboration = Field(default_factory=Corroboration)
    #: endpoints whose finding an analyst rejected (or marked a false positive) are left out of
    #: later runs — counted, named by finding id in the summary and audited — for as long as
    #: the verdict is kept (``retention.findings``); false: report them again
    honour_rejections: bool = True


#: verdicts that make an endpoint a negative example (left out of later runs, and a negative
#: in training); and those that make it a positive one
REJECTED = ("rejected", "false-positive")
ACCEPTED = ("confirmed", CORROBORATED)


@dataclass
class C2Run:
    """What a run produced: the stored findings and a summary for the operator."""

    findings: pa.Table
    known: pa.Table
    summary: dict[str, Any] = field(default_factory=dict)
    model: LearnedModel | None = None


def _finding_id(ip: str, port: int, proto: str) -> str:
    return "c2-" + hashlib.sha256(f"c2|{ip}|{port}|{proto}".encode()).hexdigest()[:24]


def c2_verdicts(gov: Governance) -> dict[str, str]:
    """People's latest verdict on each C&C finding, by finding id (one id per endpoint, so a
    verdict on an earlier run's finding names the same endpoint in every later run)."""
    return {fid: r.verdict for fid, r in Reviews(gov).latest().items() if fid.startswith("c2-")}


def _verdict_labels(feats: pa.Table, verdicts: dict[str, str]) -> list[bool | None]:
    """Per endpoint row of ``feats``: True where people confirmed it (or a feed corroborated
    it), False where they rejected it, None where nobody reviewed it."""
    out: list[bool | None] = []
    for ip, port, proto in zip(feats.column("ip").to_pylist(), feats.column("port").to_pylist(),
                               feats.column("proto").to_pylist(), strict=True):  # fmt: skip
        v = verdicts.get(_finding_id(ip, int(port), _PROTO.get(int(proto), str(proto))))
        out.append(True if v in ACCEPTED else False if v in REJECTED else None)
    return out


def beacon_score(r: dict[str, Any], cp: Corroboration) -> tuple[float, dict[str, float]]:
    """A beaconing endpoint's score and its parts (see :class:`Corroboration`).

    ``rhythm`` (the best pair's beacon score) and ``intensity`` make the evidence; ``rarity``
    (1 for one host, towards 0 at the most hosts a beacon may have) and the service penalties
    scale it; the share of beaconing hosts that are suspects lifts it from ``alone`` to 1."""
    rhythm = float(r["max_score"])
    intensity = min(1.0, float(r["per_hour"]) / cp.intensity_full_per_hour)
    evidence = (1 - cp.intensity_weight) * rhythm + cp.intensity_weight * intensity
    limit = max(float(r["max_hosts"]), 1.0)
    rarity = 1.0 - min(1.0, (int(r["hosts"]) - 1) / limit)
    scale = 1 - cp.rarity_weight + cp.rarity_weight * rarity
    if int(r["ports_served"]) > cp.max_ports_served:
        scale *= cp.ports_penalty
    if f"{int(r['eport'])}/{_PROTO.get(int(r['proto']), r['proto'])}" in cp.service_ports:
        scale *= cp.service_port_penalty
    suspects = int(r["suspects"])
    seed = suspects / max(1, int(r["beaconing_hosts"]))
    lift = cp.alone + (1 - cp.alone) * seed * min(1.0, suspects / cp.suspects_for_full_lift)
    score = round(evidence * scale * lift, 4)
    parts = {
        "rhythm": round(rhythm, 4),
        "intensity": round(intensity, 4),
        "rarity": round(rarity, 4),
        "service_scale": round(scale, 4),
        "suspect_share": round(seed, 4),
    }
    return score, parts


def never_reported(ip: str, p: C2Params) -> bool:
    """Whether ``ip`` is an address no C&C is served from (see :class:`C2Params`)."""
    nets = p.never_report if p.report_documentation else p.never_report + DOCUMENTATION
    return _inside(ip, nets)


def _inside(ip: str, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in nets)


def _ts(epoch: float | None) -> datetime | None:
    if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)):
        return None
    return datetime.fromtimestamp(epoch, tz=UTC)


def run_c2(
    gov: Governance,
    *,
    actor: str,
    since: datetime | None = None,
    until: datetime | None = None,
    methods: Sequence[str] = METHODS,
    train: bool = False,
    include_known: bool = False,
    params: C2Params | None = None,
    write: bool = True,
) -> C2Run:
    """Run the methods, store the findings (unless ``write`` is false) and say what happened."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    # without explicit parameters, the configuration's [detect.c2]
    p = params or C2Params.model_validate(gov.config.detect.get("c2", {}))
    box = gov.sandbox(p.memory_limit_mb, label="M2-c2", neutral=True)
    view = open_window(gov, actor, since=since, until=until, sandbox=box, params=p.days)
    seeds = open_seeds(gov, actor, box, until=until)
    summary: dict[str, Any] = {
        "window": [since.isoformat() if since else None, until.isoformat() if until else None],
        "inside": view.plan_source,
        "seeds": seeds.count,
        "methods": list(methods),
        "records_unknown_rate": view.unknown_rate,
        "aggregated_days": view.aggregated_days,
    }
    # endpoint key → method → (score, first, last, evidence)
    found: dict[tuple[str, int, int], dict[str, tuple[float, float, float, dict[str, Any]]]] = {}

    def add(key: tuple[str, int, int], method: str, score: float, first: float, last: float,
            evidence: dict[str, Any]) -> None:  # fmt: skip
        found.setdefault(key, {})[method] = (score, first, last, evidence)

    try:
        return _run(gov, view, seeds, summary, found, add, actor=actor, since=since,
                    until=until, methods=methods, train=train, include_known=include_known,
                    p=p, write=write)  # fmt: skip
    finally:
        view.close()
        box.close()


def _run(
    gov: Governance,
    view: FlowView,
    seeds: Seeds,
    summary: dict[str, Any],
    found: dict[tuple[str, int, int], dict[str, tuple[float, float, float, dict[str, Any]]]],
    add: Any,
    *,
    actor: str,
    since: datetime | None,
    until: datetime | None,
    methods: Sequence[str],
    train: bool,
    include_known: bool,
    p: C2Params,
    write: bool,
) -> C2Run:
    # periodicity is judged on records with their own times, never on per-day aggregates
    pairs_table = materialise_pairs(view.timing(), p.beacon)
    periodic: dict[tuple[str, int, int], float] = {}
    if "correlation" in methods:
        pairs = view.sql(
            f"SELECT ext, eport, proto, max(score) AS score FROM {pairs_table} GROUP BY ALL"
        ).to_arrow_table()
        if pairs.num_rows:
            ext = pairs.column("ext").to_pylist()
            eport = pairs.column("eport").to_pylist()
            proto = pairs.column("proto").to_pylist()
            score = pairs.column("score").to_pylist()
            for e, po, pr, s in zip(ext, eport, proto, score, strict=True):
                key = (e, int(po), int(pr))
                periodic[key] = max(periodic.get(key, 0.0), float(s))
        corr = correlate(view, seeds, p.correlation, periodic)
        for row in corr.to_pylist():
            add((row["ip"], row["port"], row["proto"]), "correlation", row["score"],
                row["first"], row["last"], json.loads(row["evidence"]))  # fmt: skip
        summary["correlation"] = corr.num_rows

    if "beacon" in methods:
        cp = p.corroboration
        sql = beacon_endpoints_sql(
            view.name,
            pairs_table,
            p.beacon,
            p.beacon_max_share,
            p.beacon_min_hosts,
            p.correlation.max_port_probe_share,
            seeds=seeds.name if seeds.count else None,
            rat_min_per_hour=cp.rat_min_per_hour,
        )
        rows = [r for r in view.sql(sql).to_arrow_table().to_pylist()
                if cp.min_in_out <= float(r["in_out"]) <= cp.max_in_out]  # fmt: skip
        for r in rows:
            score, parts = beacon_score(r, cp)
            ev = {
                "method": "beacon",
                "beaconing_hosts": int(r["beaconing_hosts"]),
                "suspect_hosts": int(r["suspects"]),
                "endpoint_hosts": int(r["hosts"]),
                "population_hosts": int(r["n_pop"]),
                "period_s": round(float(r["period_s"]), 1) if r["period_s"] else None,
                "max_pair_score": round(float(r["max_score"]), 4),
                "connections_per_hour": round(float(r["per_hour"]), 1),
                "ports_served": int(r["ports_served"]),
                "in_out": round(float(r["in_out"]), 2),
                "sampled_flows": int(r["sampled_flows"]),
                "sampling_rates": [rate_value(r["rate_min"]), rate_value(r["rate_max"])],
                "score_parts": parts,
            }
            add((r["ext"], int(r["eport"]), int(r["proto"])), "beacon", score, r["first"],
                r["last"], ev)  # fmt: skip
        summary["beacon"] = len(rows)

    model: LearnedModel | None = None
    if train or ("learned" in methods and (model := load_model(gov)) is not None):
        feats = endpoint_features(view, seeds, p.beacon, pairs_table)
        if train:
            # people's verdicts are labels: a rejected endpoint is a negative even when a feed
            # lists it, a confirmed one a positive even when none does
            reviewed = _verdict_labels(feats, c2_verdicts(gov))
            model = train_model(gov, feats, actor=actor, window=(since, until), reviewed=reviewed)
            summary["trained"] = model.meta
    if "learned" in methods:
        if model is None:
            summary["learned"] = "no model: train one with `mamori detect c2 --train`"
        elif "learned" in methods:
            proba = model.predict(feats)
            hosts = np.asarray(feats.column("hosts").to_numpy(zero_copy_only=False))
            label = np.asarray(feats.column("label").to_numpy(zero_copy_only=False), dtype=bool)
            probe = np.asarray(feats.column("port_probe_share").to_numpy(zero_copy_only=False))
            # a scanned port's answering targets are victims (as in correlation and beacon)
            hit = (proba >= p.learned_threshold) & (hosts >= p.learned_min_hosts) & ~label
            hit &= probe < p.correlation.max_port_probe_share
            idx = np.nonzero(hit)[0]
            sub = feats.take(pa.array(idx, pa.int64())).to_pylist()
            for r, pr_ in zip(sub, proba[idx], strict=True):
                ev = {
                    "method": "learned",
                    "model_version": model.version,
                    "probability": round(float(pr_), 4),
                    "endpoint_hosts": int(r["hosts"]),
                    "suspect_hosts": int(r["suspect_hosts"]),
                    "sampled_flows": int(r["flows"]),
                    "estimated_flows": int(r["est_flows"]),
                    "regularity": None if r["regularity"] is None else round(r["regularity"], 4),
                }
                add((r["ip"], int(r["port"]), int(r["proto"])), "learned",
                    round(float(pr_), 4), r["first"], r["last"], ev)  # fmt: skip
            summary["learned"] = len(idx)

    # known endpoints (listed by `until`) and our own address plan
    known_keys: set[tuple[str, int | None]] = set()
    if seeds.count:
        for ip, port in view.sql(f"SELECT ip, port FROM {seeds.name}").fetchall():
            known_keys.add((ip, None if port is None else int(port)))
    own = gov.config.pools()
    detected = until or datetime.now(UTC)
    rows_out: list[dict[str, Any]] = []
    rows_known: list[dict[str, Any]] = []
    dropped_inside = dropped_special = 0
    for (ip, port, proto), by_method in found.items():
        if _inside(ip, own):
            dropped_inside += 1
            continue
        if never_reported(ip, p):
            dropped_special += 1
            continue
        is_known = (ip, None) in known_keys or (ip, port) in known_keys
        names = [m for m in METHODS if m in by_method]
        score = max(v[0] for v in by_method.values())
        first = min(v[1] for v in by_method.values())
        last = max(v[2] for v in by_method.values())
        proto_name = _PROTO.get(proto, str(proto))
        evidence: dict[str, Any] = {m: by_method[m][3] for m in names}
        if is_known:
            evidence["known"] = True
        text = json.dumps(evidence, sort_keys=True, separators=(",", ":"))
        row = {
            "detected": detected,
            "finding_id": _finding_id(ip, port, proto_name),
            "kind": "c2",
            "method": "+".join(names),
            "ip": ip,
            "port": port,
            "protocol": proto_name,
            "score": float(score),
            "first_seen": _ts(first),
            "last_seen": _ts(last),
            "measure": "M2",
            "evidence": text[:16000],
        }
        (rows_known if is_known else rows_out).append(row)
    if include_known:
        rows_out += rows_known
    suppressed: list[str] = []
    if p.honour_rejections:
        # an endpoint people rejected is not reported again: the analysts' allowlist
        rejected = {fid for fid, v in c2_verdicts(gov).items() if v in REJECTED}
        suppressed = sorted(r["finding_id"] for r in rows_out if r["finding_id"] in rejected)
        rows_out = [r for r in rows_out if r["finding_id"] not in rejected]
    rows_out.sort(key=lambda r: (-r["score"], r["ip"], r["port"]))
    findings = _table(rows_out)
    summary.update(
        {
            "findings": findings.num_rows,
            "known_endpoints_seen": len(rows_known),
            "inside_plan_dropped": dropped_inside,
            "special_dropped": dropped_special,
            "rejected_suppressed": len(suppressed),
            "rejected_suppressed_ids": suppressed[:100],
        }
    )
    if write and suppressed:
        gov.audit.append(
            actor=actor,
            event="suppressed",
            measure="M2",
            dataset="findings",
            detail={"reason": "rejected by people", "findings": len(suppressed),
                    "finding_ids": suppressed[:100]},
        )  # fmt: skip
    if write and findings.num_rows:
        gov.write(
            "M2",
            "findings",
            findings,
            actor,
            justification="C&C discovery over flows",
            detail={"methods": list(methods), "known_left_out": 0 if include_known else
                    len(rows_known)},
        )  # fmt: skip
    return C2Run(findings=findings, known=_table(rows_known), summary=summary, model=model)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    from mamori.schemas import dataset

    schema = dataset("findings").arrow
    return pa.Table.from_pylist(rows, schema=schema)


def detect_c2(
    gov: Governance,
    *,
    actor: str,
    since: datetime | None = None,
    until: datetime | None = None,
    methods: Sequence[str] = METHODS,
) -> pa.Table:
    """Find C&C endpoints in the flows of [since, until) and store them as findings."""
    return run_c2(gov, actor=actor, since=since, until=until, methods=methods).findings


class C2Detector:
    """``mamori detect c2``: C&C discovery as a :class:`~mamori.detect.base.Detector`.

    ``methods``, ``train``, ``include_known`` and ``write`` choose what this run does; the
    thresholds are :class:`C2Params` (``[detect.c2]``)."""

    name = "c2"
    measure = "M2"
    Params = C2Params

    def __init__(
        self,
        params: C2Params | None = None,
        *,
        methods: Sequence[str] = METHODS,
        train: bool = False,
        include_known: bool = False,
        write: bool = True,
    ) -> None:
        self.params: C2Params = params or C2Params()
        self.methods = tuple(methods)
        self.train = train
        self.include_known = include_known
        self.write = write

    def run(self, gov: Governance, window: Window, *, actor: str) -> DetectorRun:
        out = run_c2(
            gov,
            actor=actor,
            since=window.since,
            until=window.until,
            methods=self.methods,
            train=self.train,
            include_known=self.include_known,
            params=self.params,
            write=self.write,
        )
        return DetectorRun(findings=out.findings, summary=out.summary)
