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
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp

from mamori.governance import Governance
from mamori.governance.roles import View
from mamori.governance.tokens import secret_key
from mamori.web.auth import Accounts, CsrfFailed, Forbidden, LoginRequired, Need
from mamori.web.render import WEB_DIR, render
from mamori.web.routes import admin, analyst, auditor, desk, mailbox, metrics, public, subscriber

__all__ = ["SESSION_COOKIE", "console_routes", "create_app", "create_full_app", "serve"]

SESSION_COOKIE = "mamori_session"
SESSION_MAX_AGE_S = 8 * 3600


def _session_key(gov: Governance) -> str:
    # Derived, so a session cookie can never pass as a consent token or the other way round.
    return hashlib.sha256(b"mamori-session:" + secret_key(gov.config).encode()).hexdigest()


def create_app(
    gov: Governance,
    *,
    extra_routers: Sequence[APIRouter] = (),
    mounts: Mapping[str, ASGIApp] | None = None,
    secure_cookies: bool = False,
) -> FastAPI:
    """The console over ``gov``'s store. ``secure_cookies``: send the session only over HTTPS
    (set it when a TLS proxy sits in front)."""
    app = FastAPI(title="Mamori console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gov = gov
    app.state.accounts = Accounts(gov)
    app.state.report_cache = {}
    app.add_middleware(
        SessionMiddleware,
        secret_key=_session_key(gov),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=secure_cookies,
    )

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


def create_full_app(gov: Governance, *, secure_cookies: bool = False) -> FastAPI:
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
    )


def serve(gov: Governance, host: str, port: int, **uvicorn_options: Any) -> None:
    """Serve the full console until stopped (what ``mamori serve`` runs)."""
    import uvicorn

    uvicorn.run(create_full_app(gov), host=host, port=port, **uvicorn_options)


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
