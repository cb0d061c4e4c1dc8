"""Each alert is also an ``alert`` action (:mod:`mamori.act.base`), the uniform life-cycle record
beside the notification itself:

* queued — proposed, and approved at once by the legal-basis decision taken for it
  (``approved_by`` = ``policy:<measure>-<basis>``, the decision's reasoning as the justification
  where the basis is not consent);
* sent — applied (the server accepted it), then ended: an alert acts once.

An alert not sent (failed for good, bounced, no address) stays approved until it expires, one
notification interval after it was queued; the sweep (``act expire``) records that. The target is
the notification id — never a subscriber or an address.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mamori.act import base as act
from mamori.act.base import Action, ActionKind, ActionState
from mamori.governance import Governance, LegalBasis

__all__ = ["action_id", "decided", "known", "sent"]

log = logging.getLogger(__name__)


def action_id(notification_id: str) -> str:
    return f"alert-{notification_id}"


def decided(
    gov: Governance,
    measure: str,
    notifications: pa.Table,
    *,
    basis: str,
    justification: str | None,
    reason: str,
    actor: str,
    now: datetime,
) -> list[Action]:
    """Alerts just queued (rows of ``notifications``, all on ``basis``): proposed and approved."""
    valid_for = timedelta(hours=gov.config.alerts.interval_hours)
    proposals = [
        Action(
            action_id=action_id(r["notification_id"]),
            kind=ActionKind.ALERT,
            target=r["notification_id"],
            measure=measure,
            legal_basis=LegalBasis(basis),
            justification=justification,
            created=r["created"],
            expires=r["created"] + valid_for,
            subscribers_affected=1,
        )
        for r in notifications.select(["notification_id", "created"]).to_pylist()
    ]
    proposed = act.propose(gov, proposals, actor, now=now)
    return act.approve(
        gov,
        proposed,
        actor,
        approved_by=f"policy:{measure}-{basis}",
        now=now,
        detail={"decision": reason},
    )


def known(gov: Governance, measure: str, notifications: pa.Table, actor: str) -> dict[str, Action]:
    """The current alert actions of these notifications (read once per batch sent, from the
    oldest one's queueing on: the alert and its action were made together)."""
    if notifications.num_rows == 0:
        return {}
    ids = [action_id(n) for n in notifications.column("notification_id").to_pylist()]
    since = pc.min(notifications.column("created")).as_py()
    return act.current(gov, actor, [measure], ids=ids, since=since)


def sent(
    gov: Governance,
    delivered: Sequence[Mapping[str, Any]],
    actions: Mapping[str, Action],
    *,
    actor: str,
    now: datetime,
) -> list[Action]:
    """Notification versions just written: the sent ones' actions applied, then ended."""
    due: list[Action] = []
    late: list[str] = []
    for r in delivered:
        a = actions.get(action_id(r["notification_id"]))
        if r["state"] != "sent" or a is None or a.state is not ActionState.APPROVED:
            continue  # not sent, or queued before alerts were actions
        if a.due(now):
            late.append(a.action_id)
        else:
            due.append(a)
    if late:
        log.warning(
            "alerts: %d sent after their action expired (%s …); left to the expiry sweep",
            len(late),
            ", ".join(late[:3]),
        )
    applied = act.apply(gov, due, actor, now=now)
    return act.end(gov, applied, actor, now=now, detail={"delivered": True})
