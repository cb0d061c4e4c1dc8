"""Page rendering shared by the console's routes: the Jinja environment over ``templates/``, its
filters, where each view's page is, and ``render`` (what every page needs).

Its own module so the routes need not import the application that includes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context

from mamori.governance.roles import views_for
from mamori.web.auth import csrf_token
from mamori.web.i18n import language, translator
from mamori.web.tables import TableQuery, TableSpec, csv_bytes, page

__all__ = ["VIEW_PATHS", "WEB_DIR", "render", "table_response", "templates", "to_local"]

WEB_DIR = Path(str(resources.files("mamori.web")))
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def to_local(value: datetime, zone: str) -> str:
    """``value`` in the ISP's time zone, with the zone named (``2026-11-02 21:28 JST``)."""
    if value.tzinfo is None:  # stored times are UTC
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(_zone(zone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or zone}"


@pass_context
def _fmt_ts(ctx: Any, value: Any) -> str:
    if isinstance(value, datetime):
        zone = ctx.get("time_zone") or "UTC"
        return to_local(value, zone)
    return "" if value is None else str(value)


def _fmt_int(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) else ""


# Where each view's page is (views without a page, like actions.decide, are left out of menus).
VIEW_PATHS = {
    "home": "/console",
    "findings": "/findings",
    "actions": "/actions",
    "approvals": "/approvals",
    "alerts": "/alerts",
    "cases": "/cases",
    "mailbox": "/mailbox",
    "search": "/search",
    "traffic": "/traffic",
    "attacks": "/attacks",
    "trends": "/trends",
    "audit": "/auditor",
    "retention": "/auditor/retention",
    "users": "/admin/users",
    "metrics": "/metrics",
    "account": "/account",
}
# The menu's words for each view (translated like the rest of the chrome).
VIEW_LABELS = {name: name.capitalize() for name in VIEW_PATHS}

templates.env.globals["view_paths"] = VIEW_PATHS
templates.env.globals["view_labels"] = VIEW_LABELS
templates.env.filters["ts"] = _fmt_ts
templates.env.filters["num"] = _fmt_int


def render(
    request: Request, name: str, context: Mapping[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """Render a page with what every page needs: the viewer, the CSRF token, the menu."""
    viewer = (context or {}).get("viewer")
    role = viewer.role if viewer is not None else None
    account = viewer.account if viewer is not None else None
    lang = language(request, account.language if account is not None else None)
    ctx: dict[str, Any] = {
        "request": request,
        "lang": lang,
        "_": translator(lang),
        "csrf": csrf_token(request),
        "menu": views_for(role) if role is not None else [],
        "isp": request.app.state.gov.config.isp_name,
        "time_zone": request.app.state.gov.config.web.time_zone,
        **(context or {}),
    }
    return templates.TemplateResponse(request, name, ctx, status_code=status)


def table_response(
    request: Request,
    spec: TableSpec,
    table: pa.Table,
    template: str,
    context: Mapping[str, Any],
    *,
    params: Mapping[str, str] | None = None,
    rows: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> Response:
    """A table page (``?format=csv``: every matching row as CSV) — one way for every list.
    ``rows``: what to make of the page's rows before they are shown."""
    zone = request.app.state.gov.config.web.time_zone
    query = TableQuery.parse(spec, params or request.query_params, zone)
    if request.query_params.get("format") == "csv":
        return Response(
            csv_bytes(table, query),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{spec.name}.csv"'},
        )
    tp = page(table, query)
    if rows is not None:
        tp.rows = rows(tp.rows)
    return render(request, template, {**context, "tp": tp})
