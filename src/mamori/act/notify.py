"""Alerts to subscribers (M5 infected devices, M6 takedown victims, M9 vulnerable devices, M13
devices that sent an attack: asked to stop, under self-defence).

Two steps, both through governance:

1. :func:`queue_alerts` — new findings of the measure's kind (own detections and third-party
   reports) become events (address, port, time); the legal-basis decision is taken
   (:mod:`mamori.act.legal`); the events are attributed to subscribers — under consent first, so
   opted-out subscribers are not even looked up, then, only where the justified-act risk test
   holds, the rest under justified act; M6 under emergency. Events are grouped into abuse-desk
   cases (:mod:`mamori.act.cases`, one per subscriber and cause) and each case due an alert gets one
   ``queued`` row in ``notifications``. The events behind an alert are kept as ``matches`` rows
   carrying its ``notification_id``, so retention deletes them once the alert is sent plus the
   grace period.
2. :func:`send_queued` — queued (and failed, after ``alerts.retry_after_s``) alerts are rendered
   from the Jinja2 templates in the subscriber's language and sent by SMTP, within the hourly rate
   limit; each attempt appends a new version of the notification (``sent``, ``failed`` with the
   error, ``bounced``) and of its case. Nothing is removed from the queue until the server accepted
   it, so an SMTP outage loses nothing.

Where we are in the findings is kept in ``<store>/_state/notify`` (finding detection times, no
communications data).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.act import alert_actions
from mamori.act import cases as cases_mod
from mamori.act.casebook import CaseBook
from mamori.act.legal import LegalDecision, RiskInputs, decide
from mamori.act.mailer import Delivery, Mailer
from mamori.attribute import attribute
from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.governance.tokens import consent_token
from mamori.schemas import MATCHES, NOTIFICATIONS, TS

__all__ = [
    "ALERT_MEASURES",
    "QueueSummary",
    "SendSummary",
    "notification_status",
    "queue_alerts",
    "render_alert",
    "send_queued",
]

log = logging.getLogger(__name__)

ALERT_MEASURES = ("M5", "M6", "M9", "M13")
KIND = {"M5": "infected", "M6": "takedown", "M9": "vulnerable", "M13": "attack-source"}
#: measures whose alerts do not rest on consent: the basis of :func:`legal.decide` for everyone
_NO_CONSENT = ("M6", "M13")
_WRITE_CHUNK = 20  # alerts sent between two state writes (bounds re-sends after a crash)


@dataclass
class QueueSummary:
    measure: str
    decision: LegalDecision
    findings: int = 0
    events: int = 0
    attribution: Counter[str] = field(default_factory=Counter)
    looked_up_under: dict[str, int] = field(default_factory=dict)
    cases_opened: int = 0
    cases_updated: int = 0
    escalated: int = 0
    queued: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)  # (dry run) what would be queued


@dataclass
class SendSummary:
    attempted: int = 0
    states: Counter[str] = field(default_factory=Counter)
    deferred_by_rate_limit: int = 0
    server_down: bool = False
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- attribution


def _attribute(
    gov: Governance,
    queries: pa.Table,
    *,
    measure: str,
    actor: str,
    basis: str,
    justification: str | None,
) -> pa.Table:
    """One row per query, in order, with ``status`` and ``subscriber_id`` (only when ok)."""
    return attribute(
        gov, queries, measure=measure, actor=actor, basis=basis, justification=justification
    )


# ---------------------------------------------------------------- state


def _state_path(gov: Governance, measure: str) -> Any:
    return gov.state_dir("notify") / f"{measure}.json"


def _watermark(gov: Governance, measure: str) -> datetime | None:
    p = _state_path(gov, measure)
    if not p.exists():
        return None
    return datetime.fromisoformat(json.loads(p.read_text())["detected_upto"])


def _set_watermark(gov: Governance, measure: str, upto: datetime) -> None:
    p = _state_path(gov, measure)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"detected_upto": upto.isoformat()}))
    tmp.replace(p)


# ---------------------------------------------------------------- events


def _findings(gov: Governance, measure: str, actor: str) -> pa.Table:
    """Every finding of the measure's kind, with its cause label (from the evidence JSON)."""
    rel = gov.open(
        measure,
        "findings",
        [
            "finding_id",
            "kind",
            "method",
            "ip",
            "port",
            "first_seen",
            "last_seen",
            "detected",
            "evidence",
        ],
        actor,
    ).table()
    kind = KIND[measure]
    rel = rel.filter(f"kind = '{kind}' AND ip IS NOT NULL").project(
        "finding_id, ip, port, coalesce(last_seen, first_seen, detected) AS ts, detected, method, "
        "lower(coalesce(json_extract_string(evidence, '$.label'), "
        # M4 findings list families (an array): the first names the cause
        "json_extract_string(evidence, '$.malware[0]'), json_extract_string(evidence, '$.malware'), "
        "json_extract_string(evidence, '$.family'), "
        "'')) AS label"
    )
    t: pa.Table = rel.to_arrow_table()
    label = pc.replace_substring_regex(t.column("label"), r"[^a-z0-9._:+-]", "_")
    if kind == "takedown":
        cause = pa.array(["takedown"] * t.num_rows, pa.string())
    else:
        cause = pc.if_else(
            pc.equal(label, ""),
            pa.scalar(kind),
            pc.binary_join_element_wise(kind, pc.utf8_slice_codeunits(label, 0, 48), ":"),
        )
    return t.append_column("cause", cause)


