"""Abuse-desk pages: actions awaiting approval, in force or over (decided through the action
contract, :mod:`mamori.act.base`); alerts and their delivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from mamori.governance import AccessRefused, Governance
from mamori.governance.roles import VIEWS
from mamori.web import data
from mamori.web.auth import Need, Viewer, csrf_form
from mamori.web.render import render

router = APIRouter()
Actions = Annotated[Viewer, Depends(Need("actions"))]
Decide = Annotated[Viewer, Depends(Need("actions.decide"))]
Alerts = Annotated[Viewer, Depends(Need("alerts"))]
Form = Annotated[FormData, Depends(csrf_form)]
GROUPS = (
    ("proposed", "Proposed: awaiting approval"),
    ("approved", "Approved: awaiting its back end"),
    ("applied", "Applied: in force"),
    ("expired", "Expired"),
    ("ended", "Ended"),
    ("rejected", "Rejected"),
)


@router.get("/actions")
async def actions(request: Request, viewer: Actions) -> Response:
    gov: Governance = request.app.state.gov
    read = data.actions(gov, viewer.view.measures, viewer.actor)
    groups = [
        (state, title, [r for r in read.rows if r["effective_state"] == state])
        for state, title in GROUPS
    ]
    may_decide = VIEWS["actions.decide"].allows(viewer.role)
    return render(
        request,
        "actions.html",
        {
            "viewer": viewer,
            "groups": groups,
            "refused": read.refused,
            "may_decide": may_decide,
            "message": request.query_params.get("msg"),
        },
    )


@router.post("/actions/{action_id}/{decision}")
async def decide(
    request: Request, action_id: str, decision: str, viewer: Decide, form: Form
) -> Response:
    gov: Governance = request.app.state.gov
    try:
        data.decide_action(gov, viewer.view.measures, action_id, decision, viewer.actor)
    except (data.ActionDecisionError, AccessRefused) as exc:
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Not done", "message": str(exc)},
            status=409,
        )
    return RedirectResponse(f"/actions?msg={decision}+{action_id}", status_code=303)


@router.get("/alerts")
async def alerts(request: Request, viewer: Alerts) -> Response:
    gov: Governance = request.app.state.gov
    read = data.alerts(gov, viewer.view.measures, viewer.actor)
    states: dict[str, int] = {}
    for r in read.rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    return render(
        request,
        "alerts.html",
        {"viewer": viewer, "rows": read.rows, "states": states, "refused": read.refused},
    )
