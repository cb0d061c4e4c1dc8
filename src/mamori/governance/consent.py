"""The consent registry: each subscriber's setting per measure, with its full history.

A measure that rests on consent has a default from the terms (``opt-out``: blanket consent, in
until the subscriber says otherwise; ``opt-in``: out until they say yes). Every change is a row in
the ``consent`` dataset (who, when, how) and an audit entry; nothing is ever overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from mamori.governance.measures import Catalogue, Measure
from mamori.schemas import CONSENT, SUBSCRIBERS

if TYPE_CHECKING:
    from mamori.governance.audit import AuditLog
    from mamori.store import DuckDBEngine

__all__ = ["CHANNELS", "ConsentChange", "ConsentError", "ConsentRegistry", "ConsentState"]

CHANNELS = ("web", "cli", "api", "terms", "letter", "phone")


class ConsentError(ValueError):
    """A consent change that cannot be recorded (unknown measure, not consent-based …)."""


@dataclass(frozen=True)
class ConsentChange:
    changed: datetime
    subscriber_id: str
    measure: str
    state: str
    actor: str
    channel: str
    note: str | None


@dataclass(frozen=True)
class ConsentState:
    measure: str
    consented: bool
    since: datetime | None  # None: the default from the terms, never changed
    explicit: bool


class ConsentRegistry:
    def __init__(self, engine: DuckDBEngine, audit: AuditLog, catalogue: Catalogue) -> None:
        self._engine = engine
        self._audit = audit
        self._catalogue = catalogue

    def _measure(self, measure: str) -> Measure:
        m = self._catalogue.get(measure)
        if m is None:
            raise ConsentError(f"unknown measure {measure!r}; measures are M1 … M14")
        if m.consent == "none":
            based = ", ".join(x.id for x in self._catalogue.consent_based())
            raise ConsentError(
                f"{measure} ({m.name}) does not rest on consent, so there is no setting to change; "
                f"consent-based measures: {based}"
            )
        return m

    def set(
        self,
        subscriber_id: str,
        measure: str,
        consented: bool,
        *,
        actor: str,
        channel: str,
        note: str | None = None,
        at: datetime | None = None,
    ) -> ConsentChange:
        """Record a change; it takes effect for every access from ``at`` (default: now)."""
        self._measure(measure)
        if channel not in CHANNELS:
            raise ConsentError(f"unknown channel {channel!r}; allowed: {', '.join(CHANNELS)}")
        if not subscriber_id:
            raise ConsentError("a subscriber id is required")
        when = at or datetime.now(UTC)
        change = ConsentChange(
            when, subscriber_id, measure, "in" if consented else "out", actor, channel, note
        )
        table = pa.Table.from_pylist([change.__dict__], schema=CONSENT.arrow)
        self._engine.write(CONSENT, table)
        self._audit.append(
            actor=actor,
            event="consent",
            measure=measure,
            dataset="consent",
            columns=CONSENT.column_names,
            detail={"subscriber": subscriber_id, "state": change.state, "channel": channel},
        )
        return change

    def history(self, subscriber_id: str, *, actor: str) -> list[ConsentChange]:
        rows = (
            self._engine.sql(
                "SELECT * FROM consent_history WHERE subscriber_id = ? ORDER BY changed, measure",
                [subscriber_id],
                consent_history=self._engine.scan(CONSENT),
            )
            .to_arrow_table()
            .to_pylist()
        )
        self._audit.append(
            actor=actor,
            event="consent-read",
            dataset="consent",
            columns=CONSENT.column_names,
            detail={"subscriber": subscriber_id, "rows": len(rows)},
        )
        return [ConsentChange(**r) for r in rows]

    def current(self, subscriber_id: str, *, actor: str) -> list[ConsentState]:
        return self.current_from(self.history(subscriber_id, actor=actor))

    def current_from(self, hist: list[ConsentChange]) -> list[ConsentState]:
        """Current settings given one subscriber's history (oldest first)."""
        out: list[ConsentState] = []
        for m in self._catalogue.consent_based():
            last = [h for h in hist if h.measure == m.id]
            if last:
                out.append(ConsentState(m.id, last[-1].state == "in", last[-1].changed, True))
            else:
                out.append(ConsentState(m.id, bool(m.consent_default), None, False))
        return out

    def contact(self, subscriber_id: str, *, actor: str) -> tuple[str, str | None] | None:
        """Where to reach a subscriber about their own settings — the contact address and the
        language of the latest directory entry — so the self-service page can send them a
        one-time code. Only the consent registry reads it for this (no measure's purpose), and
        every look-up is audited whether or not the subscriber exists."""
        rows = (
            self._engine.sql(
                "SELECT email, language FROM directory WHERE subscriber_id = ? "
                "ORDER BY updated DESC LIMIT 1",
                [subscriber_id],
                directory=self._engine.scan(
                    SUBSCRIBERS, ["updated", "subscriber_id", "email", "language"]
                ),
            )
            .to_arrow_table()
            .to_pylist()
        )
        found = rows[0] if rows and rows[0]["email"] else None
        self._audit.append(
            actor=actor,
            event="consent-contact",
            dataset="subscribers",
            columns=["subscriber_id", "email", "language"],
            detail={"subscriber": subscriber_id, "found": found is not None},
        )
        return (str(found["email"]), found["language"]) if found else None

    def contacts(self, *, actor: str) -> list[tuple[str, str, str | None]]:
        """Every subscriber's (id, contact address, language) from the latest directory entry,
        for telling subscribers about the consent-based measures and how to opt out (the terms'
        notice). Audited once, with the count."""
        rows = (
            self._engine.sql(
                "SELECT subscriber_id, email, language FROM (SELECT *, row_number() OVER "
                "(PARTITION BY subscriber_id ORDER BY updated DESC) AS n FROM directory) "
                "WHERE n = 1 AND email IS NOT NULL ORDER BY subscriber_id",
                directory=self._engine.scan(
                    SUBSCRIBERS, ["updated", "subscriber_id", "email", "language"]
                ),
            )
            .to_arrow_table()
            .to_pylist()
        )
        self._audit.append(
            actor=actor,
            event="consent-contact",
            dataset="subscribers",
            columns=["subscriber_id", "email", "language"],
            detail={"purpose": "notice", "rows": len(rows)},
        )
        return [(r["subscriber_id"], r["email"], r["language"]) for r in rows]

    def blocked_sql(self, measure: Measure, source: str) -> str:
        """SQL over ``source`` (this measure's consent rows) giving (subscriber_id, s, e): periods the subscriber is out.

        A subscriber who is out *now* is out for all time: their past traffic is not processed
        either. For opt-in measures the time before the first "in" is out, and subscribers without
        any record are handled by the caller (``default_out``).
        """
        forever_lo = "TIMESTAMPTZ '0001-01-01 00:00:00+00'"
        forever_hi = "TIMESTAMPTZ '9999-12-31 00:00:00+00'"
        parts = [
            # periods spent out
            f"SELECT subscriber_id, changed AS s, coalesce(next_change, {forever_hi}) AS e "
            "FROM timeline WHERE state = 'out'",
            # out now: out for all time
            f"SELECT subscriber_id, {forever_lo} AS s, {forever_hi} AS e FROM timeline "
            "WHERE next_change IS NULL AND state = 'out'",
        ]
        if measure.consent_default is False:
            parts.append(
                f"SELECT subscriber_id, {forever_lo} AS s, min(changed) AS e FROM timeline "
                "GROUP BY subscriber_id"
            )
        sql = (
            "WITH timeline AS (SELECT subscriber_id, changed, state, "
            "lead(changed) OVER (PARTITION BY subscriber_id ORDER BY changed) AS next_change "
            f"FROM {source}) " + " UNION ALL ".join(parts)
        )
        return sql