def _events(
    gov: Governance,
    measure: str,
    new: pa.Table,
    actor: str,
    basis: str,
    justification: str | None,
) -> pa.Table:
    """(ts, ip, port, finding_id, cause) for the new findings.

    M4's own detections keep their matched communications in ``matches``; where a finding has
    match records, those are the events (each with its exact time); otherwise the finding itself.
    """
    base = new.select(["ts", "ip", "port", "finding_id", "cause"])
    if measure != "M5" or new.num_rows == 0:
        return base
    m = (
        gov.open(
            "M5",
            "matches",
            ["ts", "ip", "port", "finding_id", "notification_id"],
            actor,
            basis=basis,
            justification=justification,
        )
        .table()
        .filter("notification_id IS NULL AND finding_id IS NOT NULL")
    )
    matched: pa.Table = m.to_arrow_table()
    matched = matched.filter(pc.is_in(matched.column("finding_id"), value_set=new["finding_id"]))
    if matched.num_rows == 0:
        return base
    cause = new.select(["finding_id", "cause"])
    from_matches = matched.select(["ts", "ip", "port", "finding_id"]).join(cause, "finding_id")
    rest = base.filter(
        pc.invert(pc.is_in(base.column("finding_id"), value_set=matched["finding_id"]))
    )
    return pa.concat_tables([rest, from_matches.select(base.column_names)])


def _risk_devices(all_findings: pa.Table, hours: float) -> int:
    """Distinct addresses of the kind in the window ending at the newest observation (a lower
    bound on devices: a CGNAT public address shared by several infected devices counts once)."""
    if all_findings.num_rows == 0:
        return 0
    newest = pc.max(all_findings.column("ts"))
    lo = pa.scalar(newest.as_py() - timedelta(hours=hours), TS)
    w = all_findings.filter(pc.greater_equal(all_findings.column("ts"), lo))
    return int(w.group_by(["ip"]).aggregate([]).num_rows)


# ---------------------------------------------------------------- queue


