"""Each role's day in a real browser (Debian's Chromium driven by Playwright), in Japanese as the
staff's browsers ask: every role sees its own pages only; the analyst confirms one finding,
rejects another and proposes a block; the operator approves, applies and ends a block of an
attacked address, and sees the attack and the rule on one time axis; the desk
works a case to closure through the subscriber's opt-out and phone call; the auditor filters the
log and reconciles the transparency report. Screenshots of each step are saved under
test-artifacts/web/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from mamori.act import cases as cases_mod
from mamori.act.casebook import CaseBook
from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.governance.roles import Role, views_for
from mamori.governance.tokens import consent_token
from mamori.schemas import FINDINGS, MATCHES
from mamori.web.i18n import JA
from mamori.web.render import VIEW_LABELS, VIEW_PATHS
from tests.conftest import table
from tests.web.conftest import ACCOUNTS, PASSWORD, T0, _t, artifacts_dir
from tests.web.test_pages import addresses_in

CHROMIUM = Path("/usr/bin/chromium")
VICTIM = "198.51.100.10"
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
    pytest.mark.slow,  # drives a browser
]

# (role, a page it opens and its heading, a page it may not open)
ROLE_PAGES = [
    (Role.ANALYST, "/findings", "検知結果", "/auditor"),
    (Role.ABUSE_DESK, "/cases", "案件", "/traffic"),
    (Role.OPERATOR, "/traffic", "トラフィック概況", "/findings"),
    (Role.AUDITOR, "/auditor", "監査", "/actions"),
    (Role.ADMIN, "/admin/users", "コンソールのアカウント", "/alerts"),
]
ALL_MENU = {JA[VIEW_LABELS[name]] for name in VIEW_PATHS if name not in ("home", "account")}
CASE = cases_mod.case_id("sub-0001", "M5", "infected:mirai")


@pytest.fixture(scope="module", autouse=True)
def a_case(web_gov: Governance) -> None:
    """sub-0001's device (10.0.1.2) matched a C&C: a case, its alert, its matched record."""
    web_gov.write_registry(
        "allocations",
        table(
            [
                {
                    "start": T0 - timedelta(days=1),
                    "end": None,
                    "addr": "10.0.1.2",
                    "subscriber_id": "sub-0001",
                }
            ]
        ),
        "test",
        source="test",
    )
    case = cases_mod.Case(
        opened=T0,
        updated=T0,
        case_id=CASE,
        subscriber_id="sub-0001",
        measure="M5",
        cause="infected:mirai",
        events=3,
        last_event=T0,
        notification_id="n-1",
        notification_state="sent",
        legal_basis="consent",
    )
    web_gov.write("M5", "cases", cases_mod.to_table([case]), "test", basis="consent")
    CaseBook(web_gov).opened([(CASE, "M5", T0)], "notify")
    web_gov.write(
        "M5",
        "matches",
        _t(
            [
                {
                    "ts": T0 - timedelta(hours=1),
                    "ip": "10.0.1.2",
                    "port": 51234,
                    "indicator": "infected:mirai",
                    "finding_id": "f-inf-1",
                    "notification_id": "n-1",
                }
            ],
            MATCHES.arrow,
        ),
        "test",
        basis="consent",
    )
    # an attack an hour ago on VICTIM: its finding, and the packets that reached it
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    flows = [
        {
            "time_start": now - timedelta(minutes=m),
            "time_end": now - timedelta(minutes=m) + timedelta(seconds=30),
            "src_addr": "192.0.2.77",
            "dst_addr": VICTIM,
            "src_port": 123,
            "dst_port": 80,
            "protocol": 17,
            "packets": 500 if 60 <= m < 75 else 2,
            "bytes": 1000,
            "exporter": "192.0.2.1",
            "sampling_rate": 1000,
        }
        for m in range(1, 180)
    ]
    web_gov.write("M1", "flows", pa.Table.from_pylist(flows), "test")
    ddos = {
        "detected": now - timedelta(minutes=73),
        "finding_id": "ddos-web-1",
        "kind": "ddos",
        "method": "udp-flood",
        "ip": VICTIM,
        "score": 0.9,
        "first_seen": now - timedelta(minutes=75),
        "last_seen": now - timedelta(minutes=73),
        "measure": "M13",
        "evidence": "{}",
    }
    web_gov.write("M13", "findings", _t([ddos], FINDINGS.arrow), "test")


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


