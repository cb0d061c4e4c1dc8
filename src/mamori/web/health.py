"""What an operator needs to know about a running installation, in one snapshot: each stage's
last run and outcome, the collectors' rate and drops, the store per dataset, the audit chain,
pending approvals and alerts, and what is overdue.

``mamori status`` prints it (and exits non-zero when something needs a person); the console
serves it to operators. Everything is read through governance or from the stages' operational
state (``_state/``); it holds counts, never an address or a subscriber.

Something *needs attention* (status exits 1) when a scheduled stage's last run failed or its last
success is older than ``[schedule.JOB] overdue_after_hours``; when a configured collector has not
flushed for a while; when a dataset holds data past its retention (purge overdue); or when the
audit chain is broken. Pending approvals, queued or failed alerts, kernel drops and stages that
never ran are shown as notes: they are the desk's daily work or a trend for the metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mamori.governance import AccessRefused, Governance, retention_status
from mamori.governance.roles import VIEWS
from mamori.ingest.collector import load_stats
from mamori.runs import STAGES, load_runs

__all__ = ["Health", "gather"]

ATTENTION, NOTE, OK = "attention", "note", "ok"
# a collector that has not saved its counters for this long (and 10 flush intervals) has stopped
COLLECTOR_STALE_S = 300.0


@dataclass
class StageHealth:
    stage: str
    what: str
    measure: str | None
    state: str  # ok | note | attention
    summary: str
    last_run: str | None = None
    last_outcome: str | None = None
    last_seconds: float | None = None
    last_ok: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class CollectorHealth:
    group: str
    state: str
    summary: str
    configured: bool
    updated: str | None = None
    records_stored: int = 0
    records_per_s: float = 0.0
    drops: int = 0
    decode_errors: int = 0
    exporters: int = 0


@dataclass
class DatasetHealth:
    dataset: str
    retention_days: int | None
    oldest: str | None
    partitions: int
    bytes: int
    overdue: bool


@dataclass
class Health:
    now: str
    stages: list[StageHealth]
    collectors: list[CollectorHealth]
    datasets: list[DatasetHealth]
    audit: dict[str, Any]
    approvals_pending: int | None
    actions: dict[str, int]  # by state (an active action past its end counts as expired)
    alerts: dict[str, int]
    attention: list[str]
    notes: list[str]
    refused: list[str] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        return bool(self.attention)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "needs_attention": self.needs_attention}


def _age(then: datetime, now: datetime) -> str:
    s = max(0.0, (now - then).total_seconds())
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} days ago"


def _collect_stage(h: StageHealth, collectors: list[CollectorHealth], now: datetime) -> StageHealth:
    """The collector is a service, not a run: its stage line sums up the collectors'."""
    seen = [c for c in collectors if c.updated]
    if seen:
        latest = max(datetime.fromisoformat(c.updated or "") for c in seen)
        h.last_run = h.last_ok = latest.isoformat()
        h.last_outcome = "ok"
        h.counts = {"records_stored": sum(c.records_stored for c in seen)}
        h.summary = f"{len(seen)} collector(s); last flush {_age(latest, now)}"
        h.state = OK
    worst = [c for c in collectors if c.state == ATTENTION]
    if worst:
        h.state = ATTENTION
        h.summary = f"collector {worst[0].group}: {worst[0].summary}"
    return h


def _stages(gov: Governance, now: datetime, collectors: list[CollectorHealth]) -> list[StageHealth]:
    runs = load_runs(gov.state_dir("runs"))
    out = []
    for stage, (what, measure, job_name) in STAGES.items():
        rec = runs.get(stage)
        h = StageHealth(stage, what, measure, NOTE, "no run recorded")
        job = getattr(gov.config.schedule, job_name) if job_name else None
        if stage == "collect":
            out.append(_collect_stage(h, collectors, now))
            continue
        if rec is not None:
            last = rec.last
            h.last_run, h.last_outcome, h.last_seconds = last.started, last.outcome, last.seconds
            h.last_ok = rec.last_ok.started if rec.last_ok else None
            h.counts = dict(last.counts)
            h.state = OK
            h.summary = f"{last.outcome} {_age(last.started_at, now)} ({last.seconds:.1f} s)"
            if last.outcome != "ok":
                h.state = ATTENTION
                h.summary = (
                    f"last run FAILED {_age(last.started_at, now)} (exit status "
                    f"{last.exit_code}{', ' + last.error if last.error else ''})"
                )
            elif job is not None and rec.last_ok is not None:
                limit = timedelta(hours=job.overdue_after_hours)
                if now - rec.last_ok.started_at > limit:
                    h.state = ATTENTION
                    h.summary = (
                        f"OVERDUE: last success {_age(rec.last_ok.started_at, now)} "
                        f"(expected within {job.overdue_after_hours:g} h)"
                    )
        out.append(h)
    return out


