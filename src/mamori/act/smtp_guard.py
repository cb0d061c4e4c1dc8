"""The live SMTP AUTH guard (``mamori act smtp --follow LOG``): follow the mail logs, detect, act,
and withdraw what expires — fail2ban's loop, through governance.

Each step:

1. every followed log is read for what was appended (and stored in ``auth_events``); the queue is
   sampled when a sampler is configured and due;
2. when new events arrived, the detectors run over a short window ending now (brute force without
   its slow rule; the slow rule and compromised accounts on their own, longer cadence);
3. new findings are stored and turned into actions (:func:`mamori.act.smtp.act_on_findings`);
4. due actions are expired, their refusals and suspensions withdrawn.

The window of each run starts a little before the previous run's end (``overlap_s``), so events
that arrived late are not missed; findings already seen in this process are not stored twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mamori.act.base import Action, ActionKind, Backend
from mamori.act.smtp import SmtpActReport, act_on_findings, smtp_backends, withdraw_expired
from mamori.detect.base import Window
from mamori.detect.registry import build
from mamori.detect.smtp_accounts import CompromisedDetector
from mamori.detect.smtp_bruteforce import BruteForceDetector
from mamori.governance import Governance
from mamori.ingest.mail import MailFollower, MailFormat, QueueError, sample_queue
from mamori.schemas import FINDINGS

__all__ = ["GuardStep", "SmtpGuard"]

log = logging.getLogger(__name__)


@dataclass
class GuardStep:
    """What one step did."""

    at: datetime
    lines: int = 0
    events: int = 0
    queue_sampled: bool = False
    findings: list[dict[str, object]] = field(default_factory=list)
    acted: SmtpActReport | None = None
    expired: list[Action] = field(default_factory=list)


class SmtpGuard:
    """Follow ``logs`` ((path, format) pairs) and act on what they show."""

    def __init__(
        self,
        gov: Governance,
        logs: list[tuple[Path, MailFormat]],
        *,
        actor: str,
        from_start: bool = False,
        queue_every_s: float | None = None,
        slow_every_s: float = 600.0,
        compromised_every_s: float = 10.0,
        expire_every_s: float = 5.0,
        overlap_s: float | None = None,
        backends: dict[ActionKind, Backend[object]] | None = None,
    ) -> None:
        self.gov, self.actor = gov, actor
        self.followers = [
            MailFollower(gov, path, fmt, actor=actor, from_start=from_start) for path, fmt in logs
        ]
        cfg = gov.config.detect
        bf = build("smtp-brute-force", cfg, write=False)
        acc = build("smtp-compromised", cfg, write=False)
        assert isinstance(bf, BruteForceDetector) and isinstance(acc, CompromisedDetector)
        fast_rules = tuple(r for r in bf.params.rules if r != "slow")
        self.fast: BruteForceDetector = BruteForceDetector(
            bf.params.model_copy(update={"rules": fast_rules}), write=False
        )
        self.slow: BruteForceDetector | None = bf if "slow" in bf.params.rules else None
        self.accounts: CompromisedDetector = acc
        self.queue_every_s: float | None = queue_every_s
        self.every: dict[str, float] = {
            "slow": slow_every_s,
            "accounts": compromised_every_s,
            "expire": expire_every_s,
        }
        p = bf.params
        self.overlap: timedelta = timedelta(
            seconds=overlap_s
            if overlap_s is not None
            else max(60.0, p.find_time_s / 10, acc.params.spike_bucket_s)
        )
        self.backends: dict[ActionKind, Backend[object]] = (
            backends if backends is not None else smtp_backends(gov.config)
        )
        for b in self.backends.values():
            prepare = getattr(b, "prepare", None)
            if prepare is not None:
                prepare()
        self._last: dict[str, float] = {}
        self._since: dict[str, datetime] = {}
        self._seen: set[str] = set()
        self._pending_accounts: bool = False

    def _due(self, what: str, mono: float) -> bool:
        every = self.every.get(what) if what != "queue" else self.queue_every_s
        if every is None:
            return False
        if mono - self._last.get(what, -1e18) >= every:
            self._last[what] = mono
            return True
        return False

    def _window(self, what: str, now: datetime) -> Window:
        since = self._since.get(what, now - timedelta(hours=1)) - self.overlap
        self._since[what] = now
        return Window(since, now + timedelta(milliseconds=1))

    def _new(self, findings: pa.Table) -> pa.Table:
        if not findings.num_rows:
            return findings
        ids = findings.column("finding_id").to_pylist()
        fresh = [i not in self._seen for i in ids]
        self._seen.update(ids)
        return findings.filter(pa.array(fresh))

    def step(self) -> GuardStep:
        mono = time.monotonic()
        now = datetime.now(UTC)
        out = GuardStep(at=now)
        for f in self.followers:
            batch = f.poll()
            out.lines += batch.lines
            out.events += batch.events.num_rows
            if batch.events.num_rows and int(pc.sum(batch.events.column("success")).as_py() or 0):
                self._pending_accounts = True
        if self._due("queue", mono):
            try:
                sample_queue(self.gov, actor=self.actor)
                out.queue_sampled = True
                self._pending_accounts = True
            except QueueError as exc:
                log.warning("queue sample: %s", exc)
        found: list[pa.Table] = []
        if out.events:
            found.append(
                self.fast.run(self.gov, self._window("fast", now), actor=self.actor).findings
            )
        if self.slow is not None and self._due("slow", mono):
            found.append(
                self.slow.run(self.gov, self._window("slow", now), actor=self.actor).findings
            )
        if self._pending_accounts and self._due("accounts", mono):
            self._pending_accounts = False
            run = self.accounts.run(self.gov, self._window("accounts", now), actor=self.actor)
            found.append(run.findings)
        fresh = [self._new(t) for t in found]
        new = pa.concat_tables(fresh) if fresh else FINDINGS.arrow.empty_table()
        if new.num_rows:
            for measure in ("M11", "M12"):
                mine = new.filter(pc.equal(new.column("measure"), measure))
                if mine.num_rows:
                    self.gov.write(measure, FINDINGS.name, mine, self.actor, detail={"guard": True})
            out.findings = new.to_pylist()
            out.acted = act_on_findings(self.gov, new, actor=self.actor, backends=self.backends)
        if self._due("expire", mono):
            out.expired = withdraw_expired(self.gov, self.actor, backends=self.backends)
        return out

    def run(
        self,
        *,
        interval_s: float | None = None,
        stop: Callable[[], bool] = lambda: False,
        on_step: Callable[[GuardStep], None] | None = None,
    ) -> None:
        every = interval_s or self.gov.config.mail.follow_interval_s
        try:
            while not stop():
                t0 = time.monotonic()
                try:
                    s = self.step()
                except Exception:  # a live guard keeps guarding: the next step retries
                    log.exception("smtp guard: step failed")
                    s = None
                if on_step is not None and s is not None:
                    on_step(s)
                time.sleep(max(0.0, every - (time.monotonic() - t0)))
        finally:
            for f in self.followers:
                f.flush()
                f.close()
