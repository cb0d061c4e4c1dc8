"""People's verdicts on findings: a finding is a candidate until an analyst confirms it, rejects
it, or marks it a false positive — or, for a C&C finding, until a feed lists the endpoint later
(*corroborated*, recorded by :meth:`Reviews.corroborate`, never an analyst's choice).

Verdicts are appended to ``<store>/_state/reviews/reviews.jsonl`` (finding id, measure, verdict,
who, when — never the address the finding is about) and audited as ``review`` events under the
finding's measure, which is where the transparency report counts findings rejected. The latest
verdict on a finding is its review state. ``mamori purge`` drops verdicts older than
``retention.findings`` days (:meth:`Reviews.prune`): by then their findings are gone too.

Verdicts live with the detectors because they are labels: ``detect c2`` leaves out the endpoints
people rejected, and ``detect c2 --train`` learns from what they confirmed and rejected.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from mamori.governance import Governance

__all__ = [
    "CORROBORATED",
    "SHAREABLE",
    "STATES",
    "VERDICTS",
    "WITHDRAWN",
    "Review",
    "Reviews",
]

#: what an analyst may decide
VERDICTS = ("confirmed", "rejected", "false-positive")
#: a feed listed the endpoint after we found it
CORROBORATED = "corroborated"
#: a share action about the finding ended or expired: its endpoint no longer leaves, and the
#: next export carries a withdrawal entry for it (:mod:`mamori.act.share_action`)
WITHDRAWN = "withdrawn"
#: every review state a finding can have besides ``candidate``
STATES = (*VERDICTS, CORROBORATED, WITHDRAWN)
#: the states whose C&C endpoints may leave the ISP without an explicit, audited flag
SHAREABLE = ("confirmed", CORROBORATED)


@dataclass(frozen=True)
class Review:
    ts: datetime
    finding_id: str
    measure: str
    verdict: str
    actor: str


class Reviews:
    def __init__(self, gov: Governance) -> None:
        self._gov = gov
        d = gov.state_dir("reviews")
        self.path = d / "reviews.jsonl"
        self._lock = d / ".reviews.lock"
        self._cache: tuple[int, int, dict[str, Review]] | None = None

    def record(self, finding_id: str, measure: str, verdict: str, actor: str) -> Review:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
        return self._append(finding_id, measure, verdict, actor, {})

    def corroborate(self, finding_id: str, measure: str, actor: str, source: str) -> Review:
        """A feed (``source``) now lists what the finding names: audited as a ``review`` whose
        decision is ``corroborated``."""
        return self._append(finding_id, measure, CORROBORATED, actor, {"source": source})

    def share(
        self, finding_id: str, measure: str, actor: str, action_id: str, *, withdrawn: bool
    ) -> Review:
        """A share action about the finding was applied (the finding is ``confirmed``: approved
        by a second person) or ended (``withdrawn``); audited naming the action."""
        verdict = WITHDRAWN if withdrawn else "confirmed"
        return self._append(finding_id, measure, verdict, actor, {"share_action": action_id})

    def _append(self, finding_id: str, measure: str, verdict: str, actor: str,
                extra: dict[str, str]) -> Review:  # fmt: skip
        r = Review(datetime.now(UTC), finding_id, measure, verdict, actor)
        line = json.dumps({**r.__dict__, "ts": r.ts.isoformat()}, sort_keys=True) + "\n"
        with self._lock.open("a") as lh:
            fcntl.flock(lh, fcntl.LOCK_EX)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
        self._gov.audit.append(
            actor=actor,
            event="review",
            measure=measure,
            dataset="findings",
            detail={"finding": finding_id, "decision": verdict, **extra},
        )
        return r

    def latest(self) -> dict[str, Review]:
        """The latest verdict per finding id."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        if self._cache is not None and self._cache[:2] == (st.st_size, st.st_mtime_ns):
            return self._cache[2]
        out: dict[str, Review] = {}
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    raw = json.loads(line)
                    out[raw["finding_id"]] = Review(
                        datetime.fromisoformat(raw["ts"]),
                        raw["finding_id"],
                        raw["measure"],
                        raw["verdict"],
                        raw["actor"],
                    )
        self._cache = (st.st_size, st.st_mtime_ns, out)
        return out

    def column(self, finding_ids: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
        """The review state of each finding id (``candidate`` where nobody has reviewed it)."""
        latest = self.latest()
        if not latest:
            return pa.array(["candidate"] * len(finding_ids), pa.string())
        keys = pa.array(list(latest), pa.string())
        values = pa.array([r.verdict for r in latest.values()], pa.string())
        idx = pc.index_in(finding_ids, value_set=keys)
        return pc.fill_null(pc.take(values, idx), "candidate")

    def prune(self, actor: str, *, now: datetime | None = None, dry_run: bool = False) -> int:
        """Drop verdicts older than ``retention.findings`` days; returns how many (audited)."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=self._gov.config.retention.findings)
        with self._lock.open("a") as lh:
            fcntl.flock(lh, fcntl.LOCK_EX)
            try:
                lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            except FileNotFoundError:
                lines = []
            kept = [
                ln
                for ln in lines
                if ln.strip() and datetime.fromisoformat(json.loads(ln)["ts"]) >= cutoff
            ]
            gone = sum(1 for ln in lines if ln.strip()) - len(kept)
            if gone and not dry_run:
                tmp = self.path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.writelines(kept)
                os.replace(tmp, self.path)
                self._cache = None
        self._gov.audit.append(
            actor=actor,
            event="purge" if not dry_run else "purge-dry-run",
            detail={"store": "reviews", "verdicts": gone, "cutoff": cutoff.isoformat()},
        )
        return gone
