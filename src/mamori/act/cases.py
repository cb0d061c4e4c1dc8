"""Abuse-desk cases on AbuseIO's model.

Reports and detections are *events* (AbuseIO: incidents → events); events about the same
subscriber and the same cause (``infected:<family>``, ``takedown``, ``vulnerable:<issue>``) belong
to one *case* (AbuseIO: ticket). A case has two separate statuses:

* the desk's (``open`` → ``escalated`` → ``resolved`` / ``closed``), and
* the subscriber's (``none`` → ``notified`` → ``resolved`` / ``ignored``).

A case is alerted at most once per notification interval (``alerts.interval_hours``); events that
arrive in between are attached to the case without a new alert, and once
``alerts.escalate_after_events`` of them have come in after an alert was sent, the case is
escalated to the desk (the subscriber has not fixed it).

Cases are stored as versioned rows in the ``cases`` dataset; the latest ``updated`` wins.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.config import AlertsConfig
from mamori.schemas import CASES

__all__ = ["Case", "attach", "case_id", "latest", "notification_id", "to_table"]


@dataclass(frozen=True)
class Case:
    opened: datetime
    updated: datetime
    case_id: str
    subscriber_id: str
    measure: str
    cause: str
    desk_status: str = "open"
    subscriber_status: str = "none"
    events: int = 0
    events_since_notice: int = 0
    notifications: int = 0
    last_event: datetime | None = None
    last_notified: datetime | None = None
    notification_id: str | None = None
    notification_state: str | None = None
    legal_basis: str | None = None


def next_version_time(now: datetime, previous: datetime | None) -> datetime:
    """``now``, or just after ``previous``: versions must be ordered even within a millisecond."""
    if previous is None or now > previous:
        return now
    return previous + timedelta(milliseconds=1)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def case_id(subscriber_id: str, measure: str, cause: str) -> str:
    return "C-" + _digest(subscriber_id, measure, cause)


def notification_id(case: str, n: int) -> str:
    return "N-" + _digest(case, str(n))


def latest(table: pa.Table, key: str) -> pa.Table:
    """The latest version (by ``updated``) of each ``key`` in a table of versioned rows."""
    if table.num_rows == 0:
        return table
    t = table.sort_by([(key, "ascending"), ("updated", "descending")])
    codes = pc.dictionary_encode(t.column(key).combine_chunks()).indices.to_numpy(
        zero_copy_only=False
    )
    first = np.ones(len(codes), dtype=bool)
    first[1:] = codes[1:] != codes[:-1]
    return t.filter(pa.array(first))


def from_table(table: pa.Table) -> dict[str, Case]:
    return {r["case_id"]: Case(**r) for r in latest(table, "case_id").to_pylist()}


def to_table(cases: list[Case]) -> pa.Table:
    return pa.Table.from_pylist([asdict(c) for c in cases], schema=CASES.arrow)


def attach(
    existing: Case | None,
    *,
    subscriber_id: str,
    measure: str,
    cause: str,
    events: int,
    last_event: datetime,
    basis: str,
    now: datetime,
    cfg: AlertsConfig,
) -> tuple[Case, bool]:
    """The case after ``events`` new events, and whether a new alert is due."""
    if existing is None:
        cid = case_id(subscriber_id, measure, cause)
        return (
            Case(
                opened=now,
                updated=now,
                case_id=cid,
                subscriber_id=subscriber_id,
                measure=measure,
                cause=cause,
                events=events,
                events_since_notice=events,
                notifications=1,
                last_event=last_event,
                notification_id=notification_id(cid, 1),
                notification_state="queued",
                legal_basis=basis,
            ),
            True,
        )
    case = replace(
        existing,
        updated=next_version_time(now, existing.updated),
        events=existing.events + events,
        events_since_notice=existing.events_since_notice + events,
        last_event=max(last_event, existing.last_event or last_event),
    )
    if case.desk_status in ("resolved", "closed"):
        # The desk thought it was over and it is back: reopen it.
        case = replace(case, desk_status="open", subscriber_status="none")
    pending = case.notification_state in ("queued", "failed")
    interval = timedelta(hours=cfg.interval_hours)
    # A pending alert (queued, or failed and to be retried) already covers these events.
    due = not pending and (case.last_notified is None or now - case.last_notified >= interval)
    if due:
        n = case.notifications + 1
        return (
            replace(
                case,
                notifications=n,
                notification_id=notification_id(case.case_id, n),
                notification_state="queued",
                legal_basis=basis,
            ),
            True,
        )
    if (
        case.last_notified is not None
        and case.events_since_notice >= cfg.escalate_after_events
        and case.desk_status == "open"
    ):
        case = replace(case, desk_status="escalated")
    return case, False
