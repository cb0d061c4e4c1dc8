"""The subscriber's consent page, reached from the link in an alert e-mail, or from ``/consent``
with the contract id and a one-time code mailed to the contact address on file (or the ISP's
single sign-on), see :mod:`mamori.web.selfservice`.

No password: the link carries a signed, expiring token naming the subscriber
(:mod:`mamori.governance.tokens`). Each consent-based measure is explained in Japanese and English
with the current setting and the history; a change takes effect at once and is audited. The page
says that the terms are the same whatever the choice, and offers the two choices alike.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from mamori.governance import ConsentError, Governance
from mamori.governance.tokens import TokenError, consent_token, verify_consent_token
from mamori.web.auth import Need, Viewer, csrf_form
from mamori.web.render import render
from mamori.web.selfservice import CodeBook, request_code

router = APIRouter()
ConsentPage = Annotated[Viewer, Depends(Need("consent"))]
Form = Annotated[FormData, Depends(csrf_form)]
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")


def _subscriber(request: Request, token: str) -> str:
    gov: Governance = request.app.state.gov
    return verify_consent_token(gov.config, token)


def _refused(request: Request, viewer: Viewer, exc: TokenError) -> Response:
    return render(request, "consent_error.html", {"viewer": viewer, "reason": str(exc)}, 403)


def _nonce(request: Request) -> str:
    nonce = request.session.get("ss")
    if not isinstance(nonce, str):
        nonce = secrets.token_urlsafe(16)
        request.session["ss"] = nonce
    return nonce


def _signin(request: Request, viewer: Viewer, step: str, status: int = 200, **ctx: Any) -> Response:
    return render(request, "consent_signin.html", {"viewer": viewer, "step": step, **ctx}, status)


@router.get("/consent")
async def self_service(request: Request, viewer: ConsentPage) -> Response:
    """The settings page's front door for a subscriber without an alert e-mail at hand."""
    gov: Governance = request.app.state.gov
    header = gov.config.web.subscriber_sso_header
    sub = request.headers.get(header, "").strip() if header else ""
    if sub and _ID_RE.match(sub):
        # the ISP's single sign-on proxy vouches for the subscriber (see web.subscriber_sso_header)
        gov.audit.append(actor=f"subscriber:{sub}", event="consent-sso", detail={"subscriber": sub})
        return RedirectResponse(f"/consent/{consent_token(gov.config, sub)}", status_code=303)
    return _signin(request, viewer, "ask")


@router.post("/consent")
async def send_code(request: Request, viewer: ConsentPage, form: Form) -> Response:
    gov: Governance = request.app.state.gov
    sub = str(form.get("contract") or "").strip()
    if not _ID_RE.match(sub):
        return _signin(request, viewer, "ask", 400, error=True)
    source = request.client.host if request.client else "unknown"
    book: CodeBook = request.app.state.consent_codes
    request_code(gov, book, _nonce(request), sub, source)
    request.session["ss_sub"] = sub
    # the same answer whether or not the contract exists or a mail went out
    return _signin(request, viewer, "code")


@router.post("/consent/sign-in")
async def check_code(request: Request, viewer: ConsentPage, form: Form) -> Response:
    gov: Governance = request.app.state.gov
    sub = request.session.get("ss_sub")
    book: CodeBook = request.app.state.consent_codes
    code = str(form.get("code") or "")
    if not isinstance(sub, str) or not book.check(_nonce(request), sub, code):
        return _signin(request, viewer, "code", 401, wrong=True)
    request.session.pop("ss_sub", None)
    gov.audit.append(
        actor=f"subscriber:{sub}",
        event="consent-sign-in",
        detail={"subscriber": sub, "channel": "web"},
    )
    return RedirectResponse(f"/consent/{consent_token(gov.config, sub)}", status_code=303)


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