def sign_in(page: Page, role: Role | str) -> None:
    page.goto("/login")
    page.fill("input[name=name]", ACCOUNTS[role] if isinstance(role, Role) else role)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("コンソール")


@pytest.mark.parametrize(
    ("role", "path", "heading", "forbidden"), ROLE_PAGES, ids=[r[0].value for r in ROLE_PAGES]
)
def test_each_role_sees_its_pages_only(
    page: Page, role: Role, path: str, heading: str, forbidden: str
) -> None:
    sign_in(page, role)
    links = set(page.locator("header nav a").all_inner_texts())
    mine = {
        JA[VIEW_LABELS[v.name]]
        for v in views_for(role)
        if v.name in VIEW_PATHS and v.name not in ("home", "account")
    }
    assert links & ALL_MENU == mine
    page.goto(path)
    expect(page.locator("h1")).to_contain_text(heading)
    shot(page, f"role-{role.value}")
    response = page.goto(forbidden)
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_contain_text("このロールでは利用できません")
    if role is Role.AUDITOR:
        for p in ("/auditor", "/auditor/log", "/auditor/retention"):
            page.goto(p)
            assert addresses_in(page.content()) == []


def test_analyst_confirms_rejects_and_proposes(page: Page) -> None:
    sign_in(page, Role.ANALYST)
    page.goto("/findings")
    page.locator('tr[data-finding="f-c2-1"] a').first.click()
    expect(page.locator("dl.evidence").first).to_be_visible()
    expect(page.locator("body")).to_contain_text("hosts converging on it")
    shot(page, "analyst-1-finding")
    page.get_by_role("button", name="確定").click()
    expect(page.locator("#review")).to_contain_text("確認済")
    page.goto("/findings/f-inf-1")
    page.get_by_role("button", name="却下").click()
    expect(page.locator("#review")).to_contain_text("却下")
    page.goto("/findings?f.review=confirmed")
    expect(page.locator("tr[data-finding]")).to_have_count(1)
    shot(page, "analyst-2-reviewed")
    page.goto("/findings/f-c2-1")
    page.locator("#propose-block button[type=submit]").click()
    expect(page.locator("p.ok")).to_contain_text("proposed")
    shot(page, "analyst-3-proposed")


def test_operator_approves_applies_and_ends(page: Page, web_gov: Governance) -> None:
    from mamori.web.proposals import propose_from_finding

    finding = {"finding_id": "ddos-web-1", "kind": "ddos", "ip": VICTIM}
    action = propose_from_finding(web_gov, finding, "block", 24, "web:analyst1")
    sign_in(page, Role.OPERATOR)
    page.goto("/approvals")
    card = page.locator(f"#q-{action.action_id}")
    expect(card.locator("pre.preview")).to_contain_text(f"announce route {VICTIM}/32")
    shot(page, "operator-1-queue")
    card.get_by_role("button", name="承認").click()
    expect(page.locator("p.ok")).to_contain_text(f"approve {action.action_id}")
    page.locator(f"#q-{action.action_id}").get_by_role("button", name="適用").click()
    expect(page.locator("p.ok")).to_contain_text(f"apply {action.action_id}")
    page.goto(f"/actions/{action.action_id}")
    expect(page.locator("h1")).to_contain_text("実施中")
    page.get_by_role("button", name="終了").click()
    page.goto(f"/actions/{action.action_id}")
    expect(page.locator("h1")).to_contain_text("終了")
    expect(page.locator("ol.timeline")).to_contain_text("web:operator1")
    shot(page, "operator-2-ended")
    # the attack and the rule that answered it, on one time axis
    page.goto("/attacks?range=6h")
    chart = page.locator(f'div.chartbox[data-prefix="{VICTIM}/32"]')
    expect(chart.locator("rect.band.attack")).to_have_count(1)
    expect(chart.locator("rect.band.rule title")).to_contain_text(f"rtbh {VICTIM}/32 (ended)")
    expect(page.locator(f'#rules tr[data-action="{action.action_id}"]')).to_have_attribute(
        "data-status", "ended"
    )
    shot(page, "operator-3-attacks")


