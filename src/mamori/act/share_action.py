"""Sharing a C&C finding as an action: proposed from the finding, approved by a second person,
and withdrawn when it ends or expires.

An applied ``share`` action is the analyst's confirmation path for the shared C&C list: applying
it records the finding as ``confirmed`` (:class:`~mamori.detect.reviews.Reviews`, audited as a
``review`` naming the action), so ``mamori share publish``/``export`` include it — the review gate
still lets only confirmed and corroborated endpoints leave. Ending it, or its expiry, records the
finding as ``withdrawn``: the next export leaves the endpoint out of the list and carries a
withdrawal entry for it instead (a revoked STIX indicator, a deleted MISP attribute, a CSV row
marked ``withdrawn``), so whoever took it before learns to drop it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from mamori.act.base import Action, ActionKind
from mamori.detect.reviews import Reviews
from mamori.governance import Governance

__all__ = ["SHARE_MEASURE", "ShareBackend"]

#: the measure a share action is proposed under (sharing the C&C list)
SHARE_MEASURE = "M3"


class ShareBackend:
    """The back end of ``share`` actions: a review verdict on each action's finding."""

    def __init__(self, gov: Governance, actor: str) -> None:
        self._gov = gov
        self._actor = actor

    @property
    def kind(self) -> ActionKind:
        return ActionKind.SHARE

    def render(self, actions: Sequence[Action]) -> list[str]:
        return [f"share {a.target} (finding {a.finding_id}) until {a.expires:%Y-%m-%d %H:%M} UTC"
                for a in actions]  # fmt: skip

    def _measures(self, actions: Sequence[Action]) -> dict[str, str]:
        """The measure each finding was made under (its review is audited under it), read
        under the sharing measure."""
        ids = [a.finding_id for a in actions if a.finding_id]
        if not ids:
            return {}
        grant = self._gov.open(SHARE_MEASURE, "findings", ["finding_id", "measure"], self._actor)
        try:
            t = grant.arrow()
        finally:
            grant.sandbox.close()
        t = t.filter(pc.is_in(t.column("finding_id"), value_set=pa.array(ids, pa.string())))
        return dict(zip(t.column("finding_id").to_pylist(), t.column("measure").to_pylist(),
                        strict=True))  # fmt: skip

    def apply(self, actions: Sequence[Action]) -> None:
        measures = self._measures(actions)
        reviews = Reviews(self._gov)
        for a in actions:
            if a.finding_id:
                reviews.share(a.finding_id, measures.get(a.finding_id) or "M2", self._actor,
                              a.action_id, withdrawn=False)  # fmt: skip

    def withdraw(self, actions: Sequence[Action]) -> None:
        measures = self._measures(actions)
        reviews = Reviews(self._gov)
        for a in actions:
            if a.finding_id:
                reviews.share(a.finding_id, measures.get(a.finding_id) or "M2", self._actor,
                              a.action_id, withdrawn=True)  # fmt: skip
