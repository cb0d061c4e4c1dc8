"""``simulate()``: build the world, generate traffic, export it, write every file and the truth.

``truth.json`` keys (times ISO 8601 UTC):

* ``window``: the simulated period; ``endpoints``: every hostile server (ip, port, proto,
  family, role = cc / loader / infection / phishing, from, until, domain, contacts,
  first_contact, last_contact, and the evidence ceiling: ``sampled_hosts`` (distinct internal
  addresses in the routers' sampled exports with the endpoint), ``sampled_subscribers``,
  ``sampled_records``); ``world_parameters``: what a randomised world drew from its seed;
  ``benign_traps``: periodic benign services (NTP, update checks,
  messaging, IoT camera cloud) with how many subscribers use each;
* ``infected``: subscriber, family, infected_at and every address (ip, CGNAT port block, inside
  ip, from, until) it held in the window; ``vulnerable``: subscriber, ip, port, observed_at;
* ``iot_botnet``, ``pc_botnet``, ``stealth_botnet``: the families' parameters;
  ``ddos``: victims, window, attacking bots, ``spoofing`` lines (subscriber, region);
  ``reflection``: reflectors inside customer ranges (static or dynamic), victims, window;
  ``smtp``: brute-force sources and window, compromised accounts (AUTH ID, abuse sources);
  ``phishing``: URLs and visits;
* ``feeds``: unlisted and late-listed endpoints, wrong entries (benign services listed);
* ``flows``: generated flows per label (before sampling); ``routers``: per exporter the flows and
  packets it saw, the records/samples it exported, their packets and bytes, and counts by label.
"""

from __future__ import annotations

import csv
import json
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from mamori.sim import alloc_logs, sources
from mamori.sim._net import F64, I64, ip, iso, ntoa
from mamori.sim.config import ScenarioConfig, scenario_config
from mamori.sim.exporters import assign_routers, encode_flow_packets, encode_sflow, sample
from mamori.sim.flows import LABEL_NAMES, LABELS, FlowTable
from mamori.sim.national import generate_sampled
from mamori.sim.pcap import COLLECTOR, write_udp_frames
from mamori.sim.randomise import randomise
from mamori.sim.traffic import Traffic, generate
from mamori.sim.world import CONTRACT_NAMES, EXTERNAL_NETS, MAIL_SERVER, POOLS, RESOLVERS, World
from mamori.sim.world import build_world as _build_world


class RouterSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    protocol: str
    sampling: int
    exporter_ip: str
    source_id: int
    port: int
    #: flows and packets the router saw (before sampling) and flow records it exported (after)
    flows_seen: int
    packets_seen: int
    records: int
    #: packet and byte counts carried by the exported records (sampled, not scaled up)
    packets: int
    octets: int
    export_packets: int
    #: sFlow only: flow samples (one per sampled packet)
    samples: int = 0
    #: exported records (sFlow: samples) per ground-truth label
    by_label: dict[str, int] = {}


class SimSummary(BaseModel):
    """What ``simulate`` wrote."""

    model_config = ConfigDict(frozen=True)

    scenario: str
    seed: int
    subscribers: int
    start: str
    end: str
    out: str
    #: logical name → path (relative to ``out``)
    files: dict[str, str]
    counts: dict[str, int]
    routers: list[RouterSummary]


#: measures that rest on (blanket) consent, and the share of subscribers opting out of each
OPT_OUT_MEASURES = ("M4", "M5", "M7", "M8")
OPT_OUT_SHARE = 0.03


def _write_subscribers(world: World, path: Path) -> None:
    t0 = world.t0
    with path.open("w", encoding="ascii", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["subscriber_id", "contract", "user_name", "email", "region", "contract_since",
                    "lang", "opted_out"])  # fmt: skip
        # the contract terms carry a blanket consent; a few subscribers opted out of measures
        rng = np.random.default_rng([world.seed, 8])
        lang = np.where(rng.random(world.n) < 0.1, "en", "ja")
        opt = rng.random((world.n, len(OPT_OUT_MEASURES))) < OPT_OUT_SHARE
        for sub in range(world.n):
            w.writerow(
                [
                    sub,
                    CONTRACT_NAMES[int(world.contract[sub])],
                    world.user_name(sub),
                    world.email(sub),
                    int(world.region[sub]),
                    iso(t0 - 86400.0 * int(world.contract_start_days[sub]))[:10],
                    str(lang[sub]),
                    ";".join(m for m, o in zip(OPT_OUT_MEASURES, opt[sub], strict=True) if o),
                ]
            )


