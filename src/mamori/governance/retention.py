"""Retention: delete what is past its deadline, and say what was deleted.

Three rules:

* every dataset keeps ``retention.<dataset>`` days (configuration, never longer than the catalogue
  allows): an hour partition whose whole hour lies before ``now - days`` is deleted;
* match records made for an alert (dataset ``matches``) are deleted once their alert has been sent
  and ``retention.matches_after_alert_days`` have passed, whatever their age;
* records of what was observed on the network (:data:`OBSERVED`: flows, DNS queries, auth
  events) cannot be dated in the future: an hour partition starting more than
  ``retention.future_tolerance_hours`` after ``now`` holds garbage (an exporter with a broken
  clock, random bytes taken for records) and is deleted. No retention rule would ever reach it.

Each deletion is written to the audit log with counts, so an auditor can see that it happened.
The audit log itself is never purged.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mamori.schemas import DATASETS, MATCHES, NOTIFICATIONS
from mamori.store.parquet import replace_file

if TYPE_CHECKING:
    from mamori.governance.access import Governance

__all__ = ["OBSERVED", "PurgeReport", "purge", "retention_status"]

OBSERVED = ("flows", "dns_queries", "auth_events")
"""Datasets of observed events: nothing in them is true that is dated after now (other datasets
may hold planned times, such as an allocation that starts next month)."""


@dataclass
class DatasetPurge:
    dataset: str
    retention_days: int
    cutoff: datetime  # rule "retention": partitions ending before it; "future": starting after it
    partitions: list[str] = field(default_factory=list)
    rows: int = 0
    rule: str = "retention"


@dataclass
class PurgeReport:
    now: datetime
    dry_run: bool
    datasets: list[DatasetPurge] = field(default_factory=list)
    matches_after_alert: int = 0

    @property
    def partitions_deleted(self) -> int:
        return sum(len(d.partitions) for d in self.datasets)

    @property
    def rows_deleted(self) -> int:
        return sum(d.rows for d in self.datasets) + self.matches_after_alert


def _rows(files: list[str]) -> int:
    return sum(pq.read_metadata(f).num_rows for f in files)


def purge(
    gov: Governance, *, actor: str, now: datetime | None = None, dry_run: bool = False
) -> PurgeReport:
    now = now or datetime.now(UTC)
    engine = gov._engine  # governance's own engine: retention is part of governance
    report = PurgeReport(now, dry_run)
    for name in DATASETS:
        days = gov.config.retention.days(name)
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        item = DatasetPurge(name, days, cutoff)
        ahead = now + timedelta(hours=gov.config.retention.future_tolerance_hours)
        future = DatasetPurge(name, days, ahead, rule="future")
        for part in engine.partitions(name):
            if part.end <= cutoff:
                target = item
            elif name in OBSERVED and part.start >= ahead:
                target = future
            else:
                continue
            files = [str(f) for f in part.files()]
            target.rows += _rows(files)
            target.partitions.append(part.path.relative_to(gov.config.store).as_posix())
            if not dry_run:
                shutil.rmtree(part.path)
        if item.partitions:
            report.datasets.append(item)
            gov.audit.append(
                actor=actor,
                event="purge" if not dry_run else "purge-dry-run",
                dataset=name,
                detail={
                    "retention_days": days,
                    "cutoff": cutoff.isoformat(),
                    "partitions": len(item.partitions),
                    "rows": item.rows,
                },
            )
        if future.partitions:
            report.datasets.append(future)
            gov.audit.append(
                actor=actor,
                event="purge" if not dry_run else "purge-dry-run",
                dataset=name,
                detail={
                    "rule": "dated in the future",
                    "tolerance_hours": gov.config.retention.future_tolerance_hours,
                    "cutoff": ahead.isoformat(),
                    "partitions": len(future.partitions),
                    "rows": future.rows,
                },
            )
    report.matches_after_alert = _purge_sent_matches(gov, actor=actor, now=now, dry_run=dry_run)
    return report


def _purge_sent_matches(gov: Governance, *, actor: str, now: datetime, dry_run: bool) -> int:
    engine = gov._engine
    grace = timedelta(days=gov.config.retention.matches_after_alert_days)
    sent = engine.scan(NOTIFICATIONS, ["notification_id", "state", "sent"]).filter(
        f"state = 'sent' AND sent IS NOT NULL AND sent <= TIMESTAMPTZ '{(now - grace).isoformat()}'"
    )
    done = pa.array(sorted({r[0] for r in sent.select("notification_id").fetchall()}), pa.string())
    if len(done) == 0:
        return 0
    # The alert flow keeps the events behind an alert as match rows carrying its notification_id;
    # where those events were M4's own match records (notification_id unset), the originals go
    # with them: they are identified by the finding the alert's rows name.
    files = [f for part in engine.partitions(MATCHES.name) for f in part.files()]
    linked: set[str] = set()
    for f in files:
        t = pq.read_table(f, columns=["finding_id", "notification_id"])
        hit = pc.fill_null(pc.is_in(t.column("notification_id"), value_set=done), False)
        linked.update(v for v in t.column("finding_id").filter(hit).to_pylist() if v is not None)
    findings = pa.array(sorted(linked), pa.string())
    removed = 0
    for f in files:
        table = pq.read_table(f)
        drop = pc.is_in(table.column("notification_id"), value_set=done)
        drop = pc.fill_null(drop, False)
        orphan = pc.and_(
            pc.is_null(table.column("notification_id")),
            pc.fill_null(pc.is_in(table.column("finding_id"), value_set=findings), False),
        )
        drop = pc.or_(drop, orphan)
        n = pc.sum(drop).as_py() or 0
        if not n:
            continue
        removed += n
        if dry_run:
            continue
        keep = table.filter(pc.invert(drop))
        if keep.num_rows:
            replace_file(f, keep)
        else:
            f.unlink()
    if removed:
        gov.audit.append(
            actor=actor,
            event="purge" if not dry_run else "purge-dry-run",
            dataset=MATCHES.name,
            detail={"rule": "alert sent + grace", "grace_days": grace.days, "rows": removed},
        )
    return removed


@dataclass(frozen=True)
class RetentionStatus:
    dataset: str
    retention_days: int | None
    oldest: datetime | None
    partitions: int
    overdue: bool
    bytes: int = 0  # on disk, for sizing and `mamori status`


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # purged meanwhile
        return 0


def retention_status(gov: Governance, now: datetime | None = None) -> list[RetentionStatus]:
    """Oldest data held per dataset against its limit (what an auditor looks at)."""
    now = now or datetime.now(UTC)
    out: list[RetentionStatus] = []
    for name in DATASETS:
        if name == "audit":
            continue
        parts = gov._engine.partitions(name)
        days = gov.config.retention.days(name)
        oldest = parts[0].start if parts else None
        overdue = bool(parts and days is not None and parts[0].end <= now - timedelta(days=days))
        size = sum(_size(f) for p in parts for f in p.files())
        out.append(RetentionStatus(name, days, oldest, len(parts), overdue, size))
    return out
