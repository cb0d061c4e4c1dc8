"""The public transparency report: what the ISP did in a month, per measure (seed 004).

Per measure and month: alerts sent and to how many subscribers, blocks applied (start, end,
subscribers affected), opt-outs and opt-ins, C&C entries shared and with how many partners,
findings per kind (spoofed sources per interface, reflection, DDoS …), findings confirmed,
corroborated (a feed listed them later) and rejected, C&C shared split by review state; and per
dataset the data held (oldest record against its limit) and deleted by retention.

Sources, all through governance:

* actions are read under M14 (situational awareness: counts, no targets); alerts are read under
  the measure that sent them (M5, M6, M9, M13), so for a consent-based measure the alerts of
  subscribers who have since opted out are not counted — their records are not processed at all;
* only counts leave this module;
* consent changes, purges and sharing are counted from the audit log, which records every one of
  them (``consent``, ``purge``, and the M3 ``share``/``export`` events, or an M3 ``access`` whose
  detail names a partner);
* data held comes from :func:`mamori.governance.retention_status`;
* the audit log's head at the end of the month (its last entry's number and hash), signed with
  the audit key when the builder holds ``[audit] signing_key``: a published report pins the log,
  and ``mamori audit verify --published REPORT.json`` holds the store to it.

Sharing events are read leniently: the number of entries is taken from the first of the detail
keys ``entries``, ``objects``, ``indicators``, ``count`` or ``rows``, the partner from
``partner``, ``peer``, ``recipient`` or ``client``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from mamori.act import base as act
from mamori.act.base import ActionKind
from mamori.act.warning_tally import TALLY_EVENT, WarningCounts, tallied
from mamori.governance import AccessRefused, Governance, retention_status

__all__ = [
    "AuditHead",
    "Block",
    "DatasetLine",
    "FindingCount",
    "MeasureLine",
    "TransparencyReport",
    "build_report",
    "month_bounds",
    "to_csv",
]

PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
SHARE_EVENTS = ("share", "export", "share-export", "share-publish", "taxii", "taxii-read")
# what one sharing event put out: a publish counts the objects it added to the collection, an
# export the endpoints it wrote
_ENTRY_KEYS = (
    "entries",
    "objects_added",
    "endpoints",
    "objects",
    "indicators",
    "count",
    "rows",
)
_PARTNER_KEYS = ("partner", "peer", "recipient", "client")
# states of actions that took effect (a rejected action, or one that expired before it was
# applied, has no start)
IN_FORCE_OR_OVER = ("applied", "ended", "expired")


class MeasureLine(BaseModel):
    measure: str
    name: str
    name_ja: str
    legal_bases: list[str]
    alerts_sent: int = 0
    alert_subscribers: int = 0
    alerts_failed: int = 0
    blocks: int = 0
    block_subscribers: int = 0
    #: of the blocks: SMTP AUTH refusals (M12) and account suspensions (M11)
    auth_refusals: int = 0
    account_suspensions: int = 0
    opt_outs: int = 0
    opt_ins: int = 0
    cc_entries_shared: int = 0
    #: C&C endpoints shared, by review state: an analyst confirmed it, a feed listed it after
    #: we found it, or (only with the audited ``--include-candidates``) nobody reviewed it
    cc_shared_confirmed: int = 0
    cc_shared_corroborated: int = 0
    cc_shared_candidates: int = 0
    share_partners: int = 0
    findings_confirmed: int = 0
    findings_corroborated: int = 0
    findings_rejected: int = 0
    refusals: int = 0


class Block(BaseModel):
    measure: str
    kind: str
    state: str
    start: datetime | None
    end: datetime | None
    subscribers_affected: int | None


class FindingCount(BaseModel):
    """Findings a measure's detectors made in the month, per kind and method (counts only: M14
    reads no finding's target or evidence)."""

    measure: str
    kind: str
    method: str | None
    findings: int


class DatasetLine(BaseModel):
    dataset: str
    retention_days: int | None
    oldest_held: datetime | None
    partitions_held: int
    overdue: bool
    rows_deleted: int = 0
    partitions_deleted: int = 0
    purges: int = 0


class AuditHead(BaseModel):
    """Entry ``seq`` of the audit log has ``hash``; ``sig`` by ``key`` at ``ts`` (None: unsigned)."""

    seq: int
    hash: str
    ts: str | None = None
    key: str | None = None
    sig: str | None = None