def queue_alerts(
    gov: Governance,
    *,
    actor: str,
    measures: Sequence[str] = ALERT_MEASURES,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[QueueSummary]:
    """Turn new findings into queued alerts (one per subscriber and cause per interval)."""
    now = now or datetime.now(UTC)
    out: list[QueueSummary] = []
    for measure in measures:
        if not gov.config.measure_enabled(measure):
            continue
        out.append(_queue_measure(gov, measure, actor=actor, now=now, dry_run=dry_run))
    return out


def _queue_measure(
    gov: Governance, measure: str, *, actor: str, now: datetime, dry_run: bool
) -> QueueSummary:
    cfg = gov.config.alerts
    all_f = _findings(gov, measure, actor)
    decision = decide(
        cfg, RiskInputs(measure, _risk_devices(all_f, cfg.risk_window_hours), cfg.risk_window_hours)
    )
    summary = QueueSummary(measure, decision)
    mark = _watermark(gov, measure)
    new = all_f
    if mark is not None:
        new = all_f.filter(pc.greater(all_f.column("detected"), pa.scalar(mark, TS)))
    summary.findings = new.num_rows
    if new.num_rows == 0:
        return summary
    upto = pc.max(new.column("detected")).as_py()

    first_basis = decision.basis if measure in _NO_CONSENT else "consent"
    events = _events(gov, measure, new, actor, first_basis, None)
    summary.events = events.num_rows
    queries = pa.table(
        {
            "ip": events.column("ip"),
            "port": events.column("port").cast(pa.uint16()),
            "ts": events.column("ts").cast(TS),
        }
    )
    res = _attribute(
        gov, queries, measure=measure, actor=actor, basis=first_basis, justification=None
    )
    summary.looked_up_under[first_basis] = queries.num_rows
    status = res.column("status")
    basis_col = pa.array([first_basis] * res.num_rows, pa.string())
    subs = res.column("subscriber_id")
    if decision.basis == "justified-act":
        # The risk test holds: what consent could not attribute (opted-out subscribers among it)
        # is looked up again under justified act.
        again = pc.invert(pc.equal(status, "ok")).combine_chunks()
        if pc.any(again).as_py():
            q2 = queries.filter(again)
            r2 = _attribute(
                gov,
                q2,
                measure=measure,
                actor=actor,
                basis="justified-act",
                justification=decision.justification,
            )
            summary.looked_up_under["justified-act"] = q2.num_rows
            idx = pc.indices_nonzero(again).to_numpy()
            st = status.to_numpy(zero_copy_only=False).astype(object)
            sb = subs.to_numpy(zero_copy_only=False).astype(object)
            bs = np.full(len(st), first_basis, dtype=object)
            st[idx] = r2.column("status").to_numpy(zero_copy_only=False)
            sb[idx] = r2.column("subscriber_id").to_numpy(zero_copy_only=False)
            bs[idx] = "justified-act"
            status = pa.chunked_array([pa.array(st, pa.string())])
            subs = pa.chunked_array([pa.array(sb, pa.string())])
            basis_col = pa.array(bs, pa.string())
    summary.attribution.update(Counter(status.to_pylist()))
    ok = pc.equal(status, "ok").combine_chunks()
    attributed = (
        events.append_column("subscriber_id", subs).append_column("basis", basis_col).filter(ok)
    )
    if attributed.num_rows == 0:
        if not dry_run:
            _set_watermark(gov, measure, upto)
        return summary

    groups = attributed.group_by(["subscriber_id", "cause"]).aggregate(
        [("ts", "max"), ("ts", "count"), ("basis", "min")]
    )
    need_all = bool(pc.any(pc.equal(groups.column("basis_min"), "justified-act")).as_py())
    existing = cases_mod.from_table(
        gov.open(
            measure,
            "cases",
            None,
            actor,
            basis="justified-act" if need_all else first_basis,
            justification=decision.justification if need_all else None,
        ).arrow()
    )
    new_cases: list[cases_mod.Case] = []
    case_basis: list[str] = []  # the basis each case row is written under (this run's lookup)
    notif_rows: list[dict[str, Any]] = []
    event_notification: dict[tuple[str, str], str | None] = {}
    for g in groups.to_pylist():
        cid = cases_mod.case_id(g["subscriber_id"], measure, g["cause"])
        before = existing.get(cid)
        case, alert = cases_mod.attach(
            before,
            subscriber_id=g["subscriber_id"],
            measure=measure,
            cause=g["cause"],
            events=g["ts_count"],
            last_event=g["ts_max"],
            basis=g["basis_min"],
            now=now,
            cfg=cfg,
        )
        if before is None:
            summary.cases_opened += 1
        else:
            summary.cases_updated += 1
            if case.desk_status == "escalated" and before.desk_status != "escalated":
                summary.escalated += 1
        new_cases.append(case)
        case_basis.append(g["basis_min"])
        event_notification[(g["subscriber_id"], g["cause"])] = case.notification_id
        if alert:
            summary.queued += 1
            notif_rows.append(
                {
                    "created": now,
                    "notification_id": case.notification_id,
                    "subscriber_id": case.subscriber_id,
                    "measure": measure,
                    "legal_basis": g["basis_min"],
                    "case_id": case.case_id,
                    "state": "queued",
                    "sent": None,
                    "updated": now,
                    "cause": case.cause,
                    "attempts": 0,
                    "last_error": None,
                    "decision": decision.for_alert(g["basis_min"]),
                }
            )
            summary.alerts.append(
                {"case_id": case.case_id, "cause": case.cause, "basis": g["basis_min"]}
            )
    if dry_run:
        return summary

    # The events behind each alert: kept (as match records) only until it is sent plus grace.
    keys = pc.binary_join_element_wise(
        attributed.column("subscriber_id"), attributed.column("cause"), "\x1f"
    )
    nid_of = {f"{s}\x1f{c}": n for (s, c), n in event_notification.items()}
    nids = pa.array(nid_of.values(), pa.string()).take(
        pc.index_in(keys, value_set=pa.array(nid_of.keys(), pa.string()))
    )
    match_rows = pa.table(
        {
            "ts": attributed.column("ts").cast(TS),
            "ip": attributed.column("ip"),
            "port": attributed.column("port").cast(pa.uint16()),
            "indicator": attributed.column("cause"),
            "finding_id": attributed.column("finding_id"),
            "notification_id": nids,
        }
    )
    basis_of_row = attributed.column("basis")
    notif = pa.Table.from_pylist(notif_rows, schema=NOTIFICATIONS.arrow)
    case_t = cases_mod.to_table(new_cases)
    for basis in sorted(set(basis_of_row.to_pylist())):
        just = decision.justification if basis == "justified-act" else None
        sel = pc.equal(basis_of_row, basis)
        rows = match_rows.filter(sel)
        n_sel = pc.equal(notif.column("legal_basis"), basis) if notif.num_rows else None
        c_sel = pc.equal(pa.array(case_basis, pa.string()), basis)
        detail = {"decision": decision.reason}
        if n_sel is not None and pc.any(n_sel).as_py():
            gov.write(
                measure,
                "notifications",
                notif.filter(n_sel),
                actor,
                basis=basis,
                justification=just,
                detail=detail,
            )
            alert_actions.decided(
                gov,
                measure,
                notif.filter(n_sel),
                basis=basis,
                justification=just,
                reason=decision.reason,
                actor=actor,
                now=now,
            )
        if pc.any(c_sel).as_py():
            gov.write(
                measure,
                "cases",
                case_t.filter(c_sel),
                actor,
                basis=basis,
                justification=just,
                detail=detail,
            )
        gov.write(
            measure, MATCHES.name, rows, actor, basis=basis, justification=just, detail=detail
        )
    # the desk's book keeps the case number and dates even after the subscriber opts out
    CaseBook(gov).opened(((c.case_id, measure, c.opened) for c in new_cases), actor)
    _set_watermark(gov, measure, upto)
    return summary


# ---------------------------------------------------------------- render


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("mamori.act", "templates"),
    # Mails are plain text (.txt: no escaping); an HTML template would be escaped.
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def _fmt(t: datetime, zone: str) -> str:
    """A time as the subscriber reads it: in the ISP's time zone (``web.time_zone``)."""
    if t.tzinfo is None:  # stored times are UTC
        t = t.replace(tzinfo=UTC)
    return t.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def _zone_name(zone: str, lang: str) -> str:
    """The zone named as a subscriber knows it (日本時間 / JST), else its IANA name."""
    if zone == "Asia/Tokyo":
        return "日本時間" if lang == "ja" else "JST, Japan time"
    return zone


def render_alert(
    config: MamoriConfig,
    *,
    notification: dict[str, Any],
    email: str,
    language: str | None,
    observed: dict[str, Any],
    measure_name: str,
    measure_name_ja: str,
    consent_based: bool,
) -> EmailMessage:
    """The alert e-mail for one notification (``observed``: first, last, events, address)."""
    lang = "ja" if (language or "ja").lower().startswith("ja") else "en"
    cause = str(notification.get("cause") or "")
    kind, _, label = cause.partition(":")
    url = f"{config.web.base_url.rstrip('/')}/consent/" + consent_token(
        config, notification["subscriber_id"]
    )
    text = _ENV.get_template(f"alert.{lang}.txt").render(
        isp_name=config.isp_name,
        kind=kind,
        label=label,
        ref=notification["case_id"],
        address=observed["address"],
        first=_fmt(observed["first"], config.web.time_zone),
        last=_fmt(observed["last"], config.web.time_zone),
        zone=_zone_name(config.web.time_zone, lang),
        events=observed["events"],
        basis=notification["legal_basis"],
        measure=notification["measure"],
        measure_name=measure_name,
        measure_name_ja=measure_name_ja,
        consent_url=url,
        consent_based=consent_based,
    )
    subject, _, body = text.partition("\n\n")
    msg = EmailMessage()
    msg["Subject"] = subject.strip()
    msg["From"] = config.smtp.sender
    msg["To"] = email
    msg["Date"] = format_datetime(datetime.now(UTC))
    domain = config.smtp.sender.rpartition("@")[2] or "mamori.invalid"
    msg["Message-ID"] = f"<{notification['notification_id']}@{domain}>"
    msg["X-Mamori-Case"] = str(notification["case_id"])
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body.lstrip("\n"), charset="utf-8")
    return msg


