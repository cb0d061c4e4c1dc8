"""The warning page (M8): what a consenting subscriber sees instead of a listed malware or phishing
site.

The resolver answers a listed name with the address of the host running this app (RPZ, see
``act/rpz.py``), so the browser arrives here with the listed site in its ``Host`` header. The page
says which list the site is on, why the ISP can show it (the subscriber's M8 setting, on unless
they switched it off), how to change that setting at any time, and offers to continue.

What is recorded is what M8 allows and no more: a count per day, category and event (shown,
continued) in the store's state directory, sealed into the audit log day by day
(``act/warning_tally.py``). No address, no site name, no time of a visit.

Two ways to serve it: ``warning_router(gov)`` for the console (``/warning?site=…``), and
``create_warning_app(config)``, a standalone app answering every path on every host name — the
one the RPZ warning host points at.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from mamori.act.rpz import WARNING_CATEGORIES, policy_names
from mamori.act.warning_tally import WarningCounts
from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.ingest.reputation import current_reputation

__all__ = ["SiteLookup", "WarningCounts", "create_warning_app", "warning_router"]

_HERE = Path(str(resources.files("mamori.web")))
templates = Jinja2Templates(directory=str(_HERE / "templates"))
_HOST_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9])?$")
LANGS = ("ja", "en")
# The page is self-contained: its stylesheet from its own host, no script, no inline style.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
REFRESH_S = 300.0


def _clean_host(raw: str | None) -> str | None:
    if not raw:
        return None
    host = raw.strip().lower().rstrip(".")
    if host.count(":") == 1:  # host:port
        host = host.split(":", 1)[0]
    return host if _HOST_RE.match(host) else None


def _clean_path(raw: str | None) -> str:
    path = raw or "/"
    if not path.startswith("/") or path.startswith("//") or len(path) > 2048:
        return "/"
    return path


class SiteLookup:
    """Listed malware and phishing names and their category, read under M8 and cached."""

    def __init__(self, gov: Governance, actor: str = "web:warning") -> None:
        self._gov = gov
        self._actor = actor
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}
        self._loaded = 0.0

    def _refresh(self) -> None:
        rep = current_reputation(self._gov, "M8", self._actor)
        now = datetime.now(UTC)
        names: dict[str, str] = {}
        # the same names the M8 zone lists (domains and hosts of listed URLs)
        for cat in WARNING_CATEGORIES:
            listed, _ = policy_names(rep, [cat], at=now, url_hosts=self._gov.config.dns.url_hosts)
            names.update(dict.fromkeys(listed.to_pylist(), cat))
        self._names = names
        self._loaded = time.monotonic()

    def category(self, host: str) -> str | None:
        """The category of ``host`` or of the closest listed parent domain."""
        with self._lock:
            if not self._loaded or time.monotonic() - self._loaded > REFRESH_S:
                self._refresh()
            labels = host.split(".")
            for i in range(len(labels) - 1):
                hit = self._names.get(".".join(labels[i:]))
                if hit:
                    return hit
        return None


def _language(request: Request, lang: str | None) -> str:
    if lang in LANGS:
        return lang
    accept = request.headers.get("accept-language", "")
    first = accept.split(",", 1)[0].strip().lower()
    if first.startswith("en"):
        return "en"
    return "ja"  # the ISP's subscribers read Japanese first


def _page(
    request: Request,
    config: MamoriConfig,
    lookup: SiteLookup,
    counts: WarningCounts,
    site: str | None,
    path: str,
    lang: str | None,
    *,
    action: str,
    css_url: str,
) -> Response:
    host = _clean_host(site)
    category = lookup.category(host) if host else None
    language = _language(request, lang)
    counts.add(category, "shown")
    base = config.web.base_url.rstrip("/")
    response = templates.TemplateResponse(
        request,
        f"warning_{language}.html",
        {
            "isp": config.isp_name,
            # Only a name on the lists in force is named: otherwise anyone could make the ISP's
            # page call any site (a bank, a rival) dangerous with a link. Unlisted: a neutral page.
            "site": host if category is not None else None,
            "path": _clean_path(path),
            "category": category,
            "consent_url": f"{base}/consent",
            "can_continue": config.dns.continue_url is not None,
            "continue_action": action,
            "css_url": css_url,
            "other_lang": "en" if language == "ja" else "ja",
        },
        status_code=200,
    )
    _headers(response)
    return response


def _headers(response: Response) -> None:
    # the page must not be cached as if it were the site, and nothing inline may run or style it
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"


def _stylesheet() -> Response:
    response = Response(
        (_HERE / "static" / "warning.css").read_bytes(), media_type="text/css; charset=utf-8"
    )
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _continue(
    config: MamoriConfig, counts: WarningCounts, lookup: SiteLookup, site: str, path: str
) -> Response:
    host = _clean_host(site)
    template = config.dns.continue_url
    category = lookup.category(host) if host is not None else None
    if host is None or template is None or category is None:
        # only to a listed site: the bypass must not become an open redirector for any name
        return HTMLResponse("Not available", status_code=404)
    counts.add(category, "continued")
    target = template.replace("{url}", quote(f"http://{host}{_clean_path(path)}", safe=""))
    return RedirectResponse(target, status_code=303)


def warning_router(gov: Governance, *, lookup: SiteLookup | None = None) -> APIRouter:
    """``GET /warning?site=HOST&path=/x&lang=ja|en`` and ``POST /warning/continue``."""
    config = gov.config
    sites = lookup or SiteLookup(gov)
    counts = WarningCounts(gov.state_dir("warning"), gov.audit)
    router = APIRouter()

    @router.get("/warning", response_class=HTMLResponse)
    def warning_page(
        request: Request, site: str | None = None, path: str = "/", lang: str | None = None
    ) -> Response:
        return _page(
            request,
            config,
            sites,
            counts,
            site,
            path,
            lang,
            action="/warning/continue",
            css_url="/warning.css",
        )

    @router.get("/warning.css")
    def warning_css() -> Response:
        return _stylesheet()

    @router.post("/warning/continue")
    def warning_continue(site: str = Form(...), path: str = Form("/")) -> Response:
        return _continue(config, counts, sites, site, path)

    return router


def create_warning_app(config: MamoriConfig, gov: Governance | None = None) -> FastAPI:
    """The app the warning host runs: every host name, every path shows the warning page for the
    site named in the ``Host`` header."""
    g = gov or Governance(config)
    sites = SiteLookup(g)
    counts = WarningCounts(g.state_dir("warning"), g.audit)
    app = FastAPI(title="Mamori warning page", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(warning_router(g, lookup=sites))

    @app.post("/.mamori/continue")
    def cont(site: str = Form(...), path: str = Form("/")) -> Response:
        return _continue(config, counts, sites, site, path)

    # under a path no site uses, since every other path of every host shows the page
    @app.get("/.mamori/warning.css")
    def css() -> Response:
        return _stylesheet()

    @app.get("/{rest:path}", response_class=HTMLResponse)
    def anything(request: Request, rest: str, lang: str | None = None) -> Response:
        return _page(
            request,
            config,
            sites,
            counts,
            request.headers.get("host"),
            "/" + rest,
            lang,
            action="/.mamori/continue",
            css_url="/.mamori/warning.css",
        )

    return app
