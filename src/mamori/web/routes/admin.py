"""Account administration: list accounts, add one (its password is shown once)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from mamori.governance import Governance
from mamori.governance.roles import ROLES
from mamori.web.auth import AccountError, Accounts, Need, Viewer, csrf_form
from mamori.web.render import render

router = APIRouter()
Users = Annotated[Viewer, Depends(Need("users"))]
Form = Annotated[FormData, Depends(csrf_form)]


def _page(
    request: Request,
    viewer: Viewer,
    created: tuple[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    accounts: Accounts = request.app.state.accounts
    return render(
        request,
        "users.html",
        {
            "viewer": viewer,
            "accounts": accounts.list(),
            "roles": ROLES,
            "created": created,
            "error": error,
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