# ---------------------------------------------------------------- send


def _bases(gov: Governance, measure: str) -> list[tuple[str, str | None]]:
    """The bases to read a measure's queue under. Justified-act alerts are read under justified
    act (their subscribers may have opted out), only where a risk test is configured."""
    if measure == "M6":
        return [("emergency", None)]
    if measure == "M13":
        return [("self-defence", _M13_READ)]
    cfg = gov.config.alerts
    configured = (
        cfg.m5_infected_devices_threshold is not None
        if measure == "M5"
        else cfg.m9_network_capacity_bps is not None
    )
    out: list[tuple[str, str | None]] = [("consent", None)]
    if configured:
        out.append(
            ("justified-act", "delivering alerts decided under justified act (decision stored)")
        )
    return out


_M13_READ = "delivering alerts to subscribers whose devices sent an attack (decision stored)"


def send_queued(
    gov: Governance,
    *,
    actor: str,
    measures: Sequence[str] = ALERT_MEASURES,
    now: datetime | None = None,
) -> SendSummary:
    now = now or datetime.now(UTC)
    cfg = gov.config.alerts
    summary = SendSummary()
    sent_last_hour = 0
    work: list[tuple[str, str, str | None, pa.Table]] = []
    for measure in measures:
        if not gov.config.measure_enabled(measure):
            continue
        for basis, just in _bases(gov, measure):
            t = cases_mod.latest(
                gov.open(
                    measure, "notifications", None, actor, basis=basis, justification=just
                ).arrow(),
                "notification_id",
            )
            t = t.filter(
                pc.and_(
                    pc.equal(t.column("legal_basis"), basis), pc.equal(t.column("measure"), measure)
                )
            )
            # Every message handed to the server counts against the rate, delivered or not.
            recent = pc.and_(
                pc.is_in(t.column("state"), value_set=pa.array(["sent", "bounced", "failed"])),
                pc.greater_equal(t.column("updated"), pa.scalar(now - timedelta(hours=1), TS)),
            )
            sent_last_hour += int(pc.sum(recent.cast(pa.int64())).as_py() or 0)
            retry_before = pa.scalar(now - timedelta(seconds=cfg.retry_after_s), TS)
            pending = pc.and_(
                pc.less(pc.fill_null(t.column("attempts"), 0), cfg.max_attempts),
                pc.or_(
                    pc.equal(t.column("state"), "queued"),
                    pc.and_(
                        pc.equal(t.column("state"), "failed"),
                        pc.less_equal(t.column("updated"), retry_before),
                    ),
                ),
            )
            p = t.filter(pending)
            if p.num_rows:
                work.append((measure, basis, just, p.sort_by("created")))
    allowance = max(0, cfg.rate_limit_per_hour - sent_last_hour)
    with Mailer(gov.config.smtp, cfg.smtp_timeout_s) as mailer:
        for measure, basis, just, pending in work:
            if summary.server_down:
                break
            take = min(allowance, pending.num_rows)
            summary.deferred_by_rate_limit += pending.num_rows - take
            allowance -= take
            if take:
                _send_batch(
                    gov,
                    mailer,
                    measure,
                    basis,
                    just,
                    pending.slice(0, take),
                    actor=actor,
                    now=now,
                    summary=summary,
                )
    return summary


