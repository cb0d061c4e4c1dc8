"""Page rendering shared by the console's routes: the Jinja environment over ``templates/``, its
filters, where each view's page is, and ``render`` (what every page needs).

Its own module so the routes need not import the application that includes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from mamori.governance.roles import views_for
from mamori.web.auth import csrf_token

__all__ = ["VIEW_PATHS", "WEB_DIR", "render", "templates"]

WEB_DIR = Path(str(resources.files("mamori.web")))
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))


def _fmt_ts(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


def _fmt_int(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) else ""


# Where each view's page is (views without a page, like actions.decide, are left out of menus).
VIEW_PATHS = {
    "home": "/console",
    "findings": "/findings",
    "actions": "/actions",
    "alerts": "/alerts",
    "mailbox": "/mailbox",
    "search": "/search",
    "traffic": "/traffic",
    "audit": "/auditor",
    "retention": "/auditor/retention",
    "users": "/admin/users",
    "metrics": "/metrics",
}

templates.env.globals["view_paths"] = VIEW_PATHS
templates.env.filters["ts"] = _fmt_ts
templates.env.filters["num"] = _fmt_int


def render(
    request: Request, name: str, context: Mapping[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """Render a page with what every page needs: the viewer, the CSRF token, the menu."""
    viewer = (context or {}).get("viewer")
    role = viewer.role if viewer is not None else None
    ctx: dict[str, Any] = {
        "request": request,
        "csrf": csrf_token(request),
        "menu": views_for(role) if role is not None else [],
        "isp": request.app.state.gov.config.isp_name,
        **(context or {}),
    }
    return templates.TemplateResponse(request, name, ctx, status_code=status)
