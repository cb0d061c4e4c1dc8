"""Analyst pages: findings (a table, and each finding with its evidence, review and the actions
one can propose from it), search, and the traffic overview (M14)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from mamori.detect.reviews import VERDICTS, Reviews
from mamori.governance import AccessRefused, Governance
from mamori.governance.roles import (
    ACTION_MEASURES,
    ALERT_MEASURES,
    CASE_MEASURES,
    FINDING_MEASURES,
    VIEWS,
)
from mamori.ingest.reputation.allowlist import add_to_allowlist
from mamori.web import charts, data
from mamori.web.auth import Need, Viewer, csrf_form
from mamori.web.evidence import summarise
from mamori.web.i18n import language, translator
from mamori.web.proposals import (
    EXPIRY_HOURS,
    PROPOSALS,
    SHARE_KINDS,
    ProposalError,
    propose_from_finding,
)
from mamori.web.render import render, table_response
from mamori.web.specs import ACTIONS_TABLE, ALERTS_TABLE, CASES_TABLE, FINDINGS_TABLE
from mamori.web.tables import TableQuery, page

router = APIRouter()
Findings = Annotated[Viewer, Depends(Need("findings"))]
Review = Annotated[Viewer, Depends(Need("findings.review"))]
Propose = Annotated[Viewer, Depends(Need("actions.propose"))]
Search = Annotated[Viewer, Depends(Need("search"))]
Traffic = Annotated[Viewer, Depends(Need("traffic"))]
Form = Annotated[FormData, Depends(csrf_form)]
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 58: "icmpv6", 132: "sctp"}


def _gov(request: Request) -> Governance:
    gov: Governance = request.app.state.gov
    return gov


def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    if "kind" in params and "f.kind" not in params:  # the old ?kind= links
        params["f.kind"] = params.pop("kind")
    return params


@router.get("/findings")
async def findings(request: Request, viewer: Findings) -> Response:
    gov = _gov(request)
    loaded = data.findings_table(gov, viewer.view.measures, viewer.actor)
    bases = {m.id: [b.value for b in m.legal_bases] for m in gov.catalogue.values()}
    return table_response(
        request,
        FINDINGS_TABLE,
        loaded.table,
        "findings.html",
        {"viewer": viewer, "refused": loaded.refused, "bases": bases, "summarise": summarise},
        params=_params(request),
    )


def _finding(gov: Governance, viewer: Viewer, finding_id: str) -> dict[str, Any] | None:
    t = data.findings_table(gov, FINDING_MEASURES, viewer.actor).table
    t = t.filter(pc.equal(t.column("finding_id"), finding_id))
    rows = t.sort_by([("detected", "descending")]).slice(0, 1).to_pylist()
    return rows[0] if rows else None


@router.get("/findings/{finding_id}")
async def finding(request: Request, finding_id: str, viewer: Findings) -> Response:
    gov = _gov(request)
    f = _finding(gov, viewer, finding_id)
    if f is None:
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Page not found", "message": f"No finding {finding_id}."},
            status=404,
        )
    acts = data.actions_table(gov, ACTION_MEASURES, viewer.actor).table
    acts = acts.filter(pc.fill_null(pc.equal(acts.column("finding_id"), finding_id), False))
    review = Reviews(gov).latest().get(finding_id)
    m = gov.catalogue.get(f["measure"])
    zone = gov.config.web.time_zone
    seen = data.contacts(gov, f, viewer.actor)
    pictures = []
    if seen is not None:
        pictures = [
            charts.dots(
                seen.hosts,
                title=f"Contacts with the endpoint, per inside host ({seen.flows} flows)",
                since=seen.since,
                until=seen.until,
                zone=zone,
            ),
            charts.histogram(seen.intervals_s, title="Seconds between a host's contacts"),
        ]
    return render(
        request,
        "finding.html",
        {
            "viewer": viewer,
            "f": f,
            "sections": summarise(f.get("evidence")),
            "bases": [b.value for b in m.legal_bases] if m else [],
            "review": review,
            "actions": acts.sort_by([("created", "descending")]).to_pylist(),
            "may_review": VIEWS["findings.review"].allows(viewer.role),
            "may_propose": VIEWS["actions.propose"].allows(viewer.role),
            # sharing is for C&C endpoints only
            "proposals": {
                k: p for k, p in PROPOSALS.items() if k != "share" or f.get("kind") in SHARE_KINDS
            },
            "expiry_hours": EXPIRY_HOURS,
            "verdicts": VERDICTS,
            "message": request.query_params.get("msg"),
            "pictures": pictures,
        },
    )


@router.post("/findings/{finding_id}/review")
async def review(request: Request, finding_id: str, viewer: Review, form: Form) -> Response:
    gov = _gov(request)
    verdict = str(form.get("verdict") or "")
    f = _finding(gov, viewer, finding_id)
    if f is None or verdict not in VERDICTS:
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Not done", "message": "No such finding or verdict."},
            status=409,
        )
    Reviews(gov).record(finding_id, f["measure"], verdict, viewer.actor)
    msg = verdict
    if verdict == "false-positive":
        # a false positive is never matched, blocked or redirected again, and what was proposed
        # or put in force because of it is taken back now, not at its expiry
        if f.get("ip"):
            add_to_allowlist(gov, str(f["ip"]), viewer.actor, finding_id=finding_id)
        out = data.end_for_false_positive(
            gov, ACTION_MEASURES, finding_id, viewer.actor, viewer.role
        )
        msg += f" ({len(out.taken_back)} action(s) taken back"
        if out.flagged:
            # network actions are the operators' to end: left in place, flagged for them
            msg += f"; {len(out.flagged)} left for an operator to end"
        msg += ")"
    return RedirectResponse(f"/findings/{finding_id}?{urlencode({'msg': msg})}", status_code=303)


@router.post("/findings/{finding_id}/propose")
async def propose(request: Request, finding_id: str, viewer: Propose, form: Form) -> Response:
    gov = _gov(request)
    f = _finding(gov, viewer, finding_id)
    try:
        if f is None:
            raise ProposalError(f"no finding {finding_id}")
        hours = int(str(form.get("hours") or "168"))
        action = propose_from_finding(gov, f, str(form.get("what") or ""), hours, viewer.actor)
    except (ProposalError, ValueError, AccessRefused) as exc:
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Not done", "message": str(exc)},
            status=409,
        )
    return RedirectResponse(f"/approvals?msg=proposed+{action.action_id}", status_code=303)


def _looks_like_address(q: str) -> bool:
    try:
        ipaddress.ip_network(q, strict=False)
        return True
    except ValueError:
        return (
            len(q) >= 3
            and all(c in "0123456789abcdefABCDEF.:" for c in q)
            and ("." in q or ":" in q)
        )


SEARCH_SHOWN = 20


@router.get("/search")
async def search(request: Request, viewer: Search) -> Response:
    """By endpoint (an address, a CIDR prefix or the start of an address: findings about it,
    actions on it) or by text (a case, an alert, an action or its target)."""
    gov = _gov(request)
    q = (request.query_params.get("q") or "").strip()[:128]
    zone = gov.config.web.time_zone
    result: dict[str, Any] = {}
    links: dict[str, str] = {}
    error = None
    if q and _looks_like_address(q):
        params = {"net": q}
        fq = TableQuery.parse(FINDINGS_TABLE, params, zone)
        result["findings"] = page(
            data.findings_table(gov, FINDING_MEASURES, viewer.actor).table, fq
        )
        links["findings"] = "/findings" + fq.link()
        acts = data.actions_table(gov, ACTION_MEASURES, viewer.actor).table
        acts = acts.filter(_targets_in(acts.column("target"), q))
        aq = TableQuery.parse(ACTIONS_TABLE, {}, zone)
        result["actions"] = page(acts, aq)
    elif len(q) >= 3:
        for name, spec, loader, measures in (
            ("cases", CASES_TABLE, data.cases_table, CASE_MEASURES),
            ("alerts", ALERTS_TABLE, data.alerts_table, ALERT_MEASURES),
            ("actions", ACTIONS_TABLE, data.actions_table, ACTION_MEASURES),
        ):
            view = VIEWS[name]
            if not view.allows(viewer.role):
                continue
            tq = TableQuery.parse(spec, {"q": q}, zone)
            result[name] = page(loader(gov, measures, viewer.actor).table, tq)
            links[name] = f"/{name}" + tq.link()
    elif q:
        error = "Give an address or prefix (10.16.0.0/24, 10.16.), or at least 3 characters of a case, alert or target."
    for tp in result.values():
        tp.rows = tp.rows[:SEARCH_SHOWN]
    return render(
        request,
        "search.html",
        {"viewer": viewer, "q": q, "result": result, "links": links, "error": error},
    )


def _targets_in(targets: pa.ChunkedArray, q: str) -> Any:
    """Actions whose target (an address or prefix, maybe with a port) lies in ``q``."""
    try:
        net = ipaddress.ip_network(q, strict=False)
    except ValueError:
        return pc.fill_null(pc.starts_with(targets, q), False)
    hits = []
    for v in pc.unique(targets.combine_chunks()).to_pylist():
        if v is None:
            continue
        try:
            t = ipaddress.ip_network(str(v).split()[0], strict=False)
        except ValueError:
            continue
        if t.version == net.version and (t.subnet_of(net) or net.subnet_of(t)):  # type: ignore[arg-type]
            hits.append(v)
    return pc.fill_null(pc.is_in(targets, value_set=pa.array(hits, pa.string())), False)


@router.get("/traffic")
async def traffic(request: Request, viewer: Traffic) -> Response:
    gov = _gov(request)
    zone = gov.config.web.time_zone
    params = request.query_params
    drill, errors = data.TrafficFilter.parse(params)
    rng = params.get("range", "72h")
    span = data.RANGES.get(rng)
    since = until = None
    tz = ZoneInfo(zone)
    for key in ("since", "until"):
        text = params.get(key, "").strip()
        if not text:
            continue
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            errors.append(f"{key}: not a date (YYYY-MM-DD)")
            continue
        when = when if when.tzinfo else when.replace(tzinfo=tz)
        if key == "since":
            since = when
        else:
            until = when + timedelta(days=1) if len(text) == 10 else when
    if since is not None or until is not None:
        rng = "custom"
    try:
        t = data.traffic(gov, viewer.actor, since=since, until=until, span=span, drill=drill)
    except AccessRefused as exc:
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Refused", "message": exc.reason},
            status=403,
        )
    step = timedelta(hours=1)
    volume = charts.timeseries(
        [(h if h.tzinfo else h.replace(tzinfo=UTC), b) for h, b, _ in t.by_hour],
        title="Bytes per hour (scaled by sampling)",
        since=t.since,
        until=t.until,
        step=step,
        unit="B",
        zone=zone,
        marks=t.marks,
    )
    ports = charts.hbars(
        [(f"{PROTOCOLS.get(p, str(p))}/{port}", b) for p, port, b in t.top_ports],
        title="Top destination ports by bytes",
        unit="B",
    )
    exporters = charts.hbars(
        [(e, b) for e, b, _ in t.exporters], title="Bytes by exporter (router)", unit="B"
    )
    return render(
        request,
        "traffic.html",
        {
            "viewer": viewer,
            "t": t,
            "volume": volume,
            "ports": ports,
            "exporters": exporters,
            "drill": drill,
            "errors": errors,
            "range": rng,
            "ranges": [*data.RANGES, "all"],
            "protocols": PROTOCOLS,
            "params": dict(params),
        },
    )


Attacks = Annotated[Viewer, Depends(Need("attacks"))]


def _when_param(text: str, tz: ZoneInfo, errors: list[str], key: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        errors.append(f"{key}: not a date and time (YYYY-MM-DD HH:MM)")
        return None
    return when if when.tzinfo else when.replace(tzinfo=tz)


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _net(text: Any) -> Net | None:
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        return None


def _rule_net(target: str) -> Net | None:
    """The destination a rule's target names: a prefix (RTBH), ``dst=`` (FlowSpec)."""
    for part in target.split(";"):
        if part.startswith("dst="):
            return _net(part[4:])
    return _net(target)


