"""Alerts end to end on a small hand-built ISP: reports → findings → attribution (under the basis
the decision allows) → cases → queued alerts → a real SMTP server (aiosmtpd on 127.0.0.1).

Subscribers (all with an e-mail address):

* ``s1`` held 10.16.0.5 from 00:00 to 01:00, ``s2`` the same address from 01:00 (reassignment);
* ``s3`` holds 10.16.0.9 and has opted out of M5 and M9;
* ``s4`` holds 10.16.0.10, English;
* behind CGNAT, public 10.64.0.2: ports 1024-1535 go to inside 100.64.0.29, held by ``s5``,
  ports 1536-2047 to inside 100.64.0.30, held by ``s6``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from mamori.act.notify import notification_status, queue_alerts, send_queued
from mamori.config import AlertsConfig, MamoriConfig, SmtpConfig, WebConfig
from mamori.governance import Governance, purge
from mamori.governance.tokens import verify_consent_token
from mamori.ingest.reports import load_report, parse_report_text
from mamori.schemas import ALLOCATIONS, FINDINGS, MATCHES, SUBSCRIBERS
from tests.act.conftest import SmtpServer

pytestmark = pytest.mark.slow  # a store and a live SMTP server per test

T0 = datetime(2026, 11, 2, tzinfo=UTC)
ACTOR = "test:desk"


def _t(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def _config(store: Path, port: int, **alerts: Any) -> MamoriConfig:
    return MamoriConfig(
        store=store,
        smtp=SmtpConfig(host="127.0.0.1", port=port),
        web=WebConfig(base_url="https://portal.isp.example", secret_key="k" * 48),
        alerts=AlertsConfig(retry_after_s=60, smtp_timeout_s=5, **alerts),
        address_plan=[  # type: ignore[arg-type]
            {"name": "dyn", "kind": "dynamic", "prefixes": ["10.16.0.0/12"]},
            {"name": "cgn", "kind": "cgnat", "prefixes": ["10.64.0.0/16"]},
        ],
    )


def _setup(gov: Governance) -> None:
    subs = [
        ("s1", "ja"),
        ("s2", "ja"),
        ("s3", "ja"),
        ("s4", "en"),
        ("s5", "ja"),
        ("s6", "en"),
    ]
    gov.write_registry(
        "subscribers",
        pa.Table.from_pylist(
            [
                {
                    "updated": _t(-48),
                    "subscriber_id": s,
                    "contract": "home",
                    "email": f"{s}@mail.example.jp",
                    "language": lang,
                }
                for s, lang in subs
            ],
            schema=SUBSCRIBERS.arrow,
        ),
        ACTOR,
        source="test",
    )
    alloc = [
        ("10.16.0.5", _t(-1), _t(1), "s1"),
        ("10.16.0.5", _t(1), _t(2), "s2"),
        ("10.16.0.9", _t(-1), None, "s3"),
        ("10.16.0.10", _t(-1), None, "s4"),
        ("100.64.0.29", _t(-1), None, "s5"),
        ("100.64.0.30", _t(-1), None, "s6"),
    ]
    gov.write_registry(
        "allocations",
        pa.Table.from_pylist(
            [
                {
                    "start": s,
                    "end": e,
                    "addr": a,
                    "port_start": None,
                    "port_end": None,
                    "subscriber_id": sub,
                    "session_id": f"sess-{i}",
                    "source": "radius",
                }
                for i, (a, s, e, sub) in enumerate(alloc)
            ],
            schema=ALLOCATIONS.arrow,
        ),
        ACTOR,
        source="radius",
    )
    blocks = [(1024, 1535, "100.64.0.29"), (1536, 2047, "100.64.0.30")]
    gov.write_registry(
        "allocations",
        pa.Table.from_pylist(
            [
                {
                    "start": _t(-1),
                    "end": None,
                    "addr": "10.64.0.2",
                    "port_start": lo,
                    "port_end": hi,
                    "subscriber_id": None,
                    "inside_addr": inside,
                    "session_id": f"blk-{lo}",
                    "source": "cgnat-syslog",
                }
                for lo, hi, inside in blocks
            ],
            schema=ALLOCATIONS.arrow,
        ),
        ACTOR,
        source="cgnat-syslog",
    )
    for m in ("M5", "M9"):
        gov.consent.set("s3", m, False, actor="s3", channel="web", at=_t(-24))


def _report(gov: Governance, kind: str, rows: list[tuple[str, float, int | None, str]]) -> None:
    text = "timestamp,ip,port,label\n" + "".join(
        f"{_t(h).isoformat()},{ip},{'' if p is None else p},{label}\n" for ip, h, p, label in rows
    )
    load_report(gov, parse_report_text(text, "csv"), kind, actor=ACTOR, source="test", now=_t(3))


@pytest.fixture
def gov(tmp_path: Path, smtp_server: SmtpServer) -> Iterator[Governance]:
    g = Governance(_config(tmp_path / "store", smtp_server.port))
    _setup(g)
    yield g
    g.close()


def _to(server: SmtpServer) -> list[str]:
    return sorted(str(m["To"]) for m in server.messages)


def _sent_rows(gov: Governance, measure: str, basis: str = "consent") -> list[dict[str, Any]]:
    just = None if basis == "consent" else "test"
    return (
        gov.open(measure, "notifications", None, ACTOR, basis=basis, justification=just)
        .arrow()
        .to_pylist()
    )


def test_reassigned_address_goes_to_who_held_it_then(
    gov: Governance, smtp_server: SmtpServer
) -> None:
    _report(
        gov,
        "infected",
        [
            ("10.16.0.5", 0.5, 40001, "mirai"),  # s1
            ("10.16.0.5", 0.6, 40002, "mirai"),  # s1 again: same case, same alert
            ("10.16.0.5", 1.5, 40003, "mirai"),  # s2
            ("10.16.0.10", 1.5, 40004, "emotet"),  # s4
            ("10.16.0.99", 1.5, 40005, "mirai"),  # nobody: unknown, never a guess
        ],
    )
    [q] = queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(3))
    assert q.attribution == {"ok": 4, "unknown": 1}
    assert (q.cases_opened, q.queued) == (3, 3)
    s = send_queued(gov, actor=ACTOR, now=_t(3))
    assert s.states == {"sent": 3}
    assert _to(smtp_server) == ["s1@mail.example.jp", "s2@mail.example.jp", "s4@mail.example.jp"]
    by_to = {str(m["To"]): m for m in smtp_server.messages}
    body1 = by_to["s1@mail.example.jp"].get_content()
    assert (
        "10.16.0.5" in body1 and "09:30" in body1 and "09:36" in body1 and "10:30" not in body1
    )  # JST
    assert "2 件" in body1 or "2件" in body1
    assert "10:30" in by_to["s2@mail.example.jp"].get_content()
    # nothing new: a second run queues and sends nothing
    [q2] = queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(4))
    assert q2.findings == 0 and q2.queued == 0
    assert send_queued(gov, actor=ACTOR, now=_t(4)).attempted == 0
    assert len(smtp_server.messages) == 3


def test_mail_content_languages_and_consent_link(gov: Governance, smtp_server: SmtpServer) -> None:
    _report(gov, "infected", [("10.16.0.5", 0.5, 1, "mirai"), ("10.16.0.10", 1.5, 2, "emotet")])
    queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(3))
    send_queued(gov, actor=ACTOR, now=_t(3))
    by_to = {str(m["To"]): m for m in smtp_server.messages}
    ja, en = by_to["s1@mail.example.jp"], by_to["s4@mail.example.jp"]
    assert "感染" in str(ja["Subject"]) and "infected" in str(en["Subject"])
    for msg, sub, words in (
        (ja, "s1", ["確認された内容", "お願いしたい対処", "理由", "設定の変更", "mirai"]),
        (
            en,
            "s4",
            [
                "What we observed",
                "What to do",
                "Why we are contacting you",
                "Changing this setting",
                "emotet",
            ],
        ),
    ):
        body = msg.get_content()
        for w in words:
            assert w in body, (sub, w)
        steps = [line for line in body.splitlines() if line.lstrip()[:2] in ("1.", "2.", "3.")]
        assert [line[:4] for line in steps] == ["  1.", "  2.", "  3."], steps
        link = next(x for x in body.split() if x.startswith("https://portal.isp.example/consent/"))
        token = link.rsplit("/", 1)[1]
        assert verify_consent_token(gov.config, token) == sub
        assert msg["Message-ID"].startswith("<N-")


def test_opted_out_not_looked_up_under_consent(gov: Governance, smtp_server: SmtpServer) -> None:
    _report(gov, "infected", [("10.16.0.9", 0.5, 1, "mirai"), ("10.16.0.10", 0.5, 2, "mirai")])
    [q] = queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(3))
    assert q.decision.basis == "consent"
    assert q.attribution == {"ok": 1, "unknown": 1}
    send_queued(gov, actor=ACTOR, now=_t(3))
    assert _to(smtp_server) == ["s4@mail.example.jp"]
    rows = gov.open(
        "M5", "notifications", None, ACTOR, basis="justified-act", justification="test: check"
    ).arrow()
    assert "s3" not in rows.column("subscriber_id").to_pylist()
    # every lookup was made under consent, none under justified act, and none named s3
    lookups = [e for e in gov.audit.entries() if e.event == "attribute"]
    assert lookups and {e.legal_basis for e in lookups} == {"consent"}
    named = {s for e in lookups for s in json.loads(e.detail or "{}")["subscribers"]}
    assert named == {"s4"}


def test_behind_cgnat_the_port_decides(gov: Governance, smtp_server: SmtpServer) -> None:
    _report(
        gov,
        "infected",
        [
            ("10.64.0.2", 0.5, 1500, "mirai"),  # s5's block
            ("10.64.0.2", 0.5, 1600, "mirai"),  # s6's block
            ("10.64.0.2", 0.5, 3000, "mirai"),  # no block: unknown
        ],
    )
    _report(gov, "vulnerable", [("10.64.0.2", 0.5, None, "telnet")])  # no port: cannot say
    out = {q.measure: q for q in queue_alerts(gov, actor=ACTOR, measures=["M5", "M9"], now=_t(3))}
    assert out["M5"].attribution == {"ok": 2, "unknown": 1}
    assert out["M9"].attribution == {"port-required": 1} and out["M9"].queued == 0
    send_queued(gov, actor=ACTOR, now=_t(3))
    assert _to(smtp_server) == ["s5@mail.example.jp", "s6@mail.example.jp"]
    for m in smtp_server.messages:
        assert "10.64.0.2" in m.get_content()


def test_justified_act_only_when_the_risk_test_holds(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    events = [("10.16.0.9", 0.5, 1, "mirai"), ("10.16.0.10", 0.5, 2, "mirai")]
    for threshold, expect in ((5, ["s4"]), (1, ["s3", "s4"])):
        smtp_server.messages.clear()
        g = Governance(
            _config(
                tmp_path / f"store{threshold}",
                smtp_server.port,
                m5_infected_devices_threshold=threshold,
            )
        )
        _setup(g)
        _report(g, "infected", events)
        [q] = queue_alerts(g, actor=ACTOR, measures=["M5"], now=_t(3))
        assert q.decision.risk_test_holds == (threshold == 1)
        assert q.decision.inputs["devices"] == 2
        send_queued(g, actor=ACTOR, now=_t(3))
        assert _to(smtp_server) == [f"{s}@mail.example.jp" for s in expect]
        rows = {r["subscriber_id"]: r for r in _sent_rows(g, "M5", "justified-act")}
        assert rows["s4"]["legal_basis"] == "consent"
        if threshold == 1:
            assert rows["s3"]["legal_basis"] == "justified-act"
            d = json.loads(rows["s3"]["decision"])
            assert d["risk_test_holds"] and d["inputs"] == {
                "devices": 2,
                "threshold": 1,
                "window_hours": 24.0,
            }
            assert "justified-act" in json.loads(rows["s3"]["decision"])["basis_used"]
        g.close()


def test_takedown_is_emergency_and_vulnerable_rests_on_consent(
    gov: Governance, smtp_server: SmtpServer
) -> None:
    _report(gov, "takedown", [("10.16.0.9", 0.5, 5000, ""), ("10.16.0.10", 0.7, 5001, "")])
    _report(gov, "vulnerable", [("10.16.0.9", 0.5, 23, "telnet"), ("10.16.0.5", 0.5, 23, "telnet")])
    out = {q.measure: q for q in queue_alerts(gov, actor=ACTOR, measures=["M6", "M9"], now=_t(3))}
    assert out["M6"].decision.basis == "emergency" and out["M6"].queued == 2
    assert out["M9"].decision.basis == "consent" and out["M9"].queued == 1
    send_queued(gov, actor=ACTOR, now=_t(3))
    assert _to(smtp_server) == ["s1@mail.example.jp", "s3@mail.example.jp", "s4@mail.example.jp"]
    vul = next(m for m in smtp_server.messages if str(m["To"]) == "s1@mail.example.jp")
    assert "脆弱性" in str(vul["Subject"])


def test_smtp_outage_loses_nothing_and_sends_once(gov: Governance, smtp_server: SmtpServer) -> None:
    _report(gov, "infected", [("10.16.0.5", 0.5, 1, "mirai"), ("10.16.0.10", 0.5, 2, "mirai")])
    queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(3))
    smtp_server.stop()
    down = send_queued(gov, actor=ACTOR, now=_t(3))
    assert down.server_down and down.states == {"failed": 1}
    st = notification_status(gov, actor=ACTOR, measures=["M5"])["M5"]["notifications"]
    assert st == {"failed": 1, "queued": 1}
    # before the retry delay nothing is attempted, even with the server back
    smtp_server.start()
    early = send_queued(gov, actor=ACTOR, now=_t(3) + timedelta(seconds=10))
    assert early.states == {"sent": 1}  # the still-queued one goes; the failed one waits
    later = send_queued(gov, actor=ACTOR, now=_t(3) + timedelta(minutes=5))
    assert later.states == {"sent": 1}
    again = send_queued(gov, actor=ACTOR, now=_t(4))
    assert again.attempted == 0
    assert _to(smtp_server) == ["s1@mail.example.jp", "s4@mail.example.jp"]
    st = notification_status(gov, actor=ACTOR, measures=["M5"])["M5"]
    assert st["notifications"] == {"sent": 2}
    attempts = sorted(r["attempts"] for r in _sent_rows(gov, "M5") if r["state"] == "sent")
    assert attempts == [1, 2]  # the one that failed went out on its second attempt


def test_bounce_and_rate_limit(tmp_path: Path, smtp_server: SmtpServer) -> None:
    g = Governance(_config(tmp_path / "store", smtp_server.port, rate_limit_per_hour=1))
    _setup(g)
    smtp_server.recorder.refuse.add("s4@mail.example.jp")
    _report(g, "infected", [("10.16.0.5", 0.5, 1, "mirai"), ("10.16.0.10", 0.5, 2, "mirai")])
    queue_alerts(g, actor=ACTOR, measures=["M5"], now=_t(3))
    first = send_queued(g, actor=ACTOR, now=_t(3))
    assert first.attempted == 1 and first.deferred_by_rate_limit == 1
    second = send_queued(g, actor=ACTOR, now=_t(3) + timedelta(minutes=30))
    assert second.attempted == 0 and second.deferred_by_rate_limit == 1
    third = send_queued(g, actor=ACTOR, now=_t(4) + timedelta(minutes=1))
    assert third.attempted == 1
    st = notification_status(g, actor=ACTOR, measures=["M5"])["M5"]["notifications"]
    assert st == {"sent": 1, "bounced": 1}
    g.close()


def test_events_behind_a_sent_alert_are_purged_after_grace(
    gov: Governance, smtp_server: SmtpServer
) -> None:
    _report(gov, "infected", [("10.16.0.5", 0.5, 1, "mirai"), ("10.16.0.10", 0.5, 2, "mirai")])
    queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(3))
    smtp_server.recorder.refuse.add("s4@mail.example.jp")  # s4's alert bounces: not "sent"
    send_queued(gov, actor=ACTOR, now=_t(3))

    def kept() -> list[str]:
        t = gov.open("M5", "matches", ["ts", "ip", "notification_id"], ACTOR).arrow()
        return sorted(t.column("ip").to_pylist())

    assert kept() == ["10.16.0.10", "10.16.0.5"]
    grace = gov.config.retention.matches_after_alert_days
    purge(gov, actor=ACTOR, now=_t(3) + timedelta(days=grace) - timedelta(hours=1))
    assert kept() == ["10.16.0.10", "10.16.0.5"]
    rep = purge(gov, actor=ACTOR, now=_t(3) + timedelta(days=grace, hours=1))
    assert rep.matches_after_alert == 1
    assert kept() == ["10.16.0.10"]
    purges = [e for e in gov.audit.entries() if e.event == "purge" and e.dataset == "matches"]
    assert purges and json.loads(purges[-1].detail or "{}")["rows"] == 1


def test_dry_run_stores_nothing(gov: Governance, smtp_server: SmtpServer) -> None:
    _report(gov, "infected", [("10.16.0.5", 0.5, 1, "mirai")])
    [q] = queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(3), dry_run=True)
    assert q.queued == 1 and q.alerts[0]["basis"] == "consent"
    [q] = queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(3))
    assert q.queued == 1


def test_own_detections_use_their_match_records(gov: Governance, smtp_server: SmtpServer) -> None:
    """M4's matching writes a finding per infected address+port and the matched communications;
    the alert uses each match's own time (the address changed hands in between), and once the
    alert is sent plus grace, M4's match records go as well."""
    findings = pa.Table.from_pylist(
        [
            {
                "detected": _t(2.5),
                "finding_id": "F-1",
                "kind": "infected",
                "method": "reputation",
                "ip": "10.16.0.5",
                "port": None,
                "protocol": "tcp",
                "score": 0.9,
                "first_seen": _t(0.2),
                "last_seen": _t(1.7),
                "measure": "M4",
                # as reputation_match writes it: every family the matched entries name
                "evidence": '{"malware": ["Emotet", "pc-emotet-like"], "matches": 2}',
            },
        ],
        schema=FINDINGS.arrow,
    )
    gov.write("M4", "findings", findings, ACTOR)
    matches = pa.Table.from_pylist(
        [
            {
                "ts": _t(0.2),
                "ip": "10.16.0.5",
                "port": 50001,
                "indicator": "198.51.100.7:443",
                "finding_id": "F-1",
                "notification_id": None,
            },
            {
                "ts": _t(1.7),
                "ip": "10.16.0.5",
                "port": 50002,
                "indicator": "198.51.100.7:443",
                "finding_id": "F-1",
                "notification_id": None,
            },
        ],
        schema=MATCHES.arrow,
    )
    gov.write("M4", "matches", matches, ACTOR)
    [q] = queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(3))
    assert (q.findings, q.events, q.queued) == (1, 2, 2)
    send_queued(gov, actor=ACTOR, now=_t(3))
    assert _to(smtp_server) == ["s1@mail.example.jp", "s2@mail.example.jp"]
    by_to = {str(m["To"]): m.get_content() for m in smtp_server.messages}
    assert (
        "09:12（日本時間）" in by_to["s1@mail.example.jp"]
        and "（emotet）" in by_to["s1@mail.example.jp"]
    )
    assert "10:42" in by_to["s2@mail.example.jp"]
    grace = gov.config.retention.matches_after_alert_days
    purge(gov, actor=ACTOR, now=_t(3) + timedelta(days=grace, hours=1))
    left = gov.open("M5", "matches", ["ts", "notification_id"], ACTOR).arrow()
    assert left.num_rows == 0


