"""The subscriber's consent page, reached from the link in an alert e-mail.

No password: the link carries a signed, expiring token naming the subscriber
(:mod:`mamori.governance.tokens`). Each consent-based measure is explained in Japanese and English
with the current setting and the history; a change takes effect at once and is audited. The page
says that the terms are the same whatever the choice, and offers the two choices alike.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from mamori.governance import ConsentError, Governance
from mamori.governance.tokens import TokenError, verify_consent_token
from mamori.web.auth import Need, Viewer, csrf_form
from mamori.web.render import render

router = APIRouter()
ConsentPage = Annotated[Viewer, Depends(Need("consent"))]
Form = Annotated[FormData, Depends(csrf_form)]


def _subscriber(request: Request, token: str) -> str:
    gov: Governance = request.app.state.gov
    return verify_consent_token(gov.config, token)


def _refused(request: Request, viewer: Viewer, exc: TokenError) -> Response:
    return render(request, "consent_error.html", {"viewer": viewer, "reason": str(exc)}, 403)


@router.get("/consent/{token}")
async def consent_page(request: Request, token: str, viewer: ConsentPage) -> Response:
    try:
        sub = _subscriber(request, token)
    except TokenError as exc:
        return _refused(request, viewer, exc)
    gov: Governance = request.app.state.gov
    actor = f"subscriber:{sub}"
    history = gov.consent.history(sub, actor=actor)
    current = {c.measure: c for c in gov.consent.current_from(history)}
    measures = [
        {"m": m, "state": current[m.id]} for m in gov.catalogue.consent_based() if m.id in current
    ]
    changed = request.query_params.get("changed")
    return render(
        request,
        "consent.html",
        {
            "viewer": viewer,
            "token": token,
            "subscriber": sub,
            "measures": measures,
            "history": list(reversed(history)),
            "names": {m.id: m for m in gov.catalogue.values()},
            "changed": changed if changed in current else None,
        },
    )


@router.post("/consent/{token}")
async def consent_change(request: Request, token: str, viewer: ConsentPage, form: Form) -> Response:
    try:
        sub = _subscriber(request, token)
    except TokenError as exc:
        return _refused(request, viewer, exc)
    gov: Governance = request.app.state.gov
    measure = str(form.get("measure") or "")
    state = form.get("state")
    if state not in ("in", "out"):
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Bad request", "message": "state must be in or out"},
            400,
        )
    try:
        gov.consent.set(
            sub,
            measure,
            state == "in",
            actor=f"subscriber:{sub}",
            channel="web",
            note="consent page",
        )
    except ConsentError as exc:
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Bad request", "message": str(exc)},
            400,
        )
    return RedirectResponse(f"/consent/{token}?changed={measure}", status_code=303)
