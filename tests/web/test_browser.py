"""Each role's day in a real browser (Debian's Chromium driven by Playwright), in Japanese as the
staff's browsers ask: every role sees its own pages only; the analyst confirms one finding,
rejects another and proposes a block; the operator approves, applies and ends a block of an
attacked address, and sees the attack and the rule on one time axis; the desk
works a case to closure through the subscriber's opt-out and phone call; the auditor filters the
log and reconciles the transparency report. Screenshots of each step are saved under
test-artifacts/web/."""

from __future__ import annotations

import csv
import io
import json
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
from mamori.schemas import FINDINGS, MATCHES, NOTIFICATIONS
from mamori.web.auth import Accounts
from mamori.web.i18n import JA
from mamori.web.render import VIEW_LABELS, VIEW_PATHS
from tests.conftest import table
from tests.web.conftest import ACCOUNTS, PASSWORD, T0, _t, artifacts_dir
from tests.web.test_pages import addresses_in

CHROMIUM = Path("/usr/bin/chromium")
VICTIM = "198.51.100.10"
SHARED_C2 = "203.0.113.61"
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
    # a C&C endpoint nobody has reviewed, to share with the ISAC; and a second analyst, who
    # approves what the first proposes
    c2 = {
        "detected": now - timedelta(hours=2),
        "finding_id": "f-c2-share",
        "kind": "c2",
        "method": "correlation",
        "ip": SHARED_C2,
        "port": 8443,
        "protocol": "tcp",
        "score": 0.9,
        "measure": "M2",
        "evidence": "{}",
    }
    web_gov.write("M2", "findings", _t([c2], FINDINGS.arrow), "test")
    Accounts(web_gov).add("analyst2", Role.ANALYST, PASSWORD)


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
    # and proposes sharing the C&C endpoint with the ISAC: a second analyst approves it
    page.goto("/findings/f-c2-share")
    page.locator("#propose-share button[type=submit]").click()
    expect(page.locator("p.ok")).to_contain_text("proposed")
    shot(page, "analyst-4-share-proposed")


def test_second_analyst_approves_the_share(page: Page, web_gov: Governance) -> None:
    from mamori.act import base as act
    from mamori.share.export import export

    [share] = [
        a for a in act.current(web_gov, "test", ["M3"]).values() if a.kind is act.ActionKind.SHARE
    ]
    assert SHARED_C2 not in export(web_gov, "csv", "test")[0].decode()  # proposed only
    sign_in(page, "analyst2")
    page.goto("/approvals")
    card = page.locator(f"#q-{share.action_id}")
    expect(card.locator("pre.preview")).to_contain_text(f"C&C endpoint {SHARED_C2}:8443/tcp")
    shot(page, "analyst2-1-share-queue")
    card.get_by_role("button", name="承認").click()
    expect(page.locator("p.ok")).to_contain_text(f"approve {share.action_id}")
    page.goto(f"/actions/{share.action_id}")
    expect(page.locator("h1")).to_contain_text("実施中")
    shot(page, "analyst2-2-share-applied")
    assert SHARED_C2 in export(web_gov, "csv", "test")[0].decode()


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


def _alerts_sent(gov: Governance, now: datetime, n: int) -> None:
    """``n`` alerts of M5 queued and sent this month, as the notifier records them: the
    notification's versions and its ``alert`` action (queued: approved; sent: applied, ended)."""
    from mamori.act import alert_actions

    rows = [
        {
            "created": now,
            "notification_id": f"n-now-{i}",
            "subscriber_id": f"sub-00{20 + i}",
            "measure": "M5",
            "legal_basis": "consent",
            "case_id": f"case-now-{i}",
            "state": "queued",
        }
        for i in range(n)
    ]
    queued = _t(rows, NOTIFICATIONS.arrow)
    gov.write("M5", "notifications", queued, "notify", basis="consent")
    actions = alert_actions.decided(
        gov, "M5", queued, basis="consent", justification=None, reason="test", actor="notify",
        now=now,
    )  # fmt: skip
    at = now + timedelta(minutes=1)
    sent = [{**r, "state": "sent", "updated": at, "sent": at} for r in rows]
    gov.write("M5", "notifications", _t(sent, NOTIFICATIONS.arrow), "notify", basis="consent")
    alert_actions.sent(gov, sent, {a.action_id: a for a in actions}, actor="notify", now=at)


# the report's figures the audit log holds, and how each is rebuilt from the log's CSV export
FIGURES = (
    "alerts_sent",
    "blocks",
    "block_subscribers",
    "opt_outs",
    "cc_entries_shared",
    "cc_shared_confirmed",
    "cc_shared_corroborated",
    "findings_rejected",
    "refusals",
)