def _collectors(gov: Governance, now: datetime) -> list[CollectorHealth]:
    cfg = gov.config.collector
    groups = cfg.listen_groups()
    names = list(groups) + (["default"] if "default" not in groups else [])
    stale_after = max(COLLECTOR_STALE_S, 10 * cfg.flush_interval_s)
    out = []
    for group in names:
        configured = group in groups
        stats = load_stats(gov, group)
        if stats is None:
            if configured:
                out.append(CollectorHealth(group, ATTENTION, "configured but has never run", True))
            continue
        c = stats.get("counters", {})
        updated = datetime.fromtimestamp(float(stats["updated"]), UTC)
        span = max(1e-9, float(stats["updated"]) - float(stats["started"]))
        rows = int(stats.get("rows_written", 0))
        h = CollectorHealth(
            group,
            OK,
            "",
            configured,
            updated=updated.isoformat(),
            records_stored=rows,
            records_per_s=round(rows / span, 1),
            drops=int(c.get("packets.dropped_by_kernel", 0))
            + int(c.get("packets.dropped_by_receiver", 0)),
            decode_errors=sum(int(v) for k, v in c.items() if k.startswith("errors.")),
            exporters=len(stats.get("by_exporter", {})),
        )
        h.summary = (
            f"{rows:,} records from {h.exporters} exporter(s), {h.records_per_s:,.0f}/s on "
            f"average; last flush {_age(updated, now)}; drops {h.drops:,}"
        )
        if configured and (now - updated).total_seconds() > stale_after:
            h.state = ATTENTION
            h.summary = f"STOPPED? no flush for {_age(updated, now)}; " + h.summary
        elif h.drops:
            h.state = NOTE
        out.append(h)
    return out


def _datasets(gov: Governance, now: datetime) -> list[DatasetHealth]:
    return [
        DatasetHealth(
            s.dataset,
            s.retention_days,
            s.oldest.isoformat() if s.oldest else None,
            s.partitions,
            s.bytes,
            s.overdue,
        )
        for s in retention_status(gov, now)
    ]


def _actions(gov: Governance, actor: str, refused: list[str]) -> dict[str, int] | None:
    from mamori.web.data import actions

    try:
        read = actions(gov, VIEWS["actions"].measures, actor)
    except AccessRefused as exc:  # the measures are switched off
        refused.append(exc.reason)
        return None
    refused.extend(read.refused)
    out: dict[str, int] = {}
    for r in read.rows:
        out[r["effective_state"]] = out.get(r["effective_state"], 0) + 1
    return dict(sorted(out.items()))


def _alerts(gov: Governance, actor: str) -> dict[str, int]:
    from mamori.act.notify import notification_status

    total: dict[str, int] = {}
    for per in notification_status(gov, actor=actor).values():
        for state, n in per["notifications"].items():
            total[state] = total.get(state, 0) + int(n)
    return dict(sorted(total.items()))


def gather(gov: Governance, *, actor: str, now: datetime | None = None) -> Health:
    """The snapshot; ``actor`` names who asked in the audit entries of the reads it makes."""
    now = now or datetime.now(UTC)
    collectors = _collectors(gov, now)
    stages = _stages(gov, now, collectors)
    datasets = _datasets(gov, now)
    verification = gov.audit.verify()
    refused: list[str] = []
    by_state = _actions(gov, actor, refused)
    pending = None if by_state is None else by_state.get("pending", 0)
    alerts = _alerts(gov, actor)
    attention: list[str] = []
    notes: list[str] = []
    for s in stages:
        if s.stage == "collect":
            continue  # its collectors speak for it below
        if s.state == ATTENTION:
            attention.append(f"{s.stage}: {s.summary}")
        elif s.last_run is None and s.stage in ("detect-c2", "detect-infected", "notify", "purge"):
            notes.append(f"{s.stage}: no run recorded yet")
    for c in collectors:
        if c.state == ATTENTION:
            attention.append(f"collector {c.group}: {c.summary}")
        elif c.drops:
            notes.append(f"collector {c.group}: {c.drops:,} datagrams dropped since it started")
    for d in datasets:
        if d.overdue:
            attention.append(
                f"purge overdue: {d.dataset} holds data from {d.oldest}, past its "
                f"{d.retention_days}-day retention"
            )
    if not verification.ok:
        attention.append(f"audit: {verification}")
    if pending:
        notes.append(f"{pending} action(s) awaiting approval")
    for state in ("queued", "failed"):
        if alerts.get(state):
            notes.append(f"{alerts[state]} alert(s) {state}")
    return Health(
        now=now.isoformat(),
        stages=stages,
        collectors=collectors,
        datasets=datasets,
        audit={
            "ok": verification.ok,
            "entries": verification.entries,
            "broken_at": verification.broken_at,
            "reason": verification.reason,
        },
        approvals_pending=pending,
        actions=by_state or {},
        alerts=alerts,
        attention=attention,
        notes=notes,
        refused=refused,
    )