def _address_plan(world: World) -> dict[str, Any]:
    return {
        "pools": [
            {
                "name": k,
                "prefix": v,
                "kind": "static"
                if k in ("static", "infra")
                else "cgnat-inside"
                if k == "cgnat-inside"
                else "cgnat-public"
                if k == "cgnat-public"
                else "dynamic",
            }
            for k, v in POOLS.items()
        ],
        "external": [f"{n}/24" for n in EXTERNAL_NETS],
        "resolvers": [ntoa(r) for r in RESOLVERS],
        "mail_submission": ntoa(MAIL_SERVER),
        "cgnat_block_size": world.cfg.cgnat_block_size,
    }


def _victim_rates(truth: dict[str, Any], flows: FlowTable) -> None:
    """Each DDoS and reflection victim's ``victim_pps``: the attack packets it was sent (before
    sampling; bots offline send none) over the attack's span, as generated."""
    labels = [LABELS[x] for x in ("ddos", "spoofed", "reflection-response")]
    attack = np.isin(flows.label, labels)
    for part in ("ddos", "reflection"):
        t = truth.get(part)
        if not t or not t.get("victims"):
            continue
        span = max(_epoch(t["until"]) - _epoch(t["from"]), 1.0)
        t["victim_pps"] = {
            v: round(float(flows.pkts[attack & (flows.dst == int(IPv4Address(v)))].sum()) / span, 1)
            for v in t["victims"]
        }


