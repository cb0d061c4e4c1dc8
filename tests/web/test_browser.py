"""The console in a real browser (Debian's Chromium driven by Playwright): each role signs in and
sees its own pages only; the abuse desk approves an action; a subscriber follows the link in an
alert e-mail, opts out, and the auditor sees the change in the audit log. Screenshots are saved
under test-artifacts/web/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.governance.roles import Role
from mamori.governance.tokens import consent_token
from tests.web.conftest import ACCOUNTS, PASSWORD, artifacts_dir
from tests.web.test_pages import addresses_in

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
    pytest.mark.slow,  # drives a browser
]

# (role, a page it opens and its heading, a page it may not open, its menu)
ROLE_PAGES = [
    (
        Role.ANALYST,
        "/findings",
        "Findings",
        "/auditor",
        {"Findings", "Actions", "Alerts", "Search", "Traffic"},
    ),
    (
        Role.ABUSE_DESK,
        "/alerts",
        "Alerts to subscribers",
        "/traffic",
        {"Findings", "Actions", "Alerts", "Search"},
    ),
    (Role.OPERATOR, "/traffic", "Traffic overview", "/findings", {"Traffic", "Actions"}),
    (Role.AUDITOR, "/auditor", "Audit", "/actions", {"Audit", "Retention"}),
    (Role.ADMIN, "/admin/users", "Console accounts", "/alerts", {"Users"}),
]
MENU = {"Findings", "Actions", "Alerts", "Search", "Traffic", "Audit", "Retention", "Users"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    ctx = browser.new_context(base_url=base_url, locale="ja-JP")
    pg = ctx.new_page()
    yield pg
    ctx.close()


def shot(page: Page, name: str) -> None:
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def sign_in(page: Page, role: Role) -> None:
    page.goto("/login")
    page.fill("input[name=name]", ACCOUNTS[role])
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Console")


@pytest.mark.parametrize(
    ("role", "path", "text", "forbidden", "menu"), ROLE_PAGES, ids=[r[0].value for r in ROLE_PAGES]
)
def test_each_role_sees_its_pages_only(
    page: Page, role: Role, path: str, text: str, forbidden: str, menu: set[str]
) -> None:
    sign_in(page, role)
    links = set(page.locator("header nav a").all_inner_texts())
    assert links & MENU == menu
    page.goto(path)
    expect(page.locator("h1")).to_contain_text(text)
    shot(page, f"role-{role.value}")
    response = page.goto(forbidden)
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_contain_text("Not for your role")
    if role is Role.AUDITOR:
        for p in ("/auditor", "/auditor/log", "/auditor/retention"):
            page.goto(p)
            assert addresses_in(page.content()) == []


def test_desk_approves_an_action(page: Page) -> None:
    sign_in(page, Role.ABUSE_DESK)
    page.goto("/actions")
    row = page.locator('#proposed tr[data-action="act-rpz-1"]')
    expect(row).to_be_visible()
    row.get_by_role("button", name="Approve").click()
    expect(page.locator('#approved tr[data-action="act-rpz-1"]')).to_contain_text("web:abusedesk1")
    expect(page.locator("p.ok")).to_contain_text("approve act-rpz-1")
    shot(page, "desk-approved")


def _alert_mail(link: str) -> EmailMessage:
    msg = EmailMessage()
    msg["To"] = "sub-0001@example.net"
    msg["Subject"] = "ウイルス感染のおそれ / Your device may be infected"
    msg.set_content(f"設定の変更 / change your settings:\n{link}\n")
    return msg


def test_subscriber_opts_out_from_alert_link_and_auditor_sees_it(
    browser: Browser, base_url: str, web_config: MamoriConfig, web_gov: Governance
) -> None:
    mail = _alert_mail(f"{base_url}/consent/{consent_token(web_config, 'sub-0001')}")
    link = re.search(r"https?://\S+/consent/\S+", mail.get_content())
    assert link
    ctx = browser.new_context(locale="ja-JP")
    sub = ctx.new_page()
    sub.goto(link.group(0))
    m4 = sub.locator("section#M4")
    expect(m4.locator("strong[data-state]")).to_have_attribute("data-state", "in")
    expect(sub.locator("section.terms")).to_contain_text("same whichever you choose")
    # the two choices look alike: same element, same class, no default
    classes = m4.locator("button.choice").evaluate_all("bs => bs.map(b => b.className)")
    assert classes == ["choice", "choice"]
    shot(sub, "consent-before")
    m4.get_by_role("button", name="参加しない / Do not take part").click()
    expect(sub.locator("p.ok")).to_contain_text("M4")
    expect(sub.locator("section#M4 strong[data-state]")).to_have_attribute("data-state", "out")
    expect(sub.locator("#history")).to_contain_text("不参加 / out")
    shot(sub, "consent-after")
    ctx.close()
    # in force at once, for M4 only
    now = {c.measure: c.consented for c in web_gov.consent.current("sub-0001", actor="test")}
    assert now == {"M4": False, "M5": True, "M7": True, "M8": True, "M9": True}
    # and the auditor sees it in the log
    ctx = browser.new_context(base_url=base_url)
    aud = ctx.new_page()
    sign_in(aud, Role.AUDITOR)
    aud.goto("/auditor/log?event=consent")
    row = aud.locator("#log tr.ev-consent").first
    expect(row).to_contain_text("subscriber:sub-0001")
    expect(row).to_contain_text("M4")
    expect(row).to_contain_text("state=out")
    shot(aud, "auditor-consent-log")
    ctx.close()
