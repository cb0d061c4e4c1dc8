"""Auditor pages: is the audit log intact, what was accessed under which measure, what was
refused, and is retention kept. Read-only; no communications data reaches these pages — audit
details are reduced to counts and reasons, and anything shaped like an address is masked."""

from __future__ import annotations

import json
import re
from collections import Counter
from ipaddress import ip_address
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.governance import Governance, retention_status
from mamori.governance.audit import AuditEntry
from mamori.web.auditindex import audit_index
from mamori.web.auth import Need, Viewer
from mamori.web.render import render, table_response
from mamori.web.specs import AUDIT_TABLE

router = APIRouter()
Audit = Annotated[Viewer, Depends(Need("audit"))]
Retention = Annotated[Viewer, Depends(Need("retention"))]

_CANDIDATE = re.compile(r"[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*")
# Detail keys an auditor sees; anything else is shown by name only.
_SHOWN = {
    "rows",
    "rows_offered",
    "rows_stored",
    "files",
    "partitions",
    "retention_days",
    "cutoff",
    "reason",
    "mode",
    "state",
    "channel",
    "subscriber",
    "consent_mode",
    "subscribers_out",
    "decision",
    "from",
    "to",
    "kind",
    "action_id",
    "view",
    "role",
    "source",
    "justification",
    "rule",
    "grace_days",
    "entries",
    "partner",
    "format",
    "created",
}
PAGE = 200


def mask_addresses(text: str) -> str:
    """``text`` with every IPv4/IPv6 address replaced by ``[address]``."""

    def repl(m: re.Match[str]) -> str:
        tok = m.group(0)
        core = tok.strip(".:")
        try:
            ip_address(core)
        except ValueError:
            return tok
        return tok.replace(core, "[address]")

    return _CANDIDATE.sub(repl, text)


def summarise(detail: str | None) -> str:
    if not detail:
        return ""
    try:
        obj: Any = json.loads(detail)
    except ValueError:
        return "(unreadable detail)"
    if not isinstance(obj, dict):
        return "(detail)"
    parts = []
    for k in sorted(obj):
        v = obj[k]
        if k in _SHOWN and isinstance(v, str | int | float | bool):
            parts.append(f"{k}={v}")
        elif isinstance(v, list | dict):
            parts.append(f"{k}=({len(v)} items)")
        else:
            parts.append(f"{k}=…")
    return mask_addresses(", ".join(parts))


def _row(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "ts": e.ts[:19].replace("T", " "),
        "actor": mask_addresses(e.actor),
        "event": e.event,
        "measure": e.measure or "",
        "basis": e.legal_basis or "",
        "dataset": e.dataset or "",
        "columns": e.columns or "",
        "case": mask_addresses(e.case_id or ""),
        "detail": summarise(e.detail),
    }


@router.get("/auditor")
async def overview(request: Request, viewer: Audit) -> Response:
    gov: Governance = request.app.state.gov
    verification = gov.audit.verify()
    by_measure: Counter[tuple[str, str, str]] = Counter()
    events: Counter[str] = Counter()
    refusals: list[dict[str, Any]] = []
    for e in gov.audit.entries():
        events[e.event] += 1
        if e.event in ("access", "write", "refused"):
            by_measure[(e.measure or "-", e.dataset or "-", e.event)] += 1
        if e.event == "refused":
            refusals.append(_row(e))
    measures = sorted(
        by_measure.items(),
        key=lambda kv: (int(kv[0][0][1:]) if kv[0][0][1:].isdigit() else 99, kv[0][1], kv[0][2]),
    )
    return render(
        request,
        "auditor.html",
        {
            "viewer": viewer,
            "verification": verification,
            "by_measure": measures,
            "events": sorted(events.items()),
            "refusals": list(reversed(refusals))[:PAGE],
            "names": {m.id: m.name for m in gov.catalogue.values()},
        },
    )


_MASKED: dict[str, str] = {}  # value → masked, kept across requests (the log only grows)


def _mask_once(v: str) -> str:
    hit = _MASKED.get(v)
    if hit is None:
        if len(_MASKED) > 1_000_000:
            _MASKED.clear()
        hit = _MASKED[v] = mask_addresses(v)
    return hit


def _masked(column: pa.ChunkedArray) -> pa.Array:
    """``column`` with addresses masked, computed once per distinct value."""
    values = pc.unique(column.combine_chunks())
    masked = pa.array(
        [None if v is None else _mask_once(v) for v in values.to_pylist()], pa.string()
    )
    return pc.take(masked, pc.index_in(column, value_set=values))


def _shown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        r["detail"] = summarise(r["detail"])
    return rows


@router.get("/auditor/log")
async def log(request: Request, viewer: Audit) -> Response:
    """Every entry, newest first, filterable by actor, event, measure, basis, dataset and date.
    Filters see what the page shows: addresses are masked before any filter runs, and details
    are not searchable (they could be probed for an address)."""
    gov: Governance = request.app.state.gov
    t = audit_index(gov).table()
    for name in ("actor", "case_id"):
        t = t.set_column(t.schema.get_field_index(name), name, _masked(t.column(name)))
    params = dict(request.query_params)
    if "event" in params and "f.event" not in params:  # the overview's links
        params["f.event"] = params.pop("event")
    if request.query_params.get("format") == "csv":
        # what leaves as a file has its addresses masked like the rest of these pages
        t = t.set_column(t.schema.get_field_index("detail"), "detail", _masked(t.column("detail")))
    return table_response(
        request,
        AUDIT_TABLE,
        t.drop_columns(["columns"]),
        "auditor_log.html",
        {"viewer": viewer},
        params=params,
        rows=_shown,
    )


@router.get("/auditor/retention")
async def retention(request: Request, viewer: Retention) -> Response:
    gov: Governance = request.app.state.gov
    purges = [_row(e) for e in gov.audit.entries() if e.event == "purge"]
    return render(
        request,
        "retention.html",
        {
            "viewer": viewer,
            "status": retention_status(gov),
            "purges": list(reversed(purges))[:PAGE],
        },
    )
