"""Analyst pages: findings with their evidence, search, and the traffic overview (M14)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.governance import AccessRefused, Governance
from mamori.governance.roles import ACTION_MEASURES, ALERT_MEASURES, FINDING_MEASURES
from mamori.web import charts, data
from mamori.web.auth import Need, Viewer
from mamori.web.render import render

router = APIRouter()
Findings = Annotated[Viewer, Depends(Need("findings"))]
Search = Annotated[Viewer, Depends(Need("search"))]
Traffic = Annotated[Viewer, Depends(Need("traffic"))]
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 58: "icmpv6", 132: "sctp"}


@router.get("/findings")
async def findings(request: Request, viewer: Findings) -> Response:
    gov: Governance = request.app.state.gov
    kind = request.query_params.get("kind") or None
    everything = data.findings(gov, viewer.view.measures, viewer.actor)
    kinds = data.finding_kinds(everything.rows)
    rows = [r for r in everything.rows if kind is None or r["kind"] == kind]
    return render(
        request,
        "findings.html",
        {
            "viewer": viewer,
            "rows": rows,
            "kinds": kinds,
            "kind": kind,
            "refused": everything.refused,
            "truncated": everything.truncated,
        },
    )


@router.get("/search")
async def search(request: Request, viewer: Search) -> Response:
    """By endpoint (an IP address: findings about it, actions on it) or by case/alert id."""
    gov: Governance = request.app.state.gov
    q = (request.query_params.get("q") or "").strip()[:128]
    result: dict[str, data.Read] = {}
    error = None
    if q:
        try:
            ip = str(ipaddress.ip_address(q))
        except ValueError:
            ip = None
        if ip is not None:
            result["findings"] = data.findings(gov, FINDING_MEASURES, viewer.actor, ip=ip)
            result["actions"] = data.actions(gov, ACTION_MEASURES, viewer.actor, target=ip)
        elif len(q) >= 3:
            result["actions"] = data.actions(gov, ACTION_MEASURES, viewer.actor, target=q)
            result["alerts"] = data.alerts(gov, ALERT_MEASURES, viewer.actor, case=q)
        else:
            error = "Give an IP address, or at least 3 characters of a case, alert or target."
    return render(
        request, "search.html", {"viewer": viewer, "q": q, "result": result, "error": error}
    )


@router.get("/traffic")
async def traffic(request: Request, viewer: Traffic) -> Response:
    gov: Governance = request.app.state.gov
    try:
        t = data.traffic(gov, viewer.actor)
    except AccessRefused as exc:
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Refused", "message": exc.reason},
            status=403,
        )
    volume = charts.bars(
        [(h.strftime("%m-%d %H:00"), b) for h, b, _ in t.by_hour],
        title="Bytes per hour (scaled by sampling)",
        unit="B",
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
        {"viewer": viewer, "t": t, "volume": volume, "ports": ports, "exporters": exporters},
    )