def _send_batch(
    gov: Governance,
    mailer: Mailer,
    measure: str,
    basis: str,
    just: str | None,
    pending: pa.Table,
    *,
    actor: str,
    now: datetime,
    summary: SendSummary,
) -> None:
    config = gov.config
    m = gov.catalogue.get(measure)
    assert m is not None
    nids = pending.column("notification_id")
    subs = cases_mod.latest(
        gov.open(
            measure,
            "subscribers",
            ["updated", "subscriber_id", "email", "language"],
            actor,
            basis=basis,
            justification=just,
        ).arrow(),
        "subscriber_id",
    )
    directory = {r["subscriber_id"]: r for r in subs.to_pylist()}
    obs = (
        gov.open(
            measure,
            "matches",
            ["ts", "ip", "port", "notification_id"],
            actor,
            basis=basis,
            justification=just,
        )
        .table()
        .filter("notification_id IS NOT NULL")
        .aggregate(
            "notification_id, min(ts) AS first, max(ts) AS last, count(*) AS events, "
            "string_agg(DISTINCT ip, ', ' ORDER BY ip) AS address",
            "notification_id",
        )
        .to_arrow_table()
    )
    obs = obs.filter(pc.is_in(obs.column("notification_id"), value_set=nids))
    observed = {r["notification_id"]: r for r in obs.to_pylist()}
    case_t = gov.open(measure, "cases", None, actor, basis=basis, justification=just).arrow()
    case_map = cases_mod.from_table(case_t)
    actions = alert_actions.known(gov, measure, pending, actor)

    done_n: list[dict[str, Any]] = []
    done_c: list[cases_mod.Case] = []

    def flush() -> None:
        if done_n:
            gov.write(
                measure,
                "notifications",
                pa.Table.from_pylist(done_n, schema=NOTIFICATIONS.arrow),
                actor,
                basis=basis,
                justification=just,
                detail={"delivery": dict(Counter(r["state"] for r in done_n))},
            )
            alert_actions.sent(gov, done_n, actions, actor=actor, now=now)
        if done_c:
            gov.write(
                measure, "cases", cases_mod.to_table(done_c), actor, basis=basis, justification=just
            )
        done_n.clear()
        done_c.clear()

    for row in pending.to_pylist():
        nid = row["notification_id"]
        entry = directory.get(row["subscriber_id"])
        ob = observed.get(nid)
        attempts = int(row.get("attempts") or 0)
        if entry is None or not entry.get("email") or ob is None:
            why = "no e-mail address in the subscriber directory" if ob else "no events kept"
            delivery = Delivery("suppressed", why)
        else:
            msg = render_alert(
                config,
                notification=row,
                email=entry["email"],
                language=entry.get("language"),
                observed=ob,
                measure_name=m.name,
                measure_name_ja=m.name_ja,
                consent_based=m.consent != "none",
            )
            delivery = mailer.send(msg)
            attempts += 1
            summary.attempted += 1
        summary.states[delivery.state] += 1
        if delivery.error:
            summary.errors.append(f"{nid}: {delivery.error}")
        done_n.append(
            {
                **row,
                "state": delivery.state,
                "sent": now if delivery.state == "sent" else None,
                "updated": cases_mod.next_version_time(now, row["updated"]),
                "attempts": attempts,
                "last_error": (delivery.error or None) and delivery.error[:1000],
            }
        )
        case = case_map.get(row["case_id"])
        if case is not None and case.notification_id == nid:
            upd: dict[str, Any] = {
                "updated": cases_mod.next_version_time(now, case.updated),
                "notification_state": delivery.state,
            }
            if delivery.state == "sent":
                upd.update(subscriber_status="notified", last_notified=now, events_since_notice=0)
            done_c.append(replace(case, **upd))
        if delivery.server_down:
            summary.server_down = True
            break
        if len(done_n) >= _WRITE_CHUNK:
            flush()
    flush()


