"""Security of the console over real HTTP: login walls, role checks on every route, CSRF on every
POST, consent tokens that are altered or expired refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.governance.roles import VIEWS, Role
from mamori.governance.tokens import _SALT_CONSENT, consent_token, secret_key
from mamori.web.app import SESSION_COOKIE, console_routes
from tests.web.conftest import ACCOUNTS, PASSWORD, csrf_of, login

pytestmark = pytest.mark.slow  # walks every route of the console for every role

# Pages anyone may open; everything else needs an account (the consent page needs its token).
PUBLIC = {"/", "/transparency", "/transparency.json", "/transparency.csv", "/login"}


def _client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)


@pytest.fixture(scope="module")
def clients(base_url: str) -> Iterator[dict[Role, httpx.Client]]:
    out = {}
    for role, name in ACCOUNTS.items():
        c = _client(base_url)
        login(c, name)
        out[role] = c
    yield out
    for c in out.values():
        c.close()


def _fill(path: str, config: MamoriConfig) -> str:
    return (
        path.replace("{token}", consent_token(config, "sub-0009"))
        .replace("{action_id}", "no-such-action")
        .replace("{decision}", "approve")
    )


def test_every_route_declares_its_view(app: FastAPI) -> None:
    routes = console_routes(app)
    assert len(routes) >= 20
    undeclared = [(p, m) for p, m, view in routes if view is None]
    assert undeclared == []


def test_anonymous_sees_only_public_pages(
    app: FastAPI, base_url: str, web_config: MamoriConfig
) -> None:
    with _client(base_url) as c:
        for path, method, _view in console_routes(app):
            if method != "GET":
                continue
            r = c.get(_fill(path, web_config))
            if path in PUBLIC or path == "/consent/{token}":
                assert r.status_code == 200, path
            else:
                assert r.status_code == 303, path
                assert r.headers["location"].startswith("/login?next=")


def test_routes_times_roles(
    app: FastAPI, clients: dict[Role, httpx.Client], web_config: MamoriConfig
) -> None:
    checked = 0
    for path, method, view in console_routes(app):
        assert view is not None
        for role, c in clients.items():
            url = _fill(path, web_config)
            if method == "GET":
                r = c.get(url)
                expected = 200 if view.allows(role) else 403
                assert r.status_code == expected, (path, role)
            else:
                # with a valid CSRF token: a role the view does not allow is refused before
                # anything is done; an allowed role gets past the check (any status but 403)
                token = csrf_of(c.get("/login").text)
                if path in ("/logout", "/login"):
                    continue
                r = c.post(
                    url,
                    data={
                        "csrf": token,
                        "name": "zz-new",
                        "role": "analyst",
                        "measure": "M4",
                        "state": "in",
                    },
                )
                if view.allows(role):
                    assert r.status_code != 403, (path, role, r.text[:300])
                else:
                    assert r.status_code == 403, (path, role)
            checked += 1
    assert checked >= 18 * len(Role)


def test_every_post_needs_the_csrf_token(
    app: FastAPI, base_url: str, web_config: MamoriConfig
) -> None:
    posts = [(p, v) for p, m, v in console_routes(app) if m == "POST"]
    assert {p for p, _ in posts} >= {"/login", "/logout", "/consent/{token}", "/admin/users"}
    for path, view in posts:
        assert view is not None
        # an account the route allows (public routes: any visitor)
        role = next((r for r in Role if view.allows(r)), Role.ADMIN)
        for data in ({}, {"csrf": "forged-token"}):
            with _client(base_url) as c:
                if not view.public:
                    login(c, ACCOUNTS[role])
                else:
                    c.get("/login")  # a session exists, with its own token
                r = c.post(
                    _fill(path, web_config),
                    data={
                        **data,
                        "name": ACCOUNTS[role],
                        "password": PASSWORD,
                        "measure": "M4",
                        "state": "out",
                        "role": "analyst",
                    },
                )
                assert r.status_code == 403, (path, data)
                assert "CSRF" in r.text


def test_consent_token_altered_or_expired_is_refused(
    base_url: str, web_config: MamoriConfig, web_gov: Governance
) -> None:
    good = consent_token(web_config, "sub-0042")
    altered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")

    class Old(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 31 * 24 * 3600

    expired = URLSafeTimedSerializer(secret_key(web_config), salt=_SALT_CONSENT, signer=Old).dumps(
        {"s": "sub-0042"}
    )
    other_key = URLSafeTimedSerializer("not-our-key", salt=_SALT_CONSENT).dumps({"s": "sub-0042"})
    with _client(base_url) as c:
        assert c.get(f"/consent/{good}").status_code == 200
        for bad, why in ((altered, "not valid"), (expired, "expired"), (other_key, "not valid")):
            page = c.get(f"/consent/{bad}")
            assert page.status_code == 403
            assert why in page.text
            # and a change with a bad token is refused even with a good CSRF token
            csrf = csrf_of(c.get(f"/consent/{good}").text)
            r = c.post(f"/consent/{bad}", data={"csrf": csrf, "measure": "M4", "state": "out"})
            assert r.status_code == 403
    states = web_gov.consent.current("sub-0042", actor="test")
    assert all(s.consented for s in states)  # nothing changed


def test_login_audited_and_bad_password_refused(base_url: str, web_gov: Governance) -> None:
    before = sum(1 for _ in web_gov.audit.entries())
    with _client(base_url) as c:
        csrf = csrf_of(c.get("/login").text)
        r = c.post(
            "/login",
            data={"csrf": csrf, "name": ACCOUNTS[Role.ANALYST], "password": "wrong-password!"},
        )
        assert r.status_code == 401
        assert c.get("/findings").status_code == 303
        login(c, ACCOUNTS[Role.ANALYST])
        assert c.get("/findings").status_code == 200
    new = list(web_gov.audit.entries())[before:]
    events = [(e.event, e.actor) for e in new]
    assert ("login-failed", "web:public") in events
    assert ("login", f"web:{ACCOUNTS[Role.ANALYST]}") in events


def test_tampered_session_cookie_is_anonymous(base_url: str) -> None:
    with _client(base_url) as c:
        login(c, ACCOUNTS[Role.ADMIN])
        cookie = c.cookies[SESSION_COOKIE]
        c.cookies.set(
            SESSION_COOKIE, cookie[:-4] + ("abcd" if not cookie.endswith("abcd") else "wxyz")
        )
        assert c.get("/admin/users").status_code == 303


def test_login_never_redirects_off_site(base_url: str) -> None:
    with _client(base_url) as c:
        csrf = csrf_of(c.get("/login").text)
        r = c.post(
            "/login",
            data={
                "csrf": csrf,
                "name": ACCOUNTS[Role.AUDITOR],
                "password": PASSWORD,
                "next": "//evil.example/x",
            },
        )
        assert r.status_code == 303
        assert r.headers["location"] == "/console"


def test_security_headers(base_url: str) -> None:
    with _client(base_url) as c:
        r = c.get("/")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer"  # consent tokens stay in the URL bar
        assert "http://" not in r.text.split("<main>")[0].replace(str(c.base_url), "")


def test_views_table_is_complete() -> None:
    assert {"public", "consent", "login"} <= set(VIEWS)
    assert all(v.public for v in VIEWS.values() if not v.roles)