def rebuild(rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """Each figure per measure, from audit entries alone (as exported: addresses masked)."""
    out: dict[str, dict[str, int]] = {}
    blocks: dict[str, dict[str, int]] = {}
    for r in rows:
        m, ev = r["measure"], r["event"]
        d = json.loads(r["detail"] or "{}")
        line = out.setdefault(m, dict.fromkeys(FIGURES, 0))
        if ev == "write" and r["dataset"] == "actions" and d.get("step") == "applied":
            if d["kinds"] == ["alert"]:
                line["alerts_sent"] += len(d["action_ids"])
            elif "share" not in d["kinds"]:
                for i in d["action_ids"]:
                    blocks.setdefault(m, {})[i] = int(d.get("subscribers_affected", {}).get(i, 0))
        elif ev == "consent" and d.get("state") == "out":
            line["opt_outs"] += 1
        elif ev == "refused":
            line["refusals"] += 1
        elif ev == "review" and d.get("decision") in ("rejected", "false-positive"):
            line["findings_rejected"] += 1
        elif m == "M3" and ev in ("share-export", "share-publish"):
            line["cc_entries_shared"] += int(d.get("objects_added", d.get("endpoints", 0)))
            line["cc_shared_confirmed"] += int(d.get("shared", {}).get("confirmed", 0))
            line["cc_shared_corroborated"] += int(d.get("shared", {}).get("corroborated", 0))
    for m, ids in blocks.items():
        out[m]["blocks"] = len(ids)
        out[m]["block_subscribers"] = sum(ids.values())
    return out


def test_auditor_filters_the_log_and_reconciles_the_report(page: Page, web_gov: Governance) -> None:
    from mamori.act import base as act
    from mamori.act.warning_tally import WarningCounts
    from mamori.governance import LegalBasis
    from mamori.share.export import export

    # the rest of the month the report covers: alerts sent, a block that reached 7
    # subscribers, the C&C list exported to the ISAC, an opt-out, warning pages shown
    now = datetime.now(UTC)
    _alerts_sent(web_gov, now, 2)
    rule = act.Action(
        action_id="nft-month",
        kind=act.ActionKind.NFTABLES,
        target="203.0.113.9/32",
        measure="M13",
        legal_basis=LegalBasis.SELF_DEFENCE,
        created=now,
        expires=now + timedelta(days=1),
        subscribers_affected=7,
    )
    act.apply(web_gov, act.approve(web_gov, act.propose(web_gov, [rule], "t"), "t"), "t")
    export(web_gov, "stix", "cli:isac")
    web_gov.consent.set("sub-0003", "M8", False, actor="subscriber:sub-0003", channel="web")
    counts = WarningCounts(web_gov.state_dir("warning"), web_gov.audit)
    for _ in range(3):
        counts.add("phishing", "shown")
    period = f"{now:%Y-%m}"

    sign_in(page, Role.AUDITOR)
    page.goto(f"/transparency?period={period}")
    reported: dict[str, dict[str, int]] = {}
    for tr in page.locator("#measures tr[data-measure]").all():
        m = tr.get_attribute("data-measure") or ""
        reported[m] = {k: int(tr.locator(f'td[data-figure="{k}"]').inner_text()) for k in FIGURES}
    head = page.locator("#audit-head")
    head_seq, head_hash = (
        int(head.get_attribute("data-seq") or "-1"),
        head.get_attribute("data-hash"),
    )
    shown = int(page.locator('#warnings tr[data-category="phishing"] td[data-shown]').inner_text())
    # blocks applied in an earlier month and still in force count in this one too: the log of
    # this month shows only what was applied in it
    lo = datetime.fromisoformat(f"{period}-01T00:00:00+00:00")
    carried: dict[str, list[int]] = {}
    for tr in page.locator("#blocks tr[data-measure]").all():
        if datetime.fromisoformat(tr.get_attribute("data-start") or "") < lo:
            carried.setdefault(tr.get_attribute("data-measure") or "", []).append(
                int(tr.get_attribute("data-subscribers") or "0")
            )
    shot(page, "auditor-2-transparency")

    # the log, filtered as the auditor works it: consent changes, then the whole month
    page.goto("/auditor/log")
    page.select_option("form.filters select[name='f.event']", "consent")
    page.locator("form.filters button[type=submit]").click()
    expect(page.locator("#log tr.ev-consent").first).to_be_visible()
    matched = int(page.locator("nav.pager .count").first.get_attribute("data-matched") or "-1")
    consent_rows = page.locator("#log tr.ev-consent").all_inner_texts()
    assert matched == len(consent_rows) and sum("state=out" in r for r in consent_rows) >= 2
    assert addresses_in(page.content()) == []
    shot(page, "auditor-1-log-filtered")
    page.goto("/auditor/log")
    page.fill("form.filters input[name=since]", f"{period}-01")
    page.locator("form.filters button[type=submit]").click()
    with page.expect_download() as dl:
        page.locator("a.csv").first.click()
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    assert addresses_in(text) == []
    rows = list(csv.DictReader(io.StringIO(text)))
    # the report pins the log at its head: the export holds that entry with that hash, and the
    # figures are the entries up to it
    [at_head] = [r for r in rows if int(r["seq"]) == head_seq]
    assert at_head["hash"] == head_hash
    rebuilt = rebuild([r for r in rows if int(r["seq"]) <= head_seq])
    for m, figures in reported.items():
        want = dict(rebuilt.get(m, dict.fromkeys(FIGURES, 0)))
        want["blocks"] += len(carried.get(m, []))
        want["block_subscribers"] += sum(carried.get(m, []))
        assert figures == want, m
    assert carried == {"M13": [3]}  # the fixture's rule, in force since November
    # what this story did is in it (not zeros on both sides)
    assert reported["M5"]["alerts_sent"] == 2
    assert rebuilt["M13"]["blocks"] == 2 and rebuilt["M13"]["block_subscribers"] == 7
    assert reported["M3"]["cc_shared_confirmed"] >= 1
    assert sum(f["findings_rejected"] for f in reported.values()) >= 1
    assert sum(f["opt_outs"] for f in reported.values()) >= 2
    assert sum(f["refusals"] for f in reported.values()) >= 1
    # warning pages shown: the report sealed the page's counts into the log (a daily tally, no
    # time of a visit), so they are rebuilt from it like the rest
    tallies = [json.loads(r["detail"]) for r in rows if r["event"] == "warning-tally"]
    rebuilt_shown = sum(
        events.get("shown", 0)
        for t in tallies
        for day, cats in t["counts"].items()
        if day.startswith(period)
        for cat, events in cats.items()
        if cat == "phishing"
    )
    assert shown == rebuilt_shown == 3
    shot(page, "auditor-3-log-month")


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
