"""Abuse-desk and operator pages: actions (a table, each action with what it changes, the
approval queue, decisions through the action contract :mod:`mamori.act.base`), alerts (one row
per alert, its current state) and cases (status, assignee, notes and timeline)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from mamori.act.casebook import STATUSES, CaseBook
from mamori.governance import AccessRefused, Governance
from mamori.governance.roles import (
    NETWORK_KINDS,
    VIEWS,
    may_decide,
)
from mamori.web import data
from mamori.web.auditindex import proposers
from mamori.web.auth import Need, Viewer, csrf_form
from mamori.web.maildir import read_mailbox
from mamori.web.proposals import preview
from mamori.web.render import render, table_response, to_local
from mamori.web.specs import ACTIONS_TABLE, ALERTS_TABLE, CASES_TABLE

router = APIRouter()
Actions = Annotated[Viewer, Depends(Need("actions"))]
Approvals = Annotated[Viewer, Depends(Need("approvals"))]
Decide = Annotated[Viewer, Depends(Need("actions.decide"))]
Alerts = Annotated[Viewer, Depends(Need("alerts"))]
Cases = Annotated[Viewer, Depends(Need("cases"))]
CaseEdit = Annotated[Viewer, Depends(Need("cases.edit"))]
Form = Annotated[FormData, Depends(csrf_form)]


def _gov(request: Request) -> Governance:
    gov: Governance = request.app.state.gov
    return gov


def _not_done(request: Request, viewer: Viewer, message: str, status: int = 409) -> Response:
    return render(
        request,
        "error.html",
        {"viewer": viewer, "title": "Not done", "message": message},
        status=status,
    )


def _decisions(row: dict[str, Any], viewer: Viewer, proposer: str | None) -> list[str]:
    """The steps this viewer may take on this action now."""
    if not VIEWS["actions.decide"].allows(viewer.role) or not may_decide(
        viewer.role, str(row["kind"])
    ):
        return []
    status = row["status"]
    if status == "proposed":
        return ["reject"] if proposer == viewer.actor else ["approve", "reject"]
    if status == "approved":
        # approved but not in force yet: it may still be taken back
        return ["reject"] if row["kind"] == "rpz" else ["apply", "reject"]
    if status == "applied":
        return ["end"]
    return []


@router.get("/actions")
async def actions(request: Request, viewer: Actions) -> Response:
    gov = _gov(request)
    loaded = data.actions_table(gov, viewer.view.measures, viewer.actor)
    props = proposers(gov)
    response = table_response(
        request,
        ACTIONS_TABLE,
        loaded.table,
        "actions.html",
        {
            "viewer": viewer,
            "refused": loaded.refused,
            "message": request.query_params.get("msg"),
            "proposers": props,
            "decisions": lambda r: _decisions(r, viewer, props.get(r["action_id"])),
        },
    )
    return response


@router.get("/approvals")
async def approvals(request: Request, viewer: Approvals) -> Response:
    """What waits for a decision this viewer may take (never their own proposals), with what
    each would change."""
    gov = _gov(request)
    t = data.actions_table(gov, viewer.view.measures, viewer.actor).table
    flags = data.flagged_actions(gov)
    waiting = pc.is_in(t.column("status"), value_set=pa.array(["proposed", "approved"]))
    # and what is in force although its finding was found false: flagged for its deciders
    flagged = pc.and_(
        pc.equal(t.column("status"), "applied"),
        pc.is_in(t.column("action_id"), value_set=pa.array(list(flags), pa.string())),
    )
    t = t.filter(pc.or_(waiting, flagged))
    props = proposers(gov)
    rows = []
    for r in t.sort_by([("created", "ascending")]).to_pylist():
        r["flag"] = flags.get(r["action_id"])
        r["proposer"] = props.get(r["action_id"])
        r["preview"] = preview(r, gov.config)
        r["decisions"] = _decisions(r, viewer, r["proposer"])
        r["network"] = r["kind"] in NETWORK_KINDS
        rows.append(r)
    mine = [r for r in rows if r["decisions"]]
    others = [r for r in rows if not r["decisions"]]
    return render(
        request,
        "approvals.html",
        {
            "viewer": viewer,
            "mine": mine,
            "others": others,
            "message": request.query_params.get("msg"),
        },
    )


@router.get("/actions/{action_id}")
async def action(request: Request, action_id: str, viewer: Actions) -> Response:
    gov = _gov(request)
    t = data.actions_table(gov, viewer.view.measures, viewer.actor).table
    t = t.filter(pc.equal(t.column("action_id"), action_id))
    if t.num_rows == 0:
        return _not_done(request, viewer, f"No action {action_id}.", 404)
    row = t.to_pylist()[0]
    props = proposers(gov)
    history = _history(gov, action_id)
    return render(
        request,
        "action.html",
        {
            "viewer": viewer,
            "a": row,
            "preview": preview(row, gov.config),
            "proposer": props.get(action_id),
            "decisions": _decisions(row, viewer, props.get(action_id)),
            "history": history,
        },
    )


def _history(gov: Governance, action_id: str) -> list[dict[str, Any]]:
    """Each step of the action as the audit log recorded it: when, who, which step."""
    from mamori.web.auditindex import audit_index

    t = audit_index(gov).table()
    t = t.filter(
        pc.and_(
            pc.equal(t.column("dataset"), "actions"),
            pc.fill_null(pc.match_substring(t.column("detail"), f'"{action_id}"'), False),
        )
    )
    out = []
    import json

    for r in t.to_pylist():
        try:
            d = json.loads(r["detail"] or "{}")
        except ValueError:
            d = {}
        out.append({"ts": r["ts"], "actor": r["actor"], "step": d.get("step", r["event"])})
    return out


@router.post("/actions/{action_id}/{decision}")
async def decide(
    request: Request, action_id: str, decision: str, viewer: Decide, form: Form
) -> Response:
    gov = _gov(request)
    try:
        data.decide_action(
            gov, viewer.view.measures, action_id, decision, viewer.actor, viewer.role
        )
    except data.DecisionForbidden as exc:
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Not for your role", "message": str(exc)},
            status=403,
        )
    except (data.ActionDecisionError, AccessRefused) as exc:
        return _not_done(request, viewer, str(exc))
    back = str(form.get("back") or "/actions")
    back = back if back in ("/actions", "/approvals") else "/actions"
    return RedirectResponse(f"{back}?msg={decision}+{action_id}", status_code=303)


@router.get("/alerts")
async def alerts(request: Request, viewer: Alerts) -> Response:
    gov = _gov(request)
    loaded = data.alerts_table(gov, viewer.view.measures, viewer.actor)
    states = (
        pc.value_counts(loaded.table.column("state")).to_pylist() if loaded.table.num_rows else []
    )
    return table_response(
        request,
        ALERTS_TABLE,
        loaded.table,
        "alerts.html",
        {
            "viewer": viewer,
            "refused": loaded.refused,
            "states": {s["values"]: s["counts"] for s in states},
            "consent_filtered": loaded.consent_filtered,
            "may_cases": VIEWS["cases"].allows(viewer.role),
        },
    )


@router.get("/cases")
async def cases(request: Request, viewer: Cases) -> Response:
    gov = _gov(request)
    loaded = data.cases_table(gov, viewer.view.measures, viewer.actor)
    return table_response(
        request,
        CASES_TABLE,
        loaded.table,
        "cases.html",
        {"viewer": viewer, "refused": loaded.refused},
    )


def _timeline(
    gov: Governance, viewer: Viewer, case: dict[str, Any], book_entries: list[Any]
) -> list[tuple[datetime, str, str]]:
    """(when, what, detail) from every source the desk may read, oldest first."""
    items: list[tuple[datetime, str, str]] = []
    measure = str(case["measure"])
    if not case["withheld"]:
        sub = str(case["subscriber_id"])
        matches = _read_one(gov, measure, "matches", viewer.actor)
        alerts = data.alerts_table(gov, [measure], viewer.actor).table
        versions = _read_one(gov, measure, "notifications", viewer.actor)
        ours = pc.equal(versions.column("case_id"), case["case_id"])
        if case.get("notification_id"):
            ours = pc.or_kleene(
                ours, pc.equal(versions.column("notification_id"), case["notification_id"])
            )
        versions = versions.filter(pc.fill_null(ours, False))
        nids = pc.unique(versions.column("notification_id"))
        if matches.num_rows:
            m = matches.filter(pc.is_in(matches.column("notification_id"), value_set=nids))
            if m.num_rows:
                findings = sorted({f for f in m.column("finding_id").to_pylist() if f})
                ts = m.column("ts")
                items.append(
                    (
                        pc.min(ts).as_py(),
                        "finding",
                        f"{len(findings)} finding(s): " + ", ".join(findings[:5]),
                    )
                )
                items.append(
                    (
                        pc.min(ts).as_py(),
                        "match",
                        f"{m.num_rows} matched communication(s) until "
                        + to_local(pc.max(ts).as_py(), gov.config.web.time_zone),
                    )
                )
        items.append((case["opened"], "attribution", f"attributed to {sub}; case opened"))
        for v in versions.sort_by([("updated", "ascending")]).to_pylist():
            when = v["updated"] or v["created"]
            text = f"alert {v['notification_id']}: {v['state']}"
            if v.get("last_error"):
                text += f" ({v['last_error']})"
            items.append((when, "mail" if v["state"] != "bounced" else "bounce", text))
        del alerts
        try:
            history = gov.consent.history(sub, actor=viewer.actor)
        except Exception:
            history = []
        for h in history:
            if h.measure == measure:
                items.append(
                    (h.changed, "consent", f"{h.measure} {h.state} ({h.channel}, {h.actor})")
                )
    for e in book_entries:
        if e.step == "opened":
            continue
        if e.step == "status":
            what = "closure" if e.status == "resolved" else "status"
            items.append((e.ts, what, f"{e.status} — {e.actor}"))
        elif e.step == "assign":
            items.append((e.ts, "assign", f"{e.assignee or 'nobody'} — {e.actor}"))
        elif e.step == "note" and not case["withheld"]:
            items.append((e.ts, "note", f"{e.actor}: {e.note}"))
    return sorted(
        ((t if t.tzinfo else t.replace(tzinfo=UTC), w, d) for t, w, d in items if t is not None),
        key=lambda x: x[0],
    )


def _read_one(gov: Governance, measure: str, dataset: str, actor: str) -> pa.Table:
    tables, _ = data._read(gov, [measure], dataset, actor)
    return tables[0] if tables else pa.table({"notification_id": pa.array([], pa.string())})


@router.get("/cases/{case_id}")
async def case(request: Request, case_id: str, viewer: Cases) -> Response:
    gov = _gov(request)
    t = data.cases_table(gov, viewer.view.measures, viewer.actor).table
    t = t.filter(pc.equal(t.column("case_id"), case_id))
    if t.num_rows == 0:
        return _not_done(request, viewer, f"No case {case_id}.", 404)
    row = t.to_pylist()[0]
    desk = CaseBook(gov).get(case_id)
    entries = desk.entries if desk else []
    mails = []
    directory = gov.config.web.mailbox_dir
    if not row["withheld"] and directory is not None and directory.is_dir():
        mails = read_mailbox(directory).for_case(case_id)
    return render(
        request,
        "case.html",
        {
            "viewer": viewer,
            "c": row,
            "timeline": _timeline(gov, viewer, row, entries),
            "notes": [] if row["withheld"] else [e for e in entries if e.step == "note"],
            "statuses": STATUSES,
            "may_edit": VIEWS["cases.edit"].allows(viewer.role),
            "mails": mails,
            "message": request.query_params.get("msg"),
        },
    )


@router.post("/cases/{case_id}")
async def case_edit(request: Request, case_id: str, viewer: CaseEdit, form: Form) -> Response:
    gov = _gov(request)
    t = data.cases_table(gov, viewer.view.measures, viewer.actor).table
    t = t.filter(pc.equal(t.column("case_id"), case_id))
    if t.num_rows == 0:
        return _not_done(request, viewer, f"No case {case_id}.", 404)
    row = t.to_pylist()[0]
    status = str(form.get("status") or "") or None
    assignee = form.get("assignee")
    note = str(form.get("note") or "").strip() or None
    if status is not None and status not in STATUSES:
        return _not_done(request, viewer, f"status: one of {', '.join(STATUSES)}", 400)
    if status == row["status"]:
        status = None
    new_assignee = None
    if isinstance(assignee, str) and assignee.strip() != (row["assignee"] or ""):
        new_assignee = assignee.strip()[:64]
    CaseBook(gov).record(
        case_id,
        row["measure"],
        viewer.actor,
        status=status,
        assignee=new_assignee,
        note=note,
        opened=row["opened"],
    )
    return RedirectResponse(f"/cases/{case_id}?msg=saved", status_code=303)
