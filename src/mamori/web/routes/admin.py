"""Account administration (admins) and one's own account (everyone): add, disable, re-enable,
unlock, reset a password, change a role; change one's password, set up a second factor, choose
the language. A password reset, a disabled account and a changed password end the account's
sessions on the server at once (:mod:`mamori.web.sessions`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from mamori.governance import Governance
from mamori.governance.roles import ROLES, Role
from mamori.web.auth import AccountError, Accounts, Need, Viewer, csrf_form
from mamori.web.render import render
from mamori.web.sessions import SessionRegistry
from mamori.web.totp import new_secret, provisioning_uri, totp_ok

router = APIRouter()
Users = Annotated[Viewer, Depends(Need("users"))]
Own = Annotated[Viewer, Depends(Need("account"))]
Form = Annotated[FormData, Depends(csrf_form)]
OPS = ("disable", "enable", "unlock", "reset", "role")


def _page(
    request: Request,
    viewer: Viewer,
    created: tuple[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
    done: str | None = None,
) -> Response:
    accounts: Accounts = request.app.state.accounts
    sessions: SessionRegistry = request.app.state.sessions
    listed = accounts.list()
    return render(
        request,
        "users.html",
        {
            "viewer": viewer,
            "accounts": listed,
            "open_sessions": {a.name: sessions.count(a.name) for a in listed},
            "roles": ROLES,
            "created": created,
            "error": error,
            "done": done,
            "now": datetime.now(UTC),
        },
        status=status,
    )


@router.get("/admin/users")
async def users(request: Request, viewer: Users) -> Response:
    return _page(request, viewer)


@router.post("/admin/users")
async def add_user(request: Request, viewer: Users, form: Form) -> Response:
    accounts: Accounts = request.app.state.accounts
    gov: Governance = request.app.state.gov
    name = str(form.get("name") or "")
    role = str(form.get("role") or "")
    try:
        password = accounts.add(name, role)
    except AccountError as exc:
        return _page(request, viewer, error=str(exc), status=400)
    gov.audit.append(actor=viewer.actor, event="account", detail={"created": name, "role": role})
    return _page(request, viewer, created=(name, password))


@router.post("/admin/users/{name}/{op}")
async def change_user(request: Request, name: str, op: str, viewer: Users, form: Form) -> Response:
    accounts: Accounts = request.app.state.accounts
    sessions: SessionRegistry = request.app.state.sessions
    gov: Governance = request.app.state.gov
    if op not in OPS:
        return _page(request, viewer, error=f"unknown change {op!r}", status=400)
    if viewer.account is not None and name == viewer.account.name and op in ("disable", "role"):
        return _page(request, viewer, error="not on your own account", status=400)
    created = None
    try:
        if op == "disable":
            accounts.update(name, disabled=True)
            sessions.end_all(name)
        elif op == "enable":
            accounts.update(name, disabled=False)
        elif op == "unlock":
            accounts.update(name, locked_until=None, failures=0)
        elif op == "reset":
            created = (name, accounts.set_password(name))
            sessions.end_all(name)
        else:
            role = str(form.get("role") or "")
            if role not in {r.value for r in Role}:
                raise AccountError(f"unknown role {role!r}")
            accounts.update(name, role=role)
            sessions.end_all(name)
    except AccountError as exc:
        return _page(request, viewer, error=str(exc), status=400)
    detail: dict[str, str] = {"account": name, "change": op}
    if op == "role":
        detail["role"] = str(form.get("role"))
    gov.audit.append(actor=viewer.actor, event="account", detail=detail)
    return _page(request, viewer, created=created, done=f"{op} {name}")


# ------------------------------------------------------------------ one's own account


def _own(request: Request, viewer: Viewer, status: int = 200, **ctx: object) -> Response:
    return render(request, "account.html", {"viewer": viewer, **ctx}, status=status)


@router.get("/account")
async def account(request: Request, viewer: Own) -> Response:
    return _own(request, viewer)


@router.post("/account/password")
async def change_password(request: Request, viewer: Own, form: Form) -> Response:
    accounts: Accounts = request.app.state.accounts
    sessions: SessionRegistry = request.app.state.sessions
    gov: Governance = request.app.state.gov
    assert viewer.account is not None
    name = viewer.account.name
    if accounts.verify(name, str(form.get("current") or "")) is None:
        return _own(request, viewer, 400, error="The current password is wrong.")
    try:
        accounts.set_password(name, str(form.get("new") or ""))
    except AccountError as exc:
        return _own(request, viewer, 400, error=str(exc))
    # every session of the account ends, this one too: sign in again with the new password
    sessions.end_all(name)
    request.session.clear()
    gov.audit.append(actor=viewer.actor, event="account", detail={"change": "password"})
    return RedirectResponse("/login", status_code=303)


@router.post("/account/totp")
async def second_factor(request: Request, viewer: Own, form: Form) -> Response:
    accounts: Accounts = request.app.state.accounts
    gov: Governance = request.app.state.gov
    assert viewer.account is not None
    acc = viewer.account
    step = str(form.get("step") or "")
    code = str(form.get("code") or "")
    if step == "start":
        secret = new_secret()
        request.session["totp_pending"] = secret
        uri = provisioning_uri(secret, acc.name, gov.config.isp_name)
        return _own(request, viewer, pending=secret, uri=uri)
    if step == "confirm":
        pending = request.session.get("totp_pending")
        if not isinstance(pending, str) or not totp_ok(pending, code):
            return _own(request, viewer, 400, error="That code does not match; start again.")
        accounts.update(acc.name, totp_secret=pending)
        request.session.pop("totp_pending", None)
        gov.audit.append(actor=viewer.actor, event="account", detail={"change": "totp-on"})
        return _own(request, viewer, done="The second factor is on.")
    if step == "off":
        if not acc.totp_secret or not totp_ok(acc.totp_secret, code):
            return _own(request, viewer, 400, error="Give a current code to switch it off.")
        accounts.update(acc.name, totp_secret=None)
        gov.audit.append(actor=viewer.actor, event="account", detail={"change": "totp-off"})
        return _own(request, viewer, done="The second factor is off.")
    return _own(request, viewer, 400, error="unknown step")


@router.post("/account/language")
async def set_language(request: Request, viewer: Own, form: Form) -> Response:
    accounts: Accounts = request.app.state.accounts
    assert viewer.account is not None
    lang = str(form.get("language") or "")
    accounts.update(viewer.account.name, language=lang if lang in ("ja", "en") else None)
    request.session.pop("lang", None)
    return RedirectResponse("/account", status_code=303)
