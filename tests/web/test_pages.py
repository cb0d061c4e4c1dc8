"""What each role sees on its pages (over real HTTP), and the abuse desk's decisions."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator

import httpx
import pytest
from markupsafe import escape

from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.governance.roles import Role
from mamori.governance.tokens import consent_token
from tests.web.conftest import ACCOUNTS, ADDRESSES, C2_IP, INFECTED_IP, csrf_of, login

_TOKEN = re.compile(r"[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*")


def addresses_in(text: str) -> list[str]:
    """Every IPv4/IPv6 address written in ``text``."""
    found = []
    for tok in _TOKEN.findall(text):
        try:
            found.append(str(ipaddress.ip_address(tok.strip(".:"))))
        except ValueError:
            continue
    return found


@pytest.fixture(scope="module")
def as_role(base_url: str) -> Iterator[dict[Role, httpx.Client]]:
    out = {}
    for role, name in ACCOUNTS.items():
        c = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)
        login(c, name)
        out[role] = c
    yield out
    for c in out.values():
        c.close()


def test_address_finder_finds_both_families() -> None:
    assert addresses_in("a 10.0.0.1, b [2001:db8::1]: at 14:03:26") == ["10.0.0.1", "2001:db8::1"]


def test_findings_show_evidence_method_score_and_basis(as_role: dict[Role, httpx.Client]) -> None:
    page = as_role[Role.ANALYST].get("/findings").text
    assert C2_IP in page and INFECTED_IP in page
    assert "correlation" in page and "0.97" in page
    # evidence as words, not JSON
    assert "hosts converging on it" in page and "beacon period (seconds)" in page
    assert "converging_hosts" not in page and "{&#34;" not in page
    assert "M2 — justified-act" in page and "M4 — consent" in page
    only_c2 = as_role[Role.ANALYST].get("/findings", params={"kind": "c2"}).text
    assert C2_IP + ":443/tcp" in only_c2 and INFECTED_IP not in only_c2


@pytest.mark.parametrize(
    ("action_id", "status"),
    [("act-rpz-1", "proposed"), ("act-acl-1", "applied"), ("act-refl-1", "expired")],
)
def test_actions_table_shows_each_actions_status(
    as_role: dict[Role, httpx.Client], action_id: str, status: str
) -> None:
    page = as_role[Role.ABUSE_DESK].get("/actions", params={"f.status": status}).text
    assert f'data-action="{action_id}" data-status="{status}"' in page
    assert page.count("<tr data-action=") == 1


def test_operator_decides_network_actions_only(as_role: dict[Role, httpx.Client]) -> None:
    page = as_role[Role.OPERATOR].get("/actions").text
    row = page.split('data-action="act-rpz-1"')[1].split("</tr>")[0]
    assert "act-acl-1" in page and "</button>" not in row  # an RPZ zone: not the operator's
    csrf = csrf_of(page)
    r = as_role[Role.OPERATOR].post("/actions/act-rpz-1/approve", data={"csrf": csrf})
    assert r.status_code == 403 and "decided by analysts and the desk" in r.text
    r = as_role[Role.ABUSE_DESK].post(
        "/actions/act-acl-1/end",
        data={"csrf": csrf_of(as_role[Role.ABUSE_DESK].get("/actions").text)},
    )
    assert r.status_code == 403 and "decided by operators" in r.text


def _status(c: httpx.Client, action_id: str) -> str:
    page = c.get("/actions").text
    return page.split(f'data-action="{action_id}" data-status="')[1].split('"')[0]


def test_decisions_go_through_the_action_contract(
    as_role: dict[Role, httpx.Client], web_gov: Governance
) -> None:
    c = as_role[Role.ABUSE_DESK]
    before = sum(1 for _ in web_gov.audit.entries())
    csrf = csrf_of(c.get("/actions").text)
    assert c.post("/actions/act-rpz-1/approve", data={"csrf": csrf}).status_code == 303
    assert _status(c, "act-rpz-1") == "approved"
    assert "web:abusedesk1" in c.get("/actions/act-rpz-1").text
    # neither ending nor approving again an approved action is a step of its life cycle (it
    # may still be rejected: taken back before it is in force)
    for refused in ("end", "approve"):
        r = c.post(f"/actions/act-rpz-1/{refused}", data={"csrf": csrf})
        assert r.status_code == 409 and "not a step of the life cycle" in r.text
    # an applied network action (no back end for its kind yet) is ended by an operator
    op = as_role[Role.OPERATOR]
    op_csrf = csrf_of(op.get("/actions").text)
    assert op.post("/actions/act-acl-1/end", data={"csrf": op_csrf}).status_code == 303
    assert _status(c, "act-acl-1") == "ended"
    # past its expiry: shown expired, and it can no longer be ended, only recorded as expired
    r = op.post("/actions/act-refl-1/end", data={"csrf": op_csrf})
    assert r.status_code == 409 and "only be recorded as expired" in r.text
    rows = web_gov.open("M7", "actions", ["action_id", "state", "approved_by"], "test").arrow()
    states = sorted(r["state"] for r in rows.to_pylist() if r["action_id"] == "act-rpz-1")
    assert states == ["approved", "proposed"]  # every version kept
    writes = [
        e
        for e in list(web_gov.audit.entries())[before:]
        if e.event == "write" and e.dataset == "actions"
    ]
    assert [(e.measure, e.actor) for e in writes] == [
        ("M7", "web:abusedesk1"),
        ("M13", "web:operator1"),
    ]
    assert [json.loads(e.detail or "{}")["step"] for e in writes] == ["approved", "ended"]
    assert all(json.loads(e.detail or "{}")["decision"] for e in writes)


def test_unknown_action_or_decision_refused(as_role: dict[Role, httpx.Client]) -> None:
    c = as_role[Role.ANALYST]
    csrf = csrf_of(c.get("/actions").text)
    assert c.post("/actions/nope/approve", data={"csrf": csrf}).status_code == 409
    assert c.post("/actions/act-acl-1/explode", data={"csrf": csrf}).status_code == 409


def test_alerts_show_delivery_state(as_role: dict[Role, httpx.Client]) -> None:
    page = as_role[Role.ABUSE_DESK].get("/alerts").text
    assert "sent: 3" in page and "failed: 1" in page
    assert "sub-0003" in page and "takedown-1" in page


@pytest.mark.parametrize(
    ("q", "present", "absent"),
    [
        (C2_IP, ["correlation", "act-acl-1"], ["n-1"]),
        ("case-77", ["n-1", "n-2"], ["n-3"]),
        ("cc.bad.example", ["act-rpz-1"], ["correlation"]),
        ("x", ["at least 3 characters"], ["act-"]),
    ],
)
def test_search(
    as_role: dict[Role, httpx.Client], q: str, present: list[str], absent: list[str]
) -> None:
    page = as_role[Role.ANALYST].get("/search", params={"q": q}).text
    body = page.split("<main>")[1]
    for p in present:
        assert p in body, p
    for a in absent:
        assert a not in body.split("</form>", 1)[1], a


def test_traffic_overview_is_aggregates(
    as_role: dict[Role, httpx.Client], web_gov: Governance
) -> None:
    page = as_role[Role.OPERATOR].get("/traffic").text
    assert page.count("<svg") == 3
    assert "udp/53" in page and "tcp/443" in page
    assert "192.0.2.1" in page  # exporters are routers, named
    assert INFECTED_IP not in page and C2_IP not in page  # no endpoint of any flow
    last = list(web_gov.audit.entries())
    m14 = [e for e in last if e.measure == "M14" and e.dataset == "flows" and e.event == "access"]
    assert m14 and "src_addr" not in (m14[-1].columns or "")


@pytest.mark.parametrize("path", ["/auditor", "/auditor/log", "/auditor/retention"])
def test_auditor_pages_show_no_addresses(as_role: dict[Role, httpx.Client], path: str) -> None:
    page = as_role[Role.AUDITOR].get(path).text
    assert page.count("<tr") > 2  # not empty
    assert addresses_in(page) == []
    for a in ADDRESSES:
        assert a not in page


def test_auditor_overview_content(as_role: dict[Role, httpx.Client]) -> None:
    page = as_role[Role.AUDITOR].get("/auditor").text
    assert "intact" in page
    assert "the catalogue does not let M3" in page  # the refusal
    assert "M14" in page and "flows" in page
    retention = as_role[Role.AUDITOR].get("/auditor/retention").text
    assert "flows" in retention and "within limit" in retention


def test_admin_adds_account_and_sees_password_once(
    as_role: dict[Role, httpx.Client], base_url: str
) -> None:
    c = as_role[Role.ADMIN]
    csrf = csrf_of(c.get("/admin/users").text)
    r = c.post("/admin/users", data={"csrf": csrf, "name": "newdesk", "role": "abuse-desk"})
    m = re.search(r'id="new-password">([^<]+)<', r.text)
    assert r.status_code == 200 and m
    with httpx.Client(base_url=base_url, follow_redirects=False, timeout=30) as fresh:
        login(fresh, "newdesk", m.group(1))
        assert fresh.get("/alerts").status_code == 200
    assert m.group(1) not in c.get("/admin/users").text
    dup = c.post("/admin/users", data={"csrf": csrf, "name": "newdesk", "role": "analyst"})
    assert dup.status_code == 400 and "already exists" in dup.text


def test_public_notice_from_catalogue(base_url: str, web_gov: Governance) -> None:
    page = httpx.get(base_url + "/", timeout=30).text
    for m in web_gov.catalogue.values():
        assert str(escape(m.name_ja)) in page
        assert str(escape(m.purpose)) in page
        assert f"at most {m.retention_days} days" in page
    assert "All other terms are the same whether or not you consent" in page
    assert "Never payload" not in page and "payload) of communications is never recorded" in page


def test_public_transparency_page_and_downloads(base_url: str) -> None:
    from tests.web.conftest import PERIOD

    with httpx.Client(base_url=base_url, timeout=30) as c:
        page = c.get("/transparency", params={"period": PERIOD}).text
        assert "Transparency report — 2026-11" in page
        row = page.split('id="measures"')[1].split("M5 ")[1].split("</tr>")[0]
        assert re.findall(r'<td data-figure="\w+">(\d+)</td>', row)[:2] == [
            "3",
            "2",
        ]  # alerts, subscribers
        j = c.get("/transparency.json", params={"period": PERIOD})
        assert j.headers["content-type"].startswith("application/json")
        assert j.json()["measures"][4]["alert_subscribers"] == 2
        csv_text = c.get("/transparency.csv", params={"period": PERIOD}).text
        assert csv_text.startswith("period,section,key,metric,value")
        assert c.get("/transparency", params={"period": "2026-13"}).status_code == 400
        assert c.get("/transparency.json", params={"period": "x"}).status_code == 400
    for a in ADDRESSES:
        assert a not in page + j.text + csv_text


@pytest.mark.parametrize(
    ("measure", "state", "message"),
    [
        ("M1", "out", "does not rest on consent"),
        ("M99", "out", "unknown measure"),
        ("M4", "maybe", "in or out"),
    ],
)
def test_consent_change_bad_input(
    base_url: str, web_config: MamoriConfig, measure: str, state: str, message: str
) -> None:
    url = f"/consent/{consent_token(web_config, 'sub-0077')}"
    with httpx.Client(base_url=base_url, timeout=30) as c:
        csrf = csrf_of(c.get(url).text)
        r = c.post(url, data={"csrf": csrf, "measure": measure, "state": state})
        assert r.status_code == 400 and message in r.text


def test_mailbox_shows_mails_as_delivered_to_the_desk_only(
    as_role: dict[Role, httpx.Client], web_config: MamoriConfig
) -> None:
    import smtplib

    from mamori.sim.mailsink import MailSink

    assert web_config.web.mailbox_dir is not None
    with (
        MailSink(web_config.web.mailbox_dir) as sink,
        smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp,
    ):
        smtp.sendmail(
            "abuse@isp.example.net",
            ["s0000042@mail.example.jp"],
            b"Subject: Mamori mailbox check\r\n\r\nconsent link inside\r\n",
        )
    page = as_role[Role.ABUSE_DESK].get("/mailbox")
    assert page.status_code == 200
    assert "Mamori mailbox check" in page.text and "s0000042@mail.example.jp" in page.text
    for role in (Role.ANALYST, Role.OPERATOR, Role.AUDITOR, Role.ADMIN):
        assert as_role[role].get("/mailbox").status_code == 403, role