class TransparencyReport(BaseModel):
    period: str
    isp: str
    generated: datetime
    measures: list[MeasureLine]
    blocks: list[Block]
    datasets: list[DatasetLine]
    findings: list[FindingCount] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    audit_head: AuditHead | None = None
    # warning pages shown (M8), by category: the only thing the warning page records
    warnings_shown: dict[str, int] = Field(default_factory=dict)


class PeriodError(ValueError):
    """A period that is not YYYY-MM."""


def month_bounds(period: str) -> tuple[datetime, datetime]:
    m = PERIOD_RE.match(period)
    if not m:
        raise PeriodError(f"period {period!r}: expected YYYY-MM, e.g. 2026-11")
    year, month = int(m.group(1)), int(m.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _in(ts: Any, lo: datetime, hi: datetime) -> bool:
    return isinstance(ts, datetime) and lo <= ts < hi


def _parse_ts(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _first(detail: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in detail and detail[k] is not None:
            return detail[k]
    return None


ALERT_MEASURES = ("M5", "M6", "M9", "M13")
_ALERT_COLUMNS = [
    "created",
    "subscriber_id",
    "measure",
    "state",
    "sent",
    "notification_id",
    "updated",
]
FAILED_STATES = ("failed", "bounced")


def _open(
    gov: Governance,
    measure: str,
    dataset: str,
    columns: list[str] | None,
    actor: str,
    notes: list[str],
) -> pa.Table | None:
    if not gov.config.measure_enabled(measure) or not gov.catalogue[measure].may_read(dataset):
        return None
    try:
        grant = gov.open(measure, dataset, columns, actor)
    except AccessRefused as exc:
        notes.append(f"{measure} {dataset} could not be read: {exc.reason}")
        return None
    if grant.consent_filtered:
        notes.append(
            f"{measure}: alerts to subscribers who have since opted out are not counted "
            "(their records are no longer processed)."
        )
    table = grant.arrow()
    if measure != "M14" and "measure" in table.column_names:  # a measure reads its own rows
        table = table.filter(pc.equal(table.column("measure"), measure))
    return table


def build_report(
    gov: Governance, period: str, *, actor: str, now: datetime | None = None
) -> TransparencyReport:
    """The report for ``period`` (YYYY-MM), built from what the store and audit log hold now."""
    lo, hi = month_bounds(period)
    now = now or datetime.now(UTC)
    notes: list[str] = []
    cat = gov.catalogue
    lines = {
        m.id: MeasureLine(
            measure=m.id,
            name=m.name,
            name_ja=m.name_ja,
            legal_bases=[b.value for b in m.legal_bases],
        )
        for m in cat.values()
    }

    # --- alerts: each in its current state (the latest version), filed under the period of the
    # events it reports (when they were seen, from its case), not the day the mail went out
    subs: dict[str, set[str]] = defaultdict(set)
    for mid in ALERT_MEASURES:
        alerts = _open(gov, mid, "notifications", _ALERT_COLUMNS, actor, notes)
        if alerts is None:
            continue
        seen = _event_times(gov, mid, actor)
        for r in _latest_alerts(alerts).to_pylist():
            line = lines.get(r["measure"])
            if line is None:
                continue
            if not _in(seen.get(r["notification_id"]) or r["created"], lo, hi):
                continue
            if r["state"] == "sent":
                line.alerts_sent += 1
                subs[r["measure"]].add(r["subscriber_id"])
            elif r["state"] in FAILED_STATES:
                line.alerts_failed += 1
    for mid, who in subs.items():
        lines[mid].alert_subscribers = len(who)

    # --- blocks (current version of each action that was in force during the month; alerts are
    # actions too, counted above)
    blocks: list[Block] = []
    widest: dict[tuple[str, str], int] = {}
    acts = _open(gov, "M14", "actions", None, actor, notes)
    if acts is not None:
        current = act.latest_table(acts)
        # alerts are counted above, and sharing a C&C endpoint blocks nothing (it is counted
        # with the C&C entries shared)
        current = current.filter(
            pc.invert(
                pc.is_in(
                    current.column("kind"),
                    value_set=pa.array([ActionKind.ALERT.value, ActionKind.SHARE.value]),
                )
            )
        )
        for r in sorted(current.to_pylist(), key=lambda r: (r["start"] or lo, r["action_id"])):
            # over: when it ended; in force: when it expires
            start, end = r["start"], r["end"] or r.get("expires")
            if r["state"] not in IN_FORCE_OR_OVER or start is None:
                continue
            if start >= hi or (end is not None and end < lo):
                continue
            state = act.effective_state(r, now)
            blocks.append(
                Block(
                    measure=r["measure"],
                    kind=r["kind"],
                    state=state,
                    start=start,
                    end=end,
                    subscribers_affected=r["subscribers_affected"],
                )
            )
            line = lines.get(r["measure"])
            if line is not None:
                line.blocks += 1
                if r["kind"] == ActionKind.SMTP_AUTH_REFUSAL.value:
                    line.auth_refusals += 1
                elif r["kind"] == ActionKind.ACCOUNT_SUSPENSION.value:
                    line.account_suspensions += 1
            # a zone replaced by its next version protects the same subscribers again: per
            # target the largest count, summed over targets (never one subscriber per version)
            key = (r["measure"], "rpz" if r["kind"] == ActionKind.RPZ else r["action_id"])
            widest[key] = max(widest.get(key, 0), int(r["subscribers_affected"] or 0))
    for (mid, _), n in widest.items():
        if mid in lines:
            lines[mid].block_subscribers += n

    # --- findings of the network-protection detectors (spoofing, reflection, DDoS …), counted
    findings: list[FindingCount] = []
    found = _open(gov, "M14", "findings", ["detected", "kind", "method", "measure"], actor, notes)
    if found is not None and found.num_rows:
        ts = pa.timestamp("ms", tz="UTC")
        det = found.column("detected").cast(ts)
        inside = pc.and_(pc.greater_equal(det, pa.scalar(lo, ts)), pc.less(det, pa.scalar(hi, ts)))
        month = found.filter(pc.fill_null(inside, False))
        counts = month.group_by(["measure", "kind", "method"]).aggregate([("kind", "count")])
        for r in sorted(
            counts.to_pylist(), key=lambda r: (r["measure"], r["kind"], r["method"] or "")
        ):
            findings.append(
                FindingCount(
                    measure=r["measure"], kind=r["kind"], method=r["method"],
                    findings=r["kind_count"],
                )
            )  # fmt: skip

    # --- the audit log: consent changes, purges, sharing
    deleted: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    partners: dict[str, set[str]] = defaultdict(set)
    # the warning page's counts not yet in the log go in first, so that every figure of the
    # report, warnings shown included, is rebuilt from the log
    WarningCounts(gov.state_dir("warning")).seal(gov.audit, actor=actor)
    warnings: dict[str, int] = defaultdict(int)
    for e in gov.audit.entries():
        # tallies count by the day of the views, whenever they were sealed (a month's last day
        # is sealed on the next day's first view, or by the report); the rest by their time
        tally = e.event == TALLY_EVENT
        if not tally and not _in(_parse_ts(e.ts), lo, hi):
            continue
        detail: dict[str, Any] = {}
        if e.detail:
            try:
                parsed = json.loads(e.detail)
                detail = parsed if isinstance(parsed, dict) else {}
            except ValueError:
                detail = {}
        if tally:
            for by_category in tallied(detail, lo, hi).values():
                for category, events in by_category.items():
                    warnings[category] += events["shown"]
            continue
        if e.event == "consent" and e.measure in lines:
            if detail.get("state") == "out":
                lines[e.measure].opt_outs += 1
            elif detail.get("state") == "in":
                lines[e.measure].opt_ins += 1
        elif e.event == "refused" and e.measure in lines:
            lines[e.measure].refusals += 1
        elif e.event == "review" and e.measure in lines:
            decision = detail.get("decision")
            if decision in ("rejected", "false-positive"):
                lines[e.measure].findings_rejected += 1
            elif decision == "confirmed":
                lines[e.measure].findings_confirmed += 1
            elif decision == "corroborated":
                lines[e.measure].findings_corroborated += 1
        elif e.event == "purge" and e.dataset:
            d = deleted[e.dataset]
            d[0] += int(detail.get("rows") or 0)
            d[1] += int(detail.get("partitions") or 0)
            d[2] += 1
        elif e.measure == "M3" and (
            e.event in SHARE_EVENTS
            or (e.event == "access" and _first(detail, _PARTNER_KEYS) is not None)
        ):
            n = _first(detail, _ENTRY_KEYS)
            lines["M3"].cc_entries_shared += int(n) if isinstance(n, int | float) else 0
            by_state = detail.get("shared")
            if isinstance(by_state, dict):
                m3 = lines["M3"]
                m3.cc_shared_confirmed += _count(by_state.get("confirmed"))
                m3.cc_shared_corroborated += _count(by_state.get("corroborated"))
                m3.cc_shared_candidates += _count(by_state.get("candidate"))
            who = _first(detail, _PARTNER_KEYS)
            if who is not None:
                partners["M3"].add(str(who))
    for mid, p in partners.items():
        lines[mid].share_partners = len(p)

    datasets = []
    for s in retention_status(gov, now):
        rows, parts, runs = deleted.get(s.dataset, [0, 0, 0])
        datasets.append(
            DatasetLine(
                dataset=s.dataset,
                retention_days=s.retention_days,
                oldest_held=s.oldest,
                partitions_held=s.partitions,
                overdue=s.overdue,
                rows_deleted=rows,
                partitions_deleted=parts,
                purges=runs,
            )
        )
    audit_head = _audit_head(gov, hi, notes)
    return TransparencyReport(
        period=period,
        isp=gov.config.isp_name,
        generated=now,
        measures=list(lines.values()),
        blocks=blocks,
        datasets=datasets,
        findings=findings,
        notes=notes,
        audit_head=audit_head,
        warnings_shown=dict(sorted(warnings.items())),
    )


def _count(v: object) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _audit_head(gov: Governance, end: datetime, notes: list[str]) -> AuditHead:
    """The audit log's head at the end of the period (now, for the current month), signed when
    the audit key is at hand."""
    seq, digest = gov.audit.head_before(end)
    head = gov.audit.sign_head(seq, digest)
    if not head.sig:
        notes.append("The audit log head is not signed ([audit] signing_key not configured).")
        return AuditHead(seq=seq, hash=digest)
    return AuditHead(seq=seq, hash=digest, ts=head.ts, key=head.key, sig=head.sig)


def _latest_alerts(alerts: pa.Table) -> pa.Table:
    """One row per alert: its latest version (``updated``, else ``created``)."""
    if alerts.num_rows == 0:
        return alerts
    when = pc.coalesce(
        alerts.column("updated"), alerts.column("created").cast(alerts.schema.field("updated").type)
    )
    t = alerts.append_column("_when", when).sort_by(
        [("notification_id", "ascending"), ("_when", "descending")]
    )
    ids = t.column("notification_id").to_pylist()
    keep = [i == 0 or ids[i] != ids[i - 1] for i in range(len(ids))]
    return t.filter(pa.array(keep)).drop_columns(["_when"])


def _event_times(gov: Governance, measure: str, actor: str) -> dict[str, datetime]:
    """When the events behind each alert were seen: the case's last event when the alert was
    made (the first version of the case naming it). Read under the alert's own measure."""
    if not gov.config.measure_enabled(measure) or not gov.catalogue[measure].may_read("cases"):
        return {}
    try:
        grant = gov.open(measure, "cases", ["notification_id", "last_event", "measure"], actor)
    except AccessRefused:
        return {}
    try:
        t = grant.arrow()
    finally:
        grant.sandbox.close()
    t = t.filter(
        pc.and_(pc.equal(t.column("measure"), measure), pc.is_valid(t.column("notification_id")))
    )
    if t.num_rows == 0:
        return {}
    g = t.group_by("notification_id", use_threads=False).aggregate([("last_event", "min")])
    return {
        n: when
        for n, when in zip(
            g.column("notification_id").to_pylist(),
            g.column("last_event_min").to_pylist(),
            strict=True,
        )
        if when is not None
    }


def to_csv(report: TransparencyReport) -> str:
    """Long form: one line per (section, key, metric) so the three sections share one header."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["period", "section", "key", "metric", "value"])
    p = report.period
    for m in report.measures:
        for metric, value in m.model_dump(exclude={"measure", "name", "name_ja"}).items():
            if isinstance(value, list):
                value = " ".join(value)
            w.writerow([p, "measure", m.measure, metric, value])
    for i, b in enumerate(report.blocks, start=1):
        for metric, value in b.model_dump(mode="json").items():
            w.writerow([p, "block", i, metric, "" if value is None else value])
    for d in report.datasets:
        for metric, value in d.model_dump(mode="json", exclude={"dataset"}).items():
            w.writerow([p, "dataset", d.dataset, metric, "" if value is None else value])
    for f in report.findings:
        key = f"{f.measure}:{f.kind}:{f.method or ''}"
        w.writerow([p, "findings", key, "findings", f.findings])
    if report.audit_head is not None:
        for metric, value in report.audit_head.model_dump().items():
            w.writerow([p, "audit_head", "", metric, "" if value is None else value])
    for category, shown in report.warnings_shown.items():
        w.writerow([p, "warnings", category, "shown", shown])
    return buf.getvalue()