def test_repeated_events_escalate_without_new_mail(
    gov: Governance, smtp_server: SmtpServer
) -> None:
    _report(gov, "infected", [("10.16.0.10", 0.5, 1, "mirai")])
    queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(3))
    send_queued(gov, actor=ACTOR, now=_t(3))
    for k, h in enumerate((4, 5, 6)):  # the device keeps calling home after the alert
        text = f"timestamp,ip,port,label\n{_t(h).isoformat()},10.16.0.10,{10 + k},mirai\n"
        load_report(
            gov,
            parse_report_text(text, "csv"),
            "infected",
            actor=ACTOR,
            source="test",
            now=_t(h + 0.5),
        )
        [q] = queue_alerts(gov, actor=ACTOR, measures=["M5"], now=_t(h + 0.5))
        assert (q.cases_updated, q.queued, q.escalated) == (1, 0, int(k == 2))
    assert len(smtp_server.messages) == 1
    st = notification_status(gov, actor=ACTOR, measures=["M5"])["M5"]
    assert st == {"notifications": {"sent": 1}, "cases": {"escalated": 1}}
    # after the notification interval, the next event brings a reminder
    later = _t(3) + timedelta(hours=gov.config.alerts.interval_hours + 1)
    text = f"timestamp,ip,port,label\n{later.isoformat()},10.16.0.10,99,mirai\n"
    load_report(
        gov, parse_report_text(text, "csv"), "infected", actor=ACTOR, source="test", now=later
    )
    [q] = queue_alerts(gov, actor=ACTOR, measures=["M5"], now=later)
    assert q.queued == 1
    send_queued(gov, actor=ACTOR, now=later)
    assert len(smtp_server.messages) == 2