# ---------------------------------------------------------------- status


def _current(
    gov: Governance,
    measure: str,
    actor: str,
    basis: str,
    justification: str | None,
    dataset: str,
    key: str,
    state: str,
) -> list[Any]:
    """``state`` of the newest version of each row of ``dataset`` that ``measure`` made on
    ``basis``."""
    t = cases_mod.latest(
        gov.open(
            measure,
            dataset,
            [key, "updated", state, "legal_basis", "measure"],
            actor,
            basis=basis,
            justification=justification,
        ).arrow(),
        key,
    )
    mine = pc.and_(pc.equal(t.column("legal_basis"), basis), pc.equal(t.column("measure"), measure))
    return list(t.filter(mine).column(state).to_pylist())


def notification_status(
    gov: Governance, *, actor: str, measures: Sequence[str] = ALERT_MEASURES
) -> dict[str, Any]:
    """Counts of alerts by state and of cases by desk status, per measure (latest versions)."""
    out: dict[str, Any] = {}
    for measure in measures:
        if not gov.config.measure_enabled(measure):
            continue
        states: Counter[str] = Counter()
        desk: Counter[str] = Counter()
        for basis, just in _bases(gov, measure):
            read = (gov, measure, actor, basis, just)
            states.update(_current(*read, "notifications", "notification_id", "state"))
            desk.update(_current(*read, "cases", "case_id", "desk_status"))
        out[measure] = {"notifications": dict(states), "cases": dict(desk)}
    return out
