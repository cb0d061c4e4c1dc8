"""The console application: ``create_app(gov)`` returns a FastAPI app over any store.

Pages are rendered on the server from ``templates/``; the stylesheet is in ``static/`` and charts
are SVG drawn on the server, so the console works without any network beyond the ISP's own.

Other stages add their pages without editing this file::

    app = create_app(gov, extra_routers=[warning_router], mounts={"/taxii2": taxii_app})

``extra_routers`` are included as they are (their routes declare their own access: a router that
serves the public, like the warning page, needs no account); ``mounts`` are whole ASGI apps (the
TAXII server has its own authentication).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp

from mamori.governance import Governance
from mamori.governance.roles import VIEWS, View
from mamori.governance.tokens import secret_key
from mamori.web import grantcache
from mamori.web.auth import (
    Accounts,
    CsrfFailed,
    Forbidden,
    LoginRequired,
    Need,
    Viewer,
    current_account,
)
from mamori.web.render import WEB_DIR, render
from mamori.web.routes import admin, analyst, auditor, desk, mailbox, metrics, public, subscriber
from mamori.web.selfservice import CodeBook
from mamori.web.sessions import SessionRegistry
from mamori.web.throttle import Window
from mamori.web.warm import Warmer

__all__ = [
    "SESSION_COOKIE",
    "console_routes",
    "create_app",
    "create_full_app",
    "on_loopback",
    "serve",
]

SESSION_COOKIE = "mamori_session"
SESSION_MAX_AGE_S = 8 * 3600


def _session_key(gov: Governance) -> str:
    # Derived, so a session cookie can never pass as a consent token or the other way round.
    return hashlib.sha256(b"mamori-session:" + secret_key(gov.config).encode()).hexdigest()


def on_loopback(base_url: str) -> bool:
    """Whether ``base_url`` names this machine only (where a cookie never crosses a network)."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    gov: Governance,
    *,
    extra_routers: Sequence[APIRouter] = (),
    mounts: Mapping[str, ASGIApp] | None = None,
    secure_cookies: bool | None = None,
    warm: bool = False,
) -> FastAPI:
    """The console over ``gov``'s store. ``secure_cookies``: send the session only over HTTPS;
    by default ``web.secure_cookies``, else on unless ``web.base_url`` is on loopback. ``warm``:
    read the tables through governance in the background ahead of page views
    (:mod:`mamori.web.warm`; ``app.state.warmer``)."""
    web = gov.config.web
    if secure_cookies is None:
        secure_cookies = (
            web.secure_cookies if web.secure_cookies is not None else not on_loopback(web.base_url)
        )
    app = FastAPI(title="Mamori console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gov = gov
    app.state.accounts = Accounts(gov)
    app.state.sessions = SessionRegistry(gov.state_dir("web"), SESSION_MAX_AGE_S)
    app.state.login_by_account = Window(web.login_failures_per_minute, 60.0)
    app.state.login_by_source = Window(web.login_failures_per_minute, 60.0)
    app.state.consent_codes = CodeBook()
    app.state.report_cache = {}
    app.state.secure_cookies = secure_cookies
    app.add_middleware(
        SessionMiddleware,
        secret_key=_session_key(gov),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=secure_cookies,
    )

    @app.middleware("http")
    async def _one_at_a_time(request: Request, call_next: Any) -> Response:
        # governance serves one caller at a time; the warmer's thread is the other caller
        with grantcache.GOVERNANCE:
            response: Response = await call_next(request)
        return response

    app.state.warmer = Warmer(gov, web.warm_interval_s).start() if warm else None

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        # Everything is served from here: forbid other origins, framing and sniffing.
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        if request.url.scheme == "https":
            # behind TLS (directly, or a proxy uvicorn trusts for X-Forwarded-Proto)
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # a page, not JSON: people reach these by following or typing a link
        title = {404: "Page not found", 405: "Not allowed"}.get(exc.status_code, "Error")
        message = {
            404: f"There is no page at {request.url.path}.",
            405: "This page cannot be used that way.",
        }.get(exc.status_code, str(exc.detail))
        try:
            viewer = Viewer(current_account(request), VIEWS["public"])
        except Exception:  # the error page must render even when the session cannot be read
            viewer = Viewer(None, VIEWS["public"])
        response = render(
            request,
            "error.html",
            {"viewer": viewer, "title": title, "message": message, "code": exc.status_code},
            status=exc.status_code,
        )
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={exc.next_path}", status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return render(
            request,
            "error.html",
            {
                "title": "Not for your role",
                "message": f"The {exc.view.name} page is not open to the {exc.role.value} role.",
            },
            status=403,
        )

    @app.exception_handler(CsrfFailed)
    async def _csrf(request: Request, exc: CsrfFailed) -> Response:
        return render(
            request,
            "error.html",
            {
                "title": "Form expired",
                "message": "The form was not sent from this console (missing or wrong CSRF "
                "token). Reload the page and try again.",
            },
            status=403,
        )

    app.mount("/static", StaticFiles(directory=str(WEB_DIR / "static")), name="static")
    for module in (public, subscriber, analyst, desk, mailbox, auditor, admin, metrics):
        app.include_router(module.router)
    # ---- extra routers and mounted apps from other stages (warning page, TAXII) ----
    for router in extra_routers:
        app.include_router(router)
    for path, sub in (mounts or {}).items():
        app.mount(path, sub)
    return app


def create_full_app(
    gov: Governance, *, secure_cookies: bool | None = None, warm: bool = False
) -> FastAPI:
    """The console with the other stages' web parts: the warning page (M8) at ``/warning`` and
    the TAXII 2.1 server (M3) under ``/taxii2/``.

    The TAXII app runs synchronous handlers in worker threads, so it gets its own Governance
    (its own DuckDB connection) rather than sharing the console's."""
    from mamori.governance import Governance as _Governance
    from mamori.share.taxii import create_taxii_app
    from mamori.web.warning import warning_router

    return create_app(
        gov,
        extra_routers=[warning_router(gov)],
        mounts={"/taxii2": create_taxii_app(_Governance(gov.config))},
        secure_cookies=secure_cookies,
        warm=warm,
    )


def serve(gov: Governance, host: str, port: int, **uvicorn_options: Any) -> None:
    """Serve the full console until stopped (what ``mamori serve`` runs)."""
    import uvicorn

    uvicorn.run(create_full_app(gov, warm=True), host=host, port=port, **uvicorn_options)


def console_routes(app: FastAPI) -> list[tuple[str, str, View | None]]:
    """(path, method, view declared) for every route of the app, included routers unfolded."""
    out: list[tuple[str, str, View | None]] = []

    def walk(routes: Sequence[Any]) -> None:
        for r in routes:
            inner = getattr(r, "original_router", None)
            if inner is not None:
                walk(inner.routes)
                continue
            dependant = getattr(r, "dependant", None)
            if dependant is None:
                continue
            needs = [d.call.view for d in dependant.dependencies if isinstance(d.call, Need)]
            for method in sorted(getattr(r, "methods", ()) or ()):
                out.append((r.path, method, needs[0] if needs else None))

    walk(app.routes)
    return out