def test_desk_works_a_case_through_opt_out_and_phone_call(
    browser: Browser, base_url: str, web_config: MamoriConfig, web_gov: Governance
) -> None:
    ctx = browser.new_context(base_url=base_url, locale="ja-JP")
    desk = ctx.new_page()
    sign_in(desk, Role.ABUSE_DESK)
    desk.goto("/cases")
    desk.locator(f'a[href="/cases/{CASE}"]').first.click()
    expect(desk.locator('#timeline li[data-step="attribution"]')).to_contain_text("契約者の特定")
    expect(desk.locator('#timeline li[data-step="match"]')).to_have_count(1)
    shot(desk, "desk-1-case")
    desk.select_option("#edit select[name=status]", "acknowledged")
    desk.fill("#edit input[name=assignee]", "tanaka")
    desk.fill("#edit textarea[name=note]", "mailed; waiting for the subscriber")
    desk.locator("#edit button[type=submit]").click()
    expect(desk.locator("#status")).to_contain_text("受付済")
    expect(desk.locator("#notes")).to_contain_text("waiting for the subscriber")
    shot(desk, "desk-2-acknowledged")

    # the subscriber follows the link in the alert and opts out of the alerts (M5)
    sub = browser.new_context(locale="ja-JP", base_url=base_url).new_page()
    sub.goto(f"/consent/{consent_token(web_config, 'sub-0001')}")
    section = sub.locator("section#M5")
    classes = section.locator("button.choice").evaluate_all("bs => bs.map(b => b.className)")
    assert classes == ["choice", "choice"]  # the two choices look alike
    section.get_by_role("button", name="参加しない / Do not take part").click()
    expect(sub.locator("section#M5 strong[data-state]")).to_have_attribute("data-state", "out")
    shot(sub, "desk-3-subscriber-opted-out")
    sub.context.close()

    # ...then phones the desk with the case number
    desk.goto("/search")
    desk.fill("input[name=q]", CASE)
    desk.locator("form.card button[type=submit]").click()
    desk.locator(f'#result-cases a[href="/cases/{CASE}"]').click()
    expect(desk.locator("#withheld")).to_be_visible()
    body = desk.locator("main").inner_text()
    assert "sub-0001" not in body and "waiting for the subscriber" not in body
    assert addresses_in(body) == []
    shot(desk, "desk-4-after-opt-out")
    desk.select_option("#edit select[name=status]", "resolved")
    desk.locator("#edit button[type=submit]").click()
    expect(desk.locator("#status")).to_contain_text("解決")
    expect(desk.locator('#timeline li[data-step="closure"]')).to_have_count(1)
    shot(desk, "desk-5-closed")
    ctx.close()


def test_auditor_filters_the_log_and_reconciles_the_report(page: Page, web_gov: Governance) -> None:
    from datetime import UTC, datetime

    web_gov.consent.set("sub-0003", "M8", False, actor="subscriber:sub-0003", channel="web")
    sign_in(page, Role.AUDITOR)
    page.goto("/auditor/log")
    page.select_option("form.filters select[name='f.event']", "consent")
    page.locator("form.filters button[type=submit]").click()
    expect(page.locator("#log tr.ev-consent").first).to_be_visible()
    matched = int(page.locator("nav.pager .count").first.get_attribute("data-matched") or "-1")
    rows = page.locator("#log tr.ev-consent").all_inner_texts()
    outs = sum(1 for r in rows if "state=out" in r)
    assert matched == len(rows) and outs >= 1
    assert addresses_in(page.content()) == []
    shot(page, "auditor-1-log-filtered")
    now = datetime.now(UTC)
    page.goto(f"/transparency?period={now:%Y-%m}")
    table_rows = page.locator("#measures tbody tr").all_inner_texts()
    reported = 0
    for r in table_rows:
        cells = r.split("\t")
        reported += int(cells[6])  # opt-outs / 停止
    assert reported == outs
    shot(page, "auditor-2-transparency")


def test_usable_at_phone_width(browser: Browser, base_url: str, web_config: MamoriConfig) -> None:
    ctx = browser.new_context(
        base_url=base_url, locale="ja-JP", viewport={"width": 390, "height": 844}
    )
    pg = ctx.new_page()
    sign_in(pg, Role.ABUSE_DESK)
    pg.goto("/cases")
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, width  # no sideways scrolling of the page (tables scroll in their box)
    shot(pg, "phone-cases")
    pg.goto(f"/consent/{consent_token(web_config, 'sub-0042')}")
    assert pg.evaluate("document.documentElement.scrollWidth") <= 400
    shot(pg, "phone-consent")
    ctx.close()
    assert re.match(r"^http://127\.0\.0\.1:\d+$", base_url)