def _epoch(iso_text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()


def _spool(path: Path, packets: list[tuple[float, bytes]]) -> tuple[F64, I64]:
    """Write one router's payloads back to back; return their capture times and lengths."""
    # packets leaving in the same second are spaced 1 µs apart, so each router's capture
    # times strictly increase and a stable sort by time keeps every router's packet order
    sec = np.array([t for t, _ in packets], np.float64)
    pos = np.arange(sec.size)
    first = np.r_[0, np.flatnonzero(np.diff(sec)) + 1] if sec.size else np.zeros(0, np.int64)
    start = np.repeat(first, np.diff(np.r_[first, sec.size]))
    ts = sec + np.minimum(pos - start, 999_999) * 1e-6
    lengths = np.array([len(p) for _, p in packets], np.int64)
    with path.open("wb") as fh:
        fh.write(b"".join(p for _, p in packets))
    return ts, lengths


def _export(
    world: World,
    flows: FlowTable,
    seed: int,
    pcap: Path,
    presampled: bool = False,
    watch: set[tuple[int, int]] | None = None,
) -> tuple[int, list[RouterSummary], dict[tuple[int, int], tuple[set[int], set[int], int]]]:
    """Sample and encode per router, spool each router's packets to disk, merge them by time.

    Only one router's packets are in memory at a time; the merge streams. ``presampled``: the
    flows already are the sampled records (the sampled generator), each router only encodes.
    Returns, for each (ip, port) of ``watch``, what the exports show of it: the distinct
    internal addresses and subscribers in its sampled records, and the records — the evidence
    ceiling of an endpoint (nobody can find what nobody sampled).
    """
    seen_of: dict[tuple[int, int], tuple[set[int], set[int], int]] = {}
    keys = np.array(sorted(watch or ()), np.int64).reshape(-1, 2)
    key_code = keys[:, 0] * 65536 + keys[:, 1]
    cfg = world.cfg
    router, in_if, out_if = assign_routers(flows, cfg.routers, world.region)
    routes = [(r.exporter_ip, 50000 + r.source_id, COLLECTOR, r.port) for r in cfg.routers]
    spools: list[Path] = []
    times: list[F64] = []
    lengths: list[I64] = []
    summaries: list[RouterSummary] = []
    for ri, r in enumerate(cfg.routers):
        sel = np.flatnonzero(router == ri)
        rng = np.random.default_rng([seed, 10, ri])
        seen = flows.take(sel)
        if presampled:
            sampled, kept_mask = seen, np.ones(len(seen), bool)
        else:
            sampled, kept_mask = sample(seen, r.sampling, rng)
        _ceiling(sampled, key_code, seen_of)
        ii, oi = in_if[sel][kept_mask], out_if[sel][kept_mask]
        samples = 0
        if r.protocol == "sflow5":
            pk, samples = encode_sflow(sampled, r, ii, oi, world.t0, rng)
        else:
            pk = encode_flow_packets(sampled, r, ii, oi, world.t0)
        spools.append(pcap.parent / f".spool-{ri}")
        ts, ln = _spool(spools[-1], pk)
        times.append(ts)
        lengths.append(ln)
        summaries.append(
            RouterSummary(
                name=r.name,
                protocol=r.protocol,
                sampling=r.sampling,
                exporter_ip=r.exporter_ip,
                source_id=r.source_id,
                port=r.port,
                flows_seen=len(seen),
                packets_seen=int(seen.pkts.sum()),
                by_label=_label_counts(sampled, weights=r.protocol == "sflow5"),
                records=0 if r.protocol == "sflow5" else len(sampled),
                packets=int(sampled.pkts.sum()),
                octets=int(sampled.octets.sum()),
                export_packets=len(pk),
                samples=samples,
            )
        )
    del pk, sampled, seen
    # time order across routers (stable: at equal times, router order), then stream the frames,
    # reading each router's spool sequentially
    all_ts = np.concatenate(times)
    rid = np.concatenate([np.full(t.size, i, np.int64) for i, t in enumerate(times)])
    order = np.argsort(all_ts, kind="stable")
    handles = [sp.open("rb") for sp in spools]
    try:
        n = write_udp_frames(
            pcap,
            (
                (float(all_ts[k]), routes[r], handles[r].read(int(ln)))
                for k, r, ln in zip(
                    order.tolist(),
                    rid[order].tolist(),
                    np.concatenate(lengths)[order].tolist(),
                    strict=True,
                )
            ),
        )
    finally:
        for h in handles:
            h.close()
        for sp in spools:
            sp.unlink()
    return n, summaries, seen_of


def _ceiling(
    sampled: FlowTable,
    key_code: I64,
    seen_of: dict[tuple[int, int], tuple[set[int], set[int], int]],
) -> None:
    """Add the sampled records of the watched endpoints (either direction) to ``seen_of``."""
    if key_code.size == 0 or len(sampled) == 0:
        return
    out = sampled.inbound == 0
    ext = np.where(out, sampled.dst, sampled.src).astype(np.int64)
    eport = np.where(out, sampled.dport, sampled.sport).astype(np.int64)
    host = np.where(out, sampled.src, sampled.dst).astype(np.int64)
    code = ext * 65536 + eport
    hit = np.flatnonzero(np.isin(code, key_code))
    for c in np.unique(code[hit]).tolist():
        rows = hit[code[hit] == c]
        k = (c // 65536, c % 65536)
        hosts, subs, n = seen_of.get(k, (set(), set(), 0))
        hosts.update(host[rows].tolist())
        subs.update(sampled.sub[rows].tolist())
        seen_of[k] = (hosts, subs, n + int(rows.size))


def _label_counts(flows: FlowTable, weights: bool = False) -> dict[str, int]:
    """Rows per label, or packets per label with ``weights``."""
    counts = np.bincount(
        flows.label, weights=flows.pkts if weights else None, minlength=len(LABEL_NAMES)
    )
    return {LABEL_NAMES[i]: int(c) for i, c in enumerate(counts.tolist()) if c}


def _truth(
    world: World, traffic: Traffic, routers: list[RouterSummary], feeds_truth: dict[str, Any]
) -> dict[str, Any]:
    t = dict(traffic.truth)
    _victim_rates(t, traffic.flows)
    return {
        "scenario": world.cfg.name,
        "seed": world.seed,
        "window": {"from": iso(world.t0), "until": iso(world.t1)},
        "endpoints": [
            {k: v for k, v in e.items() if not k.startswith("_")} for e in traffic.endpoints
        ],
        **t,
        "feeds": feeds_truth,
        "flows": {"generated": len(traffic.flows), "by_label": _label_counts(traffic.flows)},
        "routers": [r.model_dump() for r in routers],
    }


def simulate(
    scenario: str | ScenarioConfig, out: Path, seed: int = 0, **overrides: Any
) -> SimSummary:
    """Write a simulated ISP's exports, logs, feeds and ground truth under ``out``.

    ``scenario`` is a name from :data:`mamori.sim.SCENARIOS` (``overrides`` replace its top-level
    fields, e.g. ``subscribers=5000``) or a ready :class:`ScenarioConfig`. Same seed, same bytes.
    """
    cfg = (
        scenario if isinstance(scenario, ScenarioConfig) else scenario_config(scenario, **overrides)
    )
    out = Path(out)
    for d in ("world", "alloc", "flows", "dns", "mail", "feeds", "reports"):
        (out / d).mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Any] = {}
    if cfg.randomise:
        cfg, drawn = randomise(cfg, seed)
    world = _build_world(cfg, seed)
    traffic = generate_sampled(world, seed) if cfg.generator == "sampled" else generate(world, seed)
    if drawn:
        traffic.truth.setdefault("world_parameters", {})["scenario"] = drawn
    files: dict[str, str] = {}
    counts: dict[str, int] = {
        "subscribers": world.n,
        "sessions": int(world.sessions.sub.size),
        "flows_generated": len(traffic.flows),
    }

    def f(key: str, rel: str) -> Path:
        files[key] = rel
        return out / rel

    _write_subscribers(world, f("subscribers", "world/subscribers.csv"))
    f("address_plan", "world/address_plan.json").write_text(
        json.dumps(_address_plan(world), indent=2) + "\n", encoding="ascii"
    )
    counts["radius_records"] = alloc_logs.write_radius_detail(
        world, f("radius_detail", "alloc/radius-detail")
    )
    counts["kea_rows"] = alloc_logs.write_kea_leases(
        world, f("kea_leases", "alloc/kea-leases4.csv")
    )
    counts["cgnat_lines"] = alloc_logs.write_cgnat_syslog(
        world, f("cgnat_syslog", "alloc/cgnat.log")
    )

    watch = {(ip(e["ip"]), int(e["port"])) for e in traffic.endpoints}
    counts["export_packets"], routers, seen_of = _export(
        world,
        traffic.flows,
        seed,
        f("pcap", "flows/exports.pcap"),
        presampled=cfg.generator == "sampled",
        watch=watch,
    )
    for e in traffic.endpoints:
        hosts, subs, n = seen_of.get((ip(e["ip"]), int(e["port"])), (set(), set(), 0))
        e["sampled_hosts"] = len(hosts)
        e["sampled_subscribers"] = len(subs - {-1})
        e["sampled_records"] = n
    counts["flow_records"] = sum(r.records for r in routers)
    counts["sflow_samples"] = sum(r.samples for r in routers)

    src_counts, feeds_truth = sources.write_all(world, traffic, out, f)
    counts.update(src_counts)
    truth = _truth(world, traffic, routers, feeds_truth)
    f("truth", "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    summary = SimSummary(
        scenario=cfg.name,
        seed=seed,
        subscribers=world.n,
        start=iso(world.t0),
        end=iso(world.t1),
        out=str(out),
        files=files,
        counts=counts,
        routers=routers,
    )
    (out / "summary.json").write_text(
        summary.model_copy(update={"out": "."}).model_dump_json(indent=1) + "\n", encoding="utf-8"
    )
    return summary
