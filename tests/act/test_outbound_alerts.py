"""Outbound attacks and open reflectors end to end (issue 16): flows → DDoS / reflection findings
→ the senders (``attack-source``, M13) and the reflector (M9 ``vulnerable``) → attribution →
alerts through a real SMTP server, each with its legal basis stored.

On the hand-built ISP of ``test_notify``: ``s3`` (10.16.0.9, opted out of M5 and M9) and ``s4``
(10.16.0.10, English) each send 1,500 pps at an outside victim — no source crosses the
2,000 pps threshold, the victim (3,000 pps) does; ``s1`` (10.16.0.5) runs an open resolver
abused against another outside address.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest

from mamori.act.notify import queue_alerts, send_queued
from mamori.detect.base import Window
from mamori.detect.ddos import DdosDetector, DdosParams
from mamori.detect.reflection import ReflectionDetector
from mamori.governance import Governance
from tests.act.conftest import SmtpServer
from tests.act.test_notify import ACTOR, _sent_rows, _t, _to, gov  # noqa: F401 (fixture)
from tests.conftest import table

pytestmark = pytest.mark.slow  # a store and a live SMTP server per test

VICTIM = "198.51.100.7"
REFLECTED = "203.0.113.9"


def _rec(src: str, dst: str, sport: int, dport: int, at_s: float, packets: int, nbytes: int,
         rate: int = 100) -> dict[str, Any]:  # fmt: skip
    start = _t(0.5) + timedelta(seconds=at_s)
    return {
        "time_start": start,
        "time_end": start + timedelta(seconds=0.9),
        "src_addr": src,
        "dst_addr": dst,
        "src_port": sport,
        "dst_port": dport,
        "protocol": 17,
        "tcp_flags": 0,
        "packets": packets,
        "bytes": packets * nbytes,
        "sampling_rate": rate,
    }


def _flows(g: Governance) -> None:
    rows = []
    for s in range(120):
        # 15 sampled packets a second at 1/100 = 1,500 pps from each of two subscribers
        rows += [_rec(a, VICTIM, 40000, 80, s, 15, 512) for a in ("10.16.0.9", "10.16.0.10")]
        # and an outside host nobody attacks, for contrast
        rows.append(_rec("10.16.0.10", "192.0.2.80", 40001, 443, s, 1, 100))
    for s in range(0, 120, 2):
        # s1's resolver: 3 sampled answers of 1,400 B per 2 s (150/s) to a spoofed query of 64 B
        rows.append(_rec("10.16.0.5", REFLECTED, 53, 3333, s, 3, 1400))
        rows.append(_rec(REFLECTED, "10.16.0.5", 3333, 53, s, 1, 64))
    t = table(rows)
    ms = pa.timestamp("ms", tz="UTC")
    for c in ("time_start", "time_end"):
        t = t.set_column(t.schema.get_field_index(c), c, t.column(c).cast(ms))
    g.write("M1", "flows", t, "collector")


def test_attack_senders_are_asked_to_stop_and_reflector_owner_alerted(
    gov: Governance,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    _flows(gov)
    run = DdosDetector(DdosParams(threshold_pps=2000)).run(gov, Window(), actor=ACTOR)
    attacks = run.findings.to_pylist()
    assert [(a["ip"], json.loads(a["evidence"])["scope"]) for a in attacks] == [(VICTIM, "remote")]
    assert run.summary["attack_sources"] == 2
    ReflectionDetector().run(gov, Window(), actor=ACTOR)

    out = {q.measure: q for q in queue_alerts(gov, actor=ACTOR, measures=["M9", "M13"],
                                              now=_t(3))}  # fmt: skip
    # M13 rests on self-defence: the opted-out s3 is asked to stop too; the bystander is not
    assert out["M13"].decision.basis == "self-defence" and out["M13"].queued == 2
    assert out["M13"].looked_up_under == {"self-defence": 2}
    # the reflector's owner: an M9 alert under consent
    assert out["M9"].decision.basis == "consent" and out["M9"].queued == 1
    send_queued(gov, actor=ACTOR, now=_t(3))
    assert _to(smtp_server) == ["s1@mail.example.jp", "s3@mail.example.jp", "s4@mail.example.jp"]
    by_to = {str(m["To"]): m for m in smtp_server.messages}
    assert "attack traffic" in str(by_to["s4@mail.example.jp"]["Subject"])
    assert "攻撃通信" in str(by_to["s3@mail.example.jp"]["Subject"])
    body = by_to["s1@mail.example.jp"].get_content()
    assert "open-reflector:dns" in body and "悪用" in body
    sent = [r for r in _sent_rows(gov, "M13", basis="self-defence") if r["measure"] == "M13"]
    assert len({r["notification_id"] for r in sent}) == 2
    assert {r["legal_basis"] for r in sent} == {"self-defence"}
    decision = json.loads(sent[0]["decision"])
    assert decision["basis_used"] == "self-defence" and decision["measure"] == "M13"
    assert {r["cause"] for r in sent} == {"attack-source:udp"}