def _overlap(a: Net, b: Net) -> bool:
    return a.version == b.version and (a.subnet_of(b) or b.subnet_of(a))  # type: ignore[arg-type]


@router.get("/attacks")
async def attacks(request: Request, viewer: Attacks) -> Response:
    """Attacks and mitigations on one true time axis (issue 16 §7): per attacked prefix, the
    packets sent to it, the attacks' spans and the rules' time in force."""
    gov = _gov(request)
    zone = gov.config.web.time_zone
    tz = ZoneInfo(zone)
    params = request.query_params
    errors: list[str] = []
    rng = params.get("range", "24h")
    span = data.ATTACK_RANGES.get(rng, timedelta(hours=24))
    since = _when_param(params.get("since", ""), tz, errors, "since")
    until = _when_param(params.get("until", ""), tz, errors, "until")
    if since is not None and until is None:
        until = since + span
    t = data.attacks(gov, viewer.actor, since=since, until=until, span=span)
    now = datetime.now(UTC)
    # per chart, what concerns its prefix: the attacks on it and the rules whose destination
    # overlaps it (a rule without one, such as the standing reflection filter, shows everywhere)
    drawn: list[tuple[Net | None, tuple[datetime, datetime, str, str] | None, Any]] = []
    for f in t.findings:
        begin = f.get("first_seen") or f["detected"]
        what = f"{f['kind']} {f.get('method') or ''} on {f.get('ip')}"
        drawn.append(
            (
                _net(f.get("ip")),
                (begin, f["detected"], f"attack: {what}", "attack"),
                (f["detected"], f"detected: {what}", "attack"),
            )
        )
    rules_of: dict[str, list[dict[str, Any]]] = {}
    for r in t.rules:
        rules_of.setdefault(str(r.get("finding_id")), []).append(r)
        label = f"{r['kind']} {r['target']} ({r['status']})"
        if r.get("start") is not None:
            band = (r["start"], r.get("end") or min(r["expires"], now), label, "rule")
        elif r["status"] in ("proposed", "approved"):
            band = (r["created"], min(r["expires"], now), label, "waiting")
        else:
            continue
        drawn.append((_rule_net(str(r["target"])), band, (band[0], label, "action")))
    charts_out = []
    for prefix, points in t.series:
        net = ipaddress.ip_network(prefix)
        mine = [(b, m) for n, b, m in drawn if n is None or _overlap(n, net)]
        charts_out.append(
            (
                prefix,
                charts.timeseries(
                    points,
                    title=f"Packets to {prefix} per {int(t.step.total_seconds() // 60)} min",
                    since=t.since,
                    until=t.until,
                    step=t.step,
                    unit="pkt",
                    zone=zone,
                    marks=[m for _, m in mine],
                    bands=[b for b, _ in mine if b is not None],
                ),
            )
        )
    return render(
        request,
        "attacks.html",
        {
            "viewer": viewer,
            "t": t,
            "charts": charts_out,
            "rules_of": rules_of,
            "errors": errors,
            "range": rng if since is None else "custom",
            "ranges": list(data.ATTACK_RANGES),
            "params": dict(params),
            "may_findings": VIEWS["findings"].allows(viewer.role),
        },
    )


