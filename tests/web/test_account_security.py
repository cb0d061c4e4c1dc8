"""Account security over real HTTP: sign-out ends the session on the server, wrong passwords are
throttled and then lock the account, the second factor, the Secure cookie, the subscriber's
self-service sign-in, and pages for errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.governance.roles import Role
from mamori.web.app import SESSION_COOKIE, create_app, on_loopback
from mamori.web.auth import Accounts
from mamori.web.maildir import read_mailbox
from mamori.web.totp import new_secret, totp_at
from tests.conftest import make_config
from tests.web.conftest import ACCOUNTS, PASSWORD, csrf_of
from tests.web.server import running

WRONG = "not the password at all"


@contextmanager
def _client(app: FastAPI) -> Iterator[httpx.Client]:
    with running(app) as url, httpx.Client(base_url=url, follow_redirects=False, timeout=30) as c:
        yield c


def _login(c: httpx.Client, name: str, password: str = PASSWORD, **extra: str) -> int:
    csrf = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"name": name, "password": password, "csrf": csrf, **extra})
    return r.status_code


@pytest.fixture
def fresh_app(web_gov: Governance) -> FastAPI:
    """An app of its own: its throttling windows start empty."""
    return create_app(web_gov)


def test_cookie_captured_before_sign_out_is_refused_after(fresh_app: FastAPI) -> None:
    with running(fresh_app) as url:
        with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as c:
            assert _login(c, ACCOUNTS[Role.ANALYST]) == 303
            assert c.get("/findings").status_code == 200
            captured = c.cookies[SESSION_COOKIE]
            csrf = csrf_of(c.get("/console").text)
            assert c.post("/logout", data={"csrf": csrf}).status_code == 303
        with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as thief:
            thief.cookies.set(SESSION_COOKIE, captured)
            r = thief.get("/findings")
            assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_password_change_ends_every_session(fresh_app: FastAPI, web_gov: Governance) -> None:
    accounts = Accounts(web_gov)
    accounts.add("pwchange", Role.ANALYST, PASSWORD)
    with (
        running(fresh_app) as url,
        httpx.Client(base_url=url, follow_redirects=False, timeout=30) as a,
        httpx.Client(base_url=url, follow_redirects=False, timeout=30) as b,
    ):
        assert _login(a, "pwchange") == 303 and _login(b, "pwchange") == 303
        assert fresh_app.state.sessions.count("pwchange") == 2
        new = accounts.set_password("pwchange")
        fresh_app.state.sessions.end_all("pwchange")
        assert a.get("/findings").status_code == 303
        assert b.get("/findings").status_code == 303
        assert _login(a, "pwchange", new) == 303


def test_eleventh_wrong_password_in_a_minute_is_refused_before_it_is_checked(
    fresh_app: FastAPI, web_gov: Governance, monkeypatch: pytest.MonkeyPatch
) -> None:
    Accounts(web_gov).add("throttled", Role.ANALYST, PASSWORD)
    checked: list[str] = []
    verify = Accounts.verify

    def spy(self: Accounts, name: str, password: str) -> object:
        checked.append(name)
        return verify(self, name, password)

    monkeypatch.setattr(Accounts, "verify", spy)
    before = sum(1 for _ in web_gov.audit.entries())
    with _client(fresh_app) as c:
        for _ in range(10):
            assert _login(c, "throttled", WRONG) == 401
        assert len(checked) == 10
        # the 11th, even with the right password, is refused without being checked
        csrf = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"name": "throttled", "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "Too many wrong passwords" in r.text
        assert len(checked) == 10
    events = [e.event for e in list(web_gov.audit.entries())[before:]]
    assert events.count("login-failed") == 10 and "login-throttled" in events


def test_wrong_passwords_are_throttled_per_source_too(
    fresh_app: FastAPI, web_gov: Governance
) -> None:
    with _client(fresh_app) as c:
        for i in range(10):  # ten names, one source
            assert _login(c, f"nobody{i}", WRONG) == 401
        assert _login(c, ACCOUNTS[Role.AUDITOR]) == 429


def test_account_locked_after_wrong_passwords_in_a_row(tmp_path: Path) -> None:
    base = make_config(tmp_path / "store")
    cfg = base.model_copy(
        update={
            "web": base.web.model_copy(
                update={"lock_after_failures": 3, "login_failures_per_minute": 100}
            )
        }
    )
    with Governance(cfg) as gov:
        Accounts(gov).add("lockme", Role.AUDITOR, PASSWORD)
        with _client(create_app(gov)) as c:
            for _ in range(3):
                assert _login(c, "lockme", WRONG) == 401
            csrf = csrf_of(c.get("/login").text)
            r = c.post("/login", data={"name": "lockme", "password": PASSWORD, "csrf": csrf})
            assert r.status_code == 423
            assert "locked until" in r.text and "JST" in r.text  # the ISP's time zone, named
        events = [(e.event, e.detail or "") for e in gov.audit.entries()]
        assert any(ev == "account-locked" and "lockme" in d for ev, d in events)
        Accounts(gov).update("lockme", locked_until=None)
        with _client(create_app(gov)) as c:
            assert _login(c, "lockme") == 303


def test_second_factor(fresh_app: FastAPI, web_gov: Governance) -> None:
    import time

    secret = new_secret()
    accounts = Accounts(web_gov)
    accounts.add("twofactor", Role.AUDITOR, PASSWORD)
    accounts.update("twofactor", totp_secret=secret)
    with _client(fresh_app) as c:
        assert _login(c, "twofactor") == 401  # the password alone is not enough
        wrong = f"{(int(totp_at(secret, time.time())) + 1) % 10**6:06d}"
        assert _login(c, "twofactor", code=wrong) == 401
        assert _login(c, "twofactor", code=totp_at(secret, time.time())) == 303


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("https://console.isp.example", False),
        ("http://192.0.2.10:8080", False),
    ],
)
def test_loopback(url: str, loopback: bool) -> None:
    assert on_loopback(url) is loopback


def test_secure_cookie_unless_on_loopback(web_config: MamoriConfig, tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "store")
    cfg = cfg.model_copy(
        update={"web": cfg.web.model_copy(update={"base_url": "https://console.isp.example"})}
    )
    with Governance(cfg) as gov:
        Accounts(gov).add("sec", Role.ADMIN, PASSWORD)
        with _client(create_app(gov)) as c:
            # as a TLS proxy in front would say (uvicorn trusts it from loopback)
            r = c.get("/login", headers={"X-Forwarded-Proto": "https"})
            assert "; secure" in r.headers["set-cookie"].lower()
            assert "max-age=31536000" in r.headers["strict-transport-security"]


def test_loopback_console_cookie_is_not_secure(fresh_app: FastAPI) -> None:
    with _client(fresh_app) as c:
        r = c.get("/login")
        assert "secure" not in r.headers["set-cookie"].lower()
        assert "strict-transport-security" not in r.headers


@pytest.fixture
def mailbox_app(tmp_path: Path) -> Iterator[tuple[FastAPI, Governance, Path]]:
    pytest.importorskip("aiosmtpd")
    import pyarrow as pa

    from mamori.config import SmtpConfig
    from mamori.sim.mailsink import MailSink

    sink = MailSink(tmp_path / "mail").start()
    cfg = make_config(tmp_path / "store")
    cfg = cfg.model_copy(update={"smtp": SmtpConfig(host=sink.host, port=sink.port)})
    gov = Governance(cfg)
    from datetime import UTC, datetime

    gov.write_registry(
        "subscribers",
        pa.table(
            {
                "updated": pa.array([datetime(2026, 11, 1, tzinfo=UTC)], pa.timestamp("ms", "UTC")),
                "subscriber_id": ["sub-0900"],
                "contract": ["home"],
                "email": ["sub-0900@mail.example.jp"],
                "language": ["ja"],
            }
        ),
        "test",
        source="test",
    )
    try:
        yield create_app(gov), gov, sink.directory
    finally:
        sink.stop()
        gov.close()


def test_self_service_sign_in_with_a_mailed_code(
    mailbox_app: tuple[FastAPI, Governance, Path],
) -> None:
    import re

    app, gov, mail = mailbox_app
    with _client(app) as c:
        page = c.get("/consent")
        assert page.status_code == 200 and "ご契約番号" in page.text
        csrf = csrf_of(page.text)
        unknown = c.post("/consent", data={"csrf": csrf, "contract": "sub-9999"})
        known = c.post("/consent", data={"csrf": csrf, "contract": "sub-0900"})
        # the same answer: the page does not tell who is a subscriber
        assert unknown.status_code == known.status_code == 200
        assert unknown.text.replace("sub-9999", "") == known.text.replace("sub-0900", "")
        mails = read_mailbox(mail)
        assert len(mails) == 1 and mails[0].recipients == ("sub-0900@mail.example.jp",)
        code = re.search(r"確認コード: (\d{6})", mails[0].body)
        assert code and "Code:" in mails[0].body  # Japanese first, then English
        bad = c.post("/consent/sign-in", data={"csrf": csrf, "code": "000000"})
        assert bad.status_code == 401 or code.group(1) == "000000"
        c.post("/consent", data={"csrf": csrf, "contract": "sub-0900"})
        code = re.search(r"確認コード: (\d{6})", read_mailbox(mail)[-1].body)
        assert code
        r = c.post("/consent/sign-in", data={"csrf": csrf, "code": code.group(1)})
        assert r.status_code == 303 and r.headers["location"].startswith("/consent/")
        settings = c.get(r.headers["location"])
        assert settings.status_code == 200 and 'id="M4"' in settings.text
        # a code is used once
        again = c.post("/consent/sign-in", data={"csrf": csrf, "code": code.group(1)})
        assert again.status_code == 401
    events = [e.event for e in gov.audit.entries()]
    assert "consent-contact" in events and "consent-sign-in" in events


def test_single_sign_on_hook(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "store")
    cfg = cfg.model_copy(
        update={"web": cfg.web.model_copy(update={"subscriber_sso_header": "X-ISP-Subscriber"})}
    )
    with Governance(cfg) as gov, _client(create_app(gov)) as c:
        r = c.get("/consent", headers={"X-ISP-Subscriber": "sub-0042"})
        assert r.status_code == 303 and r.headers["location"].startswith("/consent/")
        assert 'id="M4"' in c.get(r.headers["location"]).text
        assert 'name="contract"' in c.get("/consent").text  # without the header: the form
        sso = [e for e in gov.audit.entries() if e.event == "consent-sso"]
        assert [e.actor for e in sso] == ["subscriber:sub-0042"]


def test_not_found_is_a_page(fresh_app: FastAPI) -> None:
    with _client(fresh_app) as c:
        r = c.get("/no/such/page")
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
        assert "<h1>" in r.text and "/no/such/page" in r.text


def test_password_change_ends_the_session_on_the_server(
    fresh_app: FastAPI, web_gov: Governance
) -> None:
    Accounts(web_gov).add("selfchange", Role.OPERATOR, PASSWORD)
    with running(fresh_app) as url:
        with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as c:
            assert _login(c, "selfchange") == 303
            captured = c.cookies[SESSION_COOKIE]
            csrf = csrf_of(c.get("/account").text)
            wrong = c.post(
                "/account/password", data={"csrf": csrf, "current": WRONG, "new": "x" * 14}
            )
            assert wrong.status_code == 400
            r = c.post(
                "/account/password",
                data={"csrf": csrf, "current": PASSWORD, "new": "a brand new passphrase"},
            )
            assert r.status_code == 303 and r.headers["location"] == "/login"
        with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as old:
            old.cookies.set(SESSION_COOKIE, captured)
            assert old.get("/traffic").status_code == 303
            assert _login(old, "selfchange", "a brand new passphrase") == 303


def test_admin_disables_resets_and_changes_roles(fresh_app: FastAPI, web_gov: Governance) -> None:
    import re

    Accounts(web_gov).add("managed", Role.ANALYST, PASSWORD)
    with (
        running(fresh_app) as url,
        httpx.Client(base_url=url, follow_redirects=False, timeout=30) as admin,
        httpx.Client(base_url=url, follow_redirects=False, timeout=30) as user,
    ):
        assert _login(admin, ACCOUNTS[Role.ADMIN]) == 303
        assert _login(user, "managed") == 303
        page = admin.get("/admin/users").text
        row = page.split('data-account="managed"')[1].split("</tr>")[0]
        assert "<td>1</td>" in row  # one open session, and its last sign-in shown
        csrf = csrf_of(page)
        assert admin.post("/admin/users/managed/disable", data={"csrf": csrf}).status_code == 200
        assert user.get("/findings").status_code == 303  # its session ended at once
        assert _login(user, "managed") == 401
        admin.post("/admin/users/managed/enable", data={"csrf": csrf})
        reset = admin.post("/admin/users/managed/reset", data={"csrf": csrf}).text
        m = re.search(r'id="new-password">([^<]+)<', reset)
        assert m and _login(user, "managed", PASSWORD) == 401
        assert _login(user, "managed", m.group(1)) == 303
        admin.post("/admin/users/managed/role", data={"csrf": csrf, "role": "operator"})
        assert user.get("/findings").status_code == 303  # the role change ended it too
        assert _login(user, "managed", m.group(1)) == 303
        assert user.get("/traffic").status_code == 200
        assert user.get("/findings").status_code == 403
    changes = [e.detail or "" for e in web_gov.audit.entries() if e.event == "account"]
    assert any('"change": "disable"' in d for d in changes)
    assert any('"change": "role"' in d and "operator" in d for d in changes)


def test_second_factor_set_up_from_the_account_page(
    fresh_app: FastAPI, web_gov: Governance
) -> None:
    import re
    import time

    Accounts(web_gov).add("settotp", Role.AUDITOR, PASSWORD)
    with _client(fresh_app) as c:
        assert _login(c, "settotp") == 303
        csrf = csrf_of(c.get("/account").text)
        page = c.post("/account/totp", data={"csrf": csrf, "step": "start"}).text
        m = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
        assert m
        code = totp_at(m.group(1), time.time())
        assert (
            c.post(
                "/account/totp", data={"csrf": csrf, "step": "confirm", "code": code}
            ).status_code
            == 200
        )
    assert Accounts(web_gov).find("settotp").totp_secret == m.group(1)  # type: ignore[union-attr]
    with _client(fresh_app) as c:
        assert _login(c, "settotp") == 401
        assert _login(c, "settotp", code=totp_at(m.group(1), time.time())) == 303


@pytest.mark.parametrize(
    ("accept", "heading", "menu"),
    [("ja-JP,ja;q=0.9", "コンソール", "検知結果"), ("en-US,en;q=0.9", "Console", "Findings")],
)
def test_chrome_follows_the_browser_language(
    fresh_app: FastAPI, accept: str, heading: str, menu: str
) -> None:
    with _client(fresh_app) as c:
        c.headers["Accept-Language"] = accept
        assert _login(c, ACCOUNTS[Role.ANALYST]) == 303
        page = c.get("/console").text
        assert f"<h1>{heading}" in page and f">{menu}</a>" in page
        assert f'lang="{accept[:2]}"' in page
        forbidden = c.get("/auditor")
        assert forbidden.status_code == 403
        assert (
            "このロールでは利用できません" if accept.startswith("ja") else "Not for your role"
        ) in forbidden.text
        missing = c.get("/nowhere")
        assert (
            "ページが見つかりません" if accept.startswith("ja") else "Page not found"
        ) in missing.text


def test_the_accounts_language_wins_over_the_browser(
    fresh_app: FastAPI, web_gov: Governance
) -> None:
    Accounts(web_gov).add("speaksen", Role.OPERATOR, PASSWORD)
    with _client(fresh_app) as c:
        c.headers["Accept-Language"] = "ja"
        assert _login(c, "speaksen") == 303
        csrf = csrf_of(c.get("/account").text)
        c.post("/account/language", data={"csrf": csrf, "language": "en"})
        assert ">Traffic</a>" in c.get("/console").text
        assert ">トラフィック</a>" in c.get("/console", params={"lang": "ja"}).text


def test_trends_are_counts_on_a_time_axis(fresh_app: FastAPI) -> None:
    with _client(fresh_app) as c:
        assert _login(c, ACCOUNTS[Role.OPERATOR]) == 303
        page = c.get("/trends").text
        assert page.count("<svg") == 3
        assert "Findings per day" in page and "Opt-outs per day" in page
