"""Pages without an account: the public notice, the transparency report, sign in and out."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from mamori.governance import Governance
from mamori.governance.roles import VIEWS, Role
from mamori.report.transparency import (
    PeriodError,
    TransparencyReport,
    build_report,
    month_bounds,
    to_csv,
)
from mamori.schemas import DATASETS, DataKind
from mamori.web.auth import Accounts, Need, Viewer, csrf_form, safe_next
from mamori.web.render import render

router = APIRouter()
PublicPage = Annotated[Viewer, Depends(Need("public"))]
LoginPage = Annotated[Viewer, Depends(Need("login"))]
Home = Annotated[Viewer, Depends(Need("home"))]
Form = Annotated[FormData, Depends(csrf_form)]

CONSENT_MODE = {
    "none": ("Does not rest on consent", "同意に基づかない措置"),
    "opt-out": (
        "Blanket consent in the terms; you can opt out at any time",
        "約款による包括同意（いつでも停止できます）",
    ),
    "opt-in": ("Only with your explicit consent", "個別の同意がある場合のみ"),
}
BASIS_TEXT = {
    "consent": ("Consent", "同意"),
    "justified-act": ("Justified business act", "正当業務行為"),
    "emergency": ("Emergency", "緊急避難"),
    "self-defence": ("Self-defence", "正当防衛"),
    "not-infringement": (
        "Not an infringement (aggregated data)",
        "通信の秘密の侵害に当たらない（集約情報）",
    ),
}


def _gov(request: Request) -> Governance:
    gov: Governance = request.app.state.gov
    return gov


@router.get("/")
async def notice(request: Request, viewer: PublicPage) -> Response:
    """The public notice, generated from the measure catalogue (the "publicised" condition)."""
    gov = _gov(request)
    rows = []
    for m in gov.catalogue.values():
        touched: dict[str, list[tuple[str, str, str]]] = {}
        for ds, cols in {**m.reads, **m.writes}.items():
            schema = DATASETS[ds]
            have = touched.setdefault(ds, [])
            for c in cols:
                col = schema.column(c)
                if not any(h[0] == c for h in have):
                    have.append((c, col.doc, col.kind.value))
        rows.append(
            {
                "m": m,
                "enabled": gov.config.measure_enabled(m.id),
                "bases": [BASIS_TEXT[b.value] for b in m.legal_bases],
                "consent": CONSENT_MODE[m.consent],
                "datasets": touched,
                "comms": sorted(
                    {
                        c
                        for ds, cols in touched.items()
                        for c, _, k in cols
                        if k == DataKind.COMMUNICATIONS
                    }
                ),
                "retention": {
                    ds: gov.config.retention.days(ds) for ds in m.writes if ds != "audit"
                },
            }
        )
    return render(request, "notice.html", {"viewer": viewer, "rows": rows})


# A public page must not let every visitor make governance re-read the store (and grow the audit
# log): a month's report is rebuilt at most once a minute.
REPORT_TTL_S = 60.0


def _report(request: Request, period: str, actor: str) -> TransparencyReport:
    cache: dict[str, tuple[float, TransparencyReport]] = request.app.state.report_cache
    now = time.monotonic()
    hit = cache.get(period)
    if hit is not None and now - hit[0] < REPORT_TTL_S:
        return hit[1]
    report = build_report(_gov(request), period, actor=actor)
    cache[period] = (now, report)
    return report


def _period(request: Request) -> str:
    period = request.query_params.get("period")
    if not period:
        now = datetime.now(UTC)
        period = f"{now.year:04d}-{now.month:02d}"
    return period


@router.get("/transparency")
async def transparency(request: Request, viewer: PublicPage) -> Response:
    period = _period(request)
    try:
        month_bounds(period)
    except PeriodError as exc:
        return render(
            request,
            "error.html",
            {"viewer": viewer, "title": "Bad period", "message": str(exc)},
            400,
        )
    report = _report(request, period, viewer.actor)
    return render(request, "transparency.html", {"viewer": viewer, "r": report})


@router.get("/transparency.json")
async def transparency_json(request: Request, viewer: PublicPage) -> Response:
    period = _period(request)
    try:
        month_bounds(period)
    except PeriodError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    report = _report(request, period, viewer.actor)
    return Response(
        report.model_dump_json(indent=1),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="transparency-{period}.json"'},
    )


@router.get("/transparency.csv")
async def transparency_csv(request: Request, viewer: PublicPage) -> Response:
    period = _period(request)
    try:
        month_bounds(period)
    except PeriodError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    report = _report(request, period, viewer.actor)
    return Response(
        to_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="transparency-{period}.csv"'},
    )


@router.get("/login")
async def login_page(request: Request, viewer: LoginPage) -> Response:
    return render(
        request,
        "login.html",
        {"viewer": viewer, "next": safe_next(request.query_params.get("next")), "error": None},
    )


@router.post("/login")
async def login(request: Request, viewer: LoginPage, form: Form) -> Response:
    gov = _gov(request)
    name = str(form.get("name") or "")
    password = str(form.get("password") or "")
    accounts: Accounts = request.app.state.accounts
    account = accounts.verify(name, password)
    if account is None:
        gov.audit.append(actor="web:public", event="login-failed", detail={"account": name[:64]})
        return render(
            request,
            "login.html",
            {
                "viewer": viewer,
                "next": safe_next(form.get("next")),
                "error": "Wrong name or password.",
            },
            status=401,
        )
    request.session.clear()  # a new session (and CSRF token) at each login
    request.session["user"] = account.name
    gov.audit.append(actor=account.actor, event="login", detail={"role": account.role.value})
    return RedirectResponse(safe_next(form.get("next")), status_code=303)


@router.post("/logout")
async def logout(request: Request, viewer: LoginPage, form: Form) -> Response:
    if viewer.account is not None:
        _gov(request).audit.append(actor=viewer.actor, event="logout")
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/console")
async def home(request: Request, viewer: Home) -> Response:
    role = viewer.role
    assert role is not None
    gov = _gov(request)
    views = [v for v in VIEWS.values() if not v.public and role in v.roles and v.name != "home"]
    measures = sorted({m for v in views for m in v.measures}, key=lambda m: int(m[1:]))
    return render(
        request,
        "home.html",
        {
            "viewer": viewer,
            "views": views,
            "measures": [gov.catalogue[m] for m in measures],
            "role_name": Role(role).value,
        },
    )