Trends = Annotated[Viewer, Depends(Need("trends"))]


@router.get("/trends")
async def trends(request: Request, viewer: Trends) -> Response:
    """Findings per day (read under M14: kind and time only), alerts sent and opt-outs per day
    (counted from the audit log: no subscriber, no address)."""
    gov = _gov(request)
    zone = gov.config.web.time_zone
    days = {"30d": 30, "90d": 90, "365d": 365}.get(request.query_params.get("range", "90d"), 90)
    per_day = data.trends(gov, viewer.actor)
    words = translator(language(request, viewer.account.language if viewer.account else None))
    charts_out = []
    for key, title in (
        ("findings", "Findings per day"),
        ("alerts", "Alerts sent per day"),
        ("opt_outs", "Opt-outs per day"),
    ):
        series = per_day[key]
        last = max((d for d, _ in series), default=None)
        until = (last or datetime.now(UTC)) + timedelta(days=1)
        charts_out.append(
            charts.timeseries(
                series,
                title=words(title),
                since=until - timedelta(days=days),
                until=until,
                step=timedelta(days=1),
                zone=zone,
            )
        )
    return render(
        request,
        "trends.html",
        {
            "viewer": viewer,
            "charts": charts_out,
            "range": f"{days}d",
            "totals": {k: sum(v for _, v in s) for k, s in per_day.items()},
        },
    )
