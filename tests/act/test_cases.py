"""Abuse-desk cases: one per subscriber and cause, interval, escalation (AbuseIO's model)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from mamori.act.cases import attach, from_table, to_table
from mamori.config import AlertsConfig

T0 = datetime(2026, 11, 2, tzinfo=UTC)
CFG = AlertsConfig(interval_hours=24, escalate_after_events=3)


def _attach(existing, n: int, now: datetime):  # type: ignore[no-untyped-def]
    return attach(
        existing,
        subscriber_id="s1",
        measure="M5",
        cause="infected:mirai",
        events=n,
        last_event=now,
        basis="consent",
        now=now,
        cfg=CFG,
    )


def test_lifecycle() -> None:
    case, alert = _attach(None, 2, T0)
    assert alert and case.notifications == 1 and case.notification_state == "queued"
    assert (case.desk_status, case.subscriber_status) == ("open", "none")
    # more events while the alert is still queued: no second alert
    case, alert = _attach(case, 1, T0 + timedelta(minutes=5))
    assert not alert and case.events == 3 and case.notifications == 1
    # the alert is sent
    case = replace(
        case,
        notification_state="sent",
        last_notified=T0,
        events_since_notice=0,
        subscriber_status="notified",
    )
    # repeated events within the interval: attached, then escalated at the third
    case, alert = _attach(case, 2, T0 + timedelta(hours=1))
    assert not alert and case.desk_status == "open"
    case, alert = _attach(case, 1, T0 + timedelta(hours=2))
    assert not alert and case.desk_status == "escalated"
    # after the interval: a reminder
    case, alert = _attach(case, 1, T0 + timedelta(hours=25))
    assert alert and case.notifications == 2 and case.notification_id is not None
    assert case.events == 7


def test_same_subscriber_and_cause_same_case_id() -> None:
    a, _ = _attach(None, 1, T0)
    b, _ = attach(
        None,
        subscriber_id="s1",
        measure="M5",
        cause="infected:emotet",
        events=1,
        last_event=T0,
        basis="consent",
        now=T0,
        cfg=CFG,
    )
    c, _ = _attach(None, 1, T0 + timedelta(days=3))
    assert a.case_id == c.case_id != b.case_id


def test_versions_latest_wins() -> None:
    a, _ = _attach(None, 1, T0)
    b, _ = _attach(a, 1, T0 + timedelta(hours=1))
    cases = from_table(to_table([b, a]))
    assert cases[a.case_id].events == 2
