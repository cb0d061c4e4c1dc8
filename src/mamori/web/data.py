"""What the console pages read, always through governance and under the view's measures.

Findings, actions and alerts are read under the measure that made them (a row of another measure
is dropped, so no page serves one measure's data under another's purpose). Filters are applied on
Arrow tables with compute kernels, never by pasting user input into SQL.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mamori.act import base as act
from mamori.act import cases as cases_mod
from mamori.act.backends import default_backends
from mamori.act.casebook import CaseBook, DeskCase
from mamori.act.rpz import WARN_PREFIX
from mamori.act.share_action import ShareBackend
from mamori.addresses import in_networks
from mamori.detect.reviews import Reviews
from mamori.governance import AccessRefused, Governance
from mamori.governance.roles import NETWORK_KINDS, Role, may_decide
from mamori.schemas import ACTIONS, CASES, FINDINGS, NOTIFICATIONS
from mamori.web import grantcache
from mamori.web.auditindex import proposers

__all__ = [
    "ActionDecisionError",
    "Read",
    "actions",
    "alerts",
    "decide_action",
    "findings",
    "traffic",
]

ROW_LIMIT = 2000


@dataclass
class Read:
    """Rows a page shows, and what was refused or switched off on the way (shown on the page)."""

    rows: list[dict[str, Any]]
    refused: list[str]
    truncated: bool = False


@dataclass
class Loaded:
    """A whole table for a page to filter, sort and page (:mod:`mamori.web.tables`)."""

    table: pa.Table
    refused: list[str]
    # governance left out rows of subscribers who opted out (the page says so)
    consent_filtered: bool = False


def _read(
    gov: Governance,
    measures: Sequence[str],
    dataset: str,
    actor: str,
    columns: Sequence[str] | None = None,
    *,
    consent: list[bool] | None = None,
) -> tuple[list[pa.Table], list[str]]:
    tables: list[pa.Table] = []
    refused: list[str] = []
    for m in measures:
        measure = gov.catalogue[m]
        if not gov.config.measure_enabled(m) or not measure.may_read(dataset):
            continue
        if actor == grantcache.WARM_ACTOR and not grantcache.is_fresh(gov, m, dataset, columns):
            # the warmer derives the pages' tables from what it read; a read it was refused is
            # not asked for again (each refusal is an audit entry and a transparency figure)
            continue
        try:
            kept = grantcache.read(gov, m, dataset, columns, actor)
        except AccessRefused as exc:
            refused.append(exc.reason)
            continue
        if consent is not None and kept.consent_filtered:
            consent.append(True)
        tables.append(kept.table)
    return tables, refused


_DERIVED: dict[tuple[str, ...], tuple[tuple[pa.Table, ...], pa.Table]] = {}


def _derive(
    gov: Governance, name: str, inputs: list[pa.Table], make: Callable[[], pa.Table]
) -> pa.Table:
    """``make()``, reused while its inputs are the very tables it was made from (the kept
    reads of :mod:`mamori.web.grantcache`: the same objects until the store changes)."""
    key = (str(gov.audit.path), name)
    hit = _DERIVED.get(key)
    if (
        hit is not None
        and len(hit[0]) == len(inputs)
        and all(a is b for a, b in zip(hit[0], inputs, strict=True))
    ):
        return hit[1]
    out = make()
    _DERIVED[key] = (tuple(inputs), out)
    return out


def _concat(tables: list[pa.Table], empty: pa.Schema) -> pa.Table:
    if not tables:
        return empty.empty_table()
    return pa.concat_tables(tables, promote_options="permissive")


def _rows(tables: list[pa.Table], sort: str) -> tuple[list[dict[str, Any]], bool]:
    rows = [r for t in tables for r in t.to_pylist()]
    rows.sort(key=lambda r: r.get(sort) or datetime.min.replace(tzinfo=UTC), reverse=True)
    return rows[:ROW_LIMIT], len(rows) > ROW_LIMIT


def endpoint_column(t: pa.Table) -> pa.Array | pa.ChunkedArray:
    """``ip``, ``ip:port`` or ``ip:port/proto`` — never ``ip:None`` (vectorised)."""
    ip = pc.fill_null(t.column("ip"), "")
    port = t.column("port")
    ip_shown = pc.if_else(
        pc.match_substring(ip, ":"), pc.binary_join_element_wise("[", ip, "]", ""), ip
    )
    with_port = pc.binary_join_element_wise(ip_shown, pc.cast(port, pa.string()), ":")
    out = pc.if_else(pc.is_null(port), ip, with_port)
    proto = t.column("protocol")
    with_proto = pc.binary_join_element_wise(out, proto, "/")
    return pc.if_else(pc.is_null(proto), out, with_proto)


def findings_table(gov: Governance, measures: Sequence[str], actor: str) -> Loaded:
    """Every finding of ``measures`` with its review state (``review``) and ``endpoint``."""
    tables, refused = _read(gov, measures, "findings", actor)

    def make() -> pa.Table:
        t = _concat(tables, FINDINGS.arrow)
        return t.append_column("endpoint", endpoint_column(t))

    t = _derive(gov, f"findings:{','.join(measures)}", tables, make)
    t = t.append_column("review", Reviews(gov).column(t.column("finding_id")))
    return Loaded(t, refused)


def findings(
    gov: Governance,
    measures: Sequence[str],
    actor: str,
    *,
    kind: str | None = None,
    ip: str | None = None,
) -> Read:
    tables, refused = _read(gov, measures, "findings", actor)
    if kind:
        tables = [t.filter(pc.equal(t.column("kind"), kind)) for t in tables]
    if ip:
        tables = [t.filter(pc.equal(t.column("ip"), ip)) for t in tables]
    rows, cut = _rows(tables, "detected")
    for r in rows:
        r["evidence_pretty"] = _pretty(r.get("evidence"))
        m = gov.catalogue.get(r["measure"])
        r["legal_bases"] = [b.value for b in m.legal_bases] if m else []
    return Read(rows, refused, cut)


def finding_kinds(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["kind"]] = out.get(r["kind"], 0) + 1
    return dict(sorted(out.items()))


def _pretty(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return text


def actions_table(gov: Governance, measures: Sequence[str], actor: str) -> Loaded:
    """The current version of each action (:func:`mamori.act.base.latest_table`) with its
    ``status`` (the effective state: past its expiry is expired, written or not) and whether it
    is still open (``is_open``)."""
    tables, refused = _read(gov, measures, "actions", actor)
    t = _derive(
        gov,
        f"actions:{','.join(measures)}",
        tables,
        lambda: act.latest_table(_concat(tables, ACTIONS.arrow)),
    )
    now = pa.scalar(datetime.now(UTC), pa.timestamp("ms", "UTC"))
    is_open = pc.is_in(t.column("state"), value_set=pa.array([s.value for s in act.OPEN]))
    past = pc.fill_null(pc.less_equal(pc.cast(t.column("expires"), now.type), now), False)
    status = pc.if_else(pc.and_(is_open, past), "expired", t.column("state"))
    t = t.append_column("status", status).append_column(
        "is_open", pc.and_(is_open, pc.invert(past))
    )
    return Loaded(t, refused)


def actions(
    gov: Governance, measures: Sequence[str], actor: str, *, target: str | None = None
) -> Read:
    """The current version of each action (:func:`mamori.act.base.latest_table`), those not over
    yet first, then the newest."""
    tables, refused = _read(gov, measures, "actions", actor)
    if not tables:
        return Read([], refused)
    t = act.latest_table(pa.concat_tables(tables, promote_options="permissive"))
    if target:
        t = t.filter(pc.fill_null(pc.match_substring(t.column("target"), target), False))
    is_open = pc.is_in(t.column("state"), value_set=pa.array([s.value for s in act.OPEN]))
    t = t.append_column("_open", is_open).sort_by(
        [("_open", "descending"), ("created", "descending")]
    )
    rows = t.slice(0, ROW_LIMIT).drop_columns(["_open"]).to_pylist()
    now = datetime.now(UTC)
    for r in rows:
        r["effective_state"] = act.effective_state(r, now)
    return Read(rows, refused, t.num_rows > ROW_LIMIT)


def _latest(t: pa.Table, key: str) -> pa.Table:
    """One row per ``key``: its latest version (``updated``, else ``created``)."""
    if t.num_rows == 0:
        return t
    if "updated" in t.column_names and "created" in t.column_names:
        t = t.set_column(
            t.schema.get_field_index("updated"),
            "updated",
            pc.coalesce(
                t.column("updated"), pc.cast(t.column("created"), t.schema.field("updated").type)
            ),
        )
    return cases_mod.latest(t, key)


def alerts_table(gov: Governance, measures: Sequence[str], actor: str) -> Loaded:
    """One row per alert: the latest version of each notification (its current state)."""
    consent: list[bool] = []
    tables, refused = _read(gov, measures, "notifications", actor, consent=consent)
    t = _derive(
        gov,
        f"alerts:{','.join(measures)}",
        tables,
        lambda: _latest(_concat(tables, NOTIFICATIONS.arrow), "notification_id"),
    )
    return Loaded(t, refused, bool(consent))


def alerts(
    gov: Governance,
    measures: Sequence[str],
    actor: str,
    *,
    case: str | None = None,
) -> Read:
    tables, refused = _read(gov, measures, "notifications", actor)
    if case:
        tables = [
            t.filter(
                pc.or_kleene(
                    pc.equal(t.column("case_id"), case),
                    pc.equal(t.column("notification_id"), case),
                )
            )
            for t in tables
        ]
    tables = [_latest(t, "notification_id") for t in tables]
    rows, cut = _rows(tables, "created")
    return Read(rows, refused, cut)


CASE_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("measure", pa.string()),
        ("opened", pa.timestamp("ms", "UTC")),
        ("updated", pa.timestamp("ms", "UTC")),
        ("status", pa.string()),
        ("assignee", pa.string()),
        ("subscriber_id", pa.string()),
        ("cause", pa.string()),
        ("events", pa.uint32()),
        ("notifications", pa.uint16()),
        ("notification_id", pa.string()),
        ("notification_state", pa.string()),
        ("last_event", pa.timestamp("ms", "UTC")),
        ("desk_status", pa.string()),
        ("withheld", pa.bool_()),
    ]
)


def _book_table(book: dict[str, DeskCase]) -> pa.Table:
    cases = list(book.values())
    ts = pa.timestamp("ms", "UTC")
    return pa.table(
        {
            "case_id": pa.array([c.case_id for c in cases], pa.string()),
            "measure": pa.array([c.measure for c in cases], pa.string()),
            "opened": pa.array([c.opened for c in cases], ts),
            "updated": pa.array([c.updated for c in cases], ts),
            "status": pa.array([c.status for c in cases], pa.string()),
            "assignee": pa.array([c.assignee for c in cases], pa.string()),
        }
    )


def cases_table(gov: Governance, measures: Sequence[str], actor: str) -> Loaded:
    """One row per case: the latest version in ``cases`` with the desk's status and assignee
    from the case book; a case whose rows governance no longer returns (the subscriber opted
    out) is still listed from the book, with its number, measure, dates and status only."""
    consent: list[bool] = []
    tables, refused = _read(gov, measures, "cases", actor, consent=consent)
    t = _derive(
        gov,
        f"cases:{','.join(measures)}",
        tables,
        lambda: cases_mod.latest(_concat(tables, CASES.arrow), "case_id"),
    )
    book = _book_table(CaseBook(gov).cases())
    ids = t.column("case_id")
    idx = pc.index_in(ids, value_set=book.column("case_id"))
    ts = pa.timestamp("ms", "UTC")
    updated = pc.cast(t.column("updated"), ts)
    desk_updated = pc.take(book.column("updated"), idx)
    cols: dict[str, Any] = {
        name: (pc.cast(t.column(name), CASE_SCHEMA.field(name).type))
        for name in CASE_SCHEMA.names
        if name in t.column_names and name not in ("updated", "status", "assignee")
    }
    later = pc.fill_null(pc.greater(desk_updated, updated), False)
    cols["updated"] = pc.if_else(later, desk_updated, updated)
    cols["status"] = pc.fill_null(pc.take(book.column("status"), idx), "open")
    cols["assignee"] = pc.take(book.column("assignee"), idx)
    cols["withheld"] = pa.array([False] * t.num_rows, pa.bool_())
    readable = pa.table({n: cols[n] for n in CASE_SCHEMA.names if n in cols})
    allowed = pa.array([m for m in measures if gov.config.measure_enabled(m)], pa.string())
    only_book = book.filter(
        pc.and_(
            pc.invert(
                pc.is_in(
                    book.column("case_id"),
                    value_set=ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids,
                )
            ),
            pc.is_in(book.column("measure"), value_set=allowed),
        )
    )
    only_book = only_book.append_column(
        "withheld", pa.array([True] * only_book.num_rows, pa.bool_())
    )
    table = pa.concat_tables(
        [
            readable.cast(_subset(CASE_SCHEMA, readable)),
            only_book.cast(_subset(CASE_SCHEMA, only_book)),
        ],
        promote_options="permissive",
    )
    return Loaded(
        table.select(CASE_SCHEMA.names) if table.num_rows else CASE_SCHEMA.empty_table(),
        refused,
        bool(consent),
    )


def _subset(schema: pa.Schema, t: pa.Table) -> pa.Schema:
    return pa.schema([schema.field(n) for n in t.column_names])


class ActionDecisionError(ValueError):
    """A decision that does not apply to the action (unknown, not this viewer's, or not a step of
    its life cycle from where it is)."""


class DecisionForbidden(PermissionError):
    """A decision this person may not take: another role's kind of action, or their own
    proposal (a second person approves)."""


def decide_action(
    gov: Governance,
    measures: Sequence[str],
    action_id: str,
    decision: str,
    actor: str,
    role: Role | None = None,
) -> act.Action:
    """Approve, reject, apply or end an action through the action contract
    (:mod:`mamori.act.base`): a new version of its row, written under its measure and audited by
    the write; applying puts it in force and ending withdraws it through its kind's back end
    first (a kind without a back end is recorded only). With ``role``: network actions are the
    operators' to decide, the others the analysts' and the desk's, and nobody approves what they
    proposed themselves."""
    step = DECISIONS.get(decision)
    if step is None:
        raise ActionDecisionError(f"unknown decision {decision!r}")
    readable = [m for m in measures if gov.config.measure_enabled(m)]
    found = act.current(gov, actor, readable, ids=[action_id])
    action = found.get(action_id)
    if action is None:
        raise ActionDecisionError(f"no action {action_id!r} that you may decide on")
    if role is not None:
        if not may_decide(role, action.kind.value):
            who = "operators" if action.kind.value in NETWORK_KINDS else "analysts and the desk"
            raise DecisionForbidden(f"{action.kind.value} actions are decided by {who}")
        if step is act.ActionState.APPROVED and proposers(gov).get(action_id) == actor:
            raise DecisionForbidden("you proposed this action: someone else approves it")
    if step is act.ActionState.APPLIED and action.kind is act.ActionKind.RPZ:
        # the zone is built from the lists at the time: `mamori act rpz` applies zones
        raise ActionDecisionError("RPZ zones are put in force by `mamori act rpz`, not here")
    backend = _backend_for(gov, action, actor)
    detail = {"decision": decision}
    try:
        if step is act.ActionState.APPROVED:
            [done] = act.approve(gov, [action], actor, detail=detail)
            if done.kind is act.ActionKind.SHARE:
                # the second person's approval is the confirmation: in force at once (the
                # finding is confirmed for the next publish or export)
                [done] = act.apply(gov, [done], actor, backend=backend, detail=detail)
        elif step is act.ActionState.REJECTED:
            [done] = act.reject(gov, [action], actor, detail=detail)
        elif step is act.ActionState.APPLIED:
            [done] = act.apply(gov, [action], actor, backend=backend, detail=detail)
        else:
            [done] = act.end(gov, [action], actor, backend=backend, detail=detail)
    except act.InvalidTransition as exc:
        raise ActionDecisionError(str(exc)) from None
    return done


def _backend_for(gov: Governance, action: act.Action, actor: str) -> act.Backend[object] | None:
    if action.kind is act.ActionKind.SHARE:
        return ShareBackend(gov, actor)
    if action.kind is act.ActionKind.RPZ and action.target.startswith(WARN_PREFIX):
        return None  # a warning lives in the warning zone: the next zone build leaves it out
    backend = default_backends(gov.config).get(action.kind)
    handles = getattr(backend, "handles", None)
    if handles is not None and not handles(action):
        return None  # a target its kind's back end does not carry out: recorded only
    return backend


@dataclass
class FalsePositiveOutcome:
    """What a false-positive verdict did to the finding's open actions."""

    taken_back: list[act.Action]  # rejected, ended or expired by the person who said so
    flagged: list[act.Action]  # left open for the role that decides them (audited flag)


#: the audit event that leaves an open action to the role that may end it
FLAG_EVENT = "action-flag"


def end_for_false_positive(
    gov: Governance,
    measures: Sequence[str],
    finding_id: str,
    actor: str,
    role: Role | None = None,
) -> FalsePositiveOutcome:
    """Take back every open action proposed from a finding found to be a false positive that
    ``role`` may decide (:func:`may_decide`; without ``role``, all): proposed and approved ones are
    rejected, applied ones ended (withdrawn by their back end first; an RPZ zone is rebuilt without
    the name by the next `mamori act rpz`). The others — network actions an analyst may not end —
    stay as they are and are flagged for the role that decides them (an ``action-flag`` audit
    entry, shown in that role's approvals)."""
    readable = [m for m in measures if gov.config.measure_enabled(m)]
    now = datetime.now(UTC)
    detail = {"reason": "false positive", "finding": finding_id}
    done: list[act.Action] = []
    flagged: list[act.Action] = []
    for a in act.current(gov, actor, readable).values():
        if a.finding_id != finding_id or a.state not in act.OPEN:
            continue
        if role is not None and not may_decide(role, a.kind.value):
            flagged.append(a)
        elif a.due(now):
            done += act.expire(gov, [a], actor, backend=_backend_for(gov, a, actor), now=now)
        elif a.state is act.ActionState.APPLIED:
            backend = None if a.kind is act.ActionKind.RPZ else _backend_for(gov, a, actor)
            done += act.end(gov, [a], actor, backend=backend, now=now, detail=detail)
        else:
            done += act.reject(gov, [a], actor, now=now, detail=detail)
    for measure in sorted({a.measure for a in flagged}):
        mine = [a for a in flagged if a.measure == measure]
        gov.audit.append(
            actor=actor,
            event=FLAG_EVENT,
            measure=measure,
            dataset="actions",
            detail={
                **detail,
                "action_ids": [a.action_id for a in mine],
                "for": sorted({"operator" if a.kind.value in NETWORK_KINDS else "analyst"
                               for a in mine}),
            },
        )  # fmt: skip
    return FalsePositiveOutcome(done, flagged)


def flagged_actions(gov: Governance) -> dict[str, str]:
    """Action id → why it was flagged for its deciders (the latest flag)."""
    from mamori.web.auditindex import audit_index

    t = audit_index(gov).table()
    t = t.filter(pc.equal(t.column("event"), FLAG_EVENT))
    out: dict[str, str] = {}
    for actor, detail in zip(
        t.column("actor").to_pylist(), t.column("detail").to_pylist(), strict=True
    ):
        try:
            d = json.loads(detail or "{}")
        except ValueError:
            continue
        for i in d.get("action_ids", []):
            out[str(i)] = f"{d.get('reason', 'flagged')}: finding {d.get('finding')} ({actor})"
    return out


DECISIONS = {
    "approve": act.ActionState.APPROVED,
    "reject": act.ActionState.REJECTED,
    "apply": act.ActionState.APPLIED,
    "end": act.ActionState.ENDED,
}


# ------------------------------------------------------------------------------ M14


@dataclass
class Traffic:
    by_hour: list[tuple[datetime, int, int]]  # hour, bytes, packets (scaled by sampling)
    top_ports: list[tuple[int, int, int]]  # protocol, port, bytes
    exporters: list[tuple[str, int, int]]  # exporter, bytes, flows
    interfaces: list[tuple[str, str, int]]  # exporter, input interface, bytes
    flows: int
    grant_seq: int
    since: datetime
    until: datetime
    marks: list[tuple[datetime, str, str]]  # time, label, "attack" | "action"


@dataclass(frozen=True)
class TrafficFilter:
    """A drill-down, every value parsed (never pasted as typed)."""

    exporter: str | None = None
    port: int | None = None
    protocol: int | None = None
    interface: int | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> tuple[TrafficFilter, list[str]]:
        errors: list[str] = []

        def num(key: str, hi: int) -> int | None:
            v = params.get(key, "").strip()
            if not v:
                return None
            if v.isdigit() and int(v) <= hi:
                return int(v)
            errors.append(f"{key}: not a number from 0 to {hi}")
            return None

        exporter = params.get("exporter", "").strip() or None
        if exporter is not None:
            try:
                exporter = str(ipaddress.ip_address(exporter))
            except ValueError:
                errors.append("exporter: not an address")
                exporter = None
        return (
            cls(exporter, num("port", 65535), num("protocol", 255), num("interface", 2**32 - 1)),
            errors,
        )

    def sql(self) -> str:
        # every value below passed a parser: an address or an integer, nothing else
        conds = []
        if self.exporter:
            conds.append(f"exporter = '{self.exporter}'")
        if self.port is not None:
            conds.append(f"dst_port = {self.port}")
        if self.protocol is not None:
            conds.append(f"protocol = {self.protocol}")
        if self.interface is not None:
            conds.append(f"(input_if = {self.interface} OR output_if = {self.interface})")
        return " AND ".join(conds) or "TRUE"


RANGES = {
    "24h": timedelta(hours=24),
    "72h": timedelta(hours=72),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


def traffic(
    gov: Governance,
    actor: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    span: timedelta | None = timedelta(hours=72),
    drill: TrafficFilter | None = None,
    top: int = 10,
) -> Traffic:
    """Aggregates over flow headers (M14): nothing per flow leaves this function. Without
    ``since``, the ``span`` before the latest record (or before ``until``)."""
    cols = [
        "time_start",
        "dst_port",
        "protocol",
        "packets",
        "bytes",
        "exporter",
        "sampling_rate",
        "input_if",
        "output_if",
    ]
    grant = gov.open("M14", "flows", cols, actor, start=since, end=until)
    try:
        where = (drill or TrafficFilter()).sql()
        base = grant.sql(f"SELECT * FROM {grant.name} WHERE {where}")
        latest = base.aggregate("max(time_start)").fetchall()[0][0]
        hi = until or (latest + timedelta(hours=1) if latest else datetime.now(UTC))
        lo = since or (hi - span if span else None)
        if lo is None:
            first = base.aggregate("min(time_start)").fetchall()[0][0]
            lo = first or hi - timedelta(hours=1)
        lo_s, hi_s = lo.astimezone(UTC).isoformat(), hi.astimezone(UTC).isoformat()
        rel = grant.sql(
            f"SELECT * FROM {grant.name} WHERE {where} AND time_start >= TIMESTAMPTZ '{lo_s}' "
            f"AND time_start < TIMESTAMPTZ '{hi_s}'"
        )
        # a record whose rate the exporter did not give counts once (a floor, never a guess)
        scale = "coalesce(sampling_rate, 1)"
        by_hour = rel.aggregate(
            f"date_trunc('hour', time_start) AS h, sum(bytes * {scale})::BIGINT, "
            f"sum(packets * {scale})::BIGINT",
            "date_trunc('hour', time_start)",
        ).fetchall()
        by_hour.sort(key=lambda r: r[0])
        ports = rel.aggregate(
            f"protocol, dst_port, sum(bytes * {scale})::BIGINT AS b", "protocol, dst_port"
        ).fetchall()
        ports.sort(key=lambda r: -(r[2] or 0))
        exporters = rel.aggregate(
            f"exporter, sum(bytes * {scale})::BIGINT AS b, count(*)", "exporter"
        ).fetchall()
        exporters.sort(key=lambda r: -(r[1] or 0))
        ifaces = rel.aggregate(
            f"exporter, input_if, sum(bytes * {scale})::BIGINT AS b", "exporter, input_if"
        ).fetchall()
        ifaces.sort(key=lambda r: -(r[2] or 0))
        flows = int(rel.aggregate("count(*)").fetchall()[0][0])
    finally:
        grant.sandbox.close()
    return Traffic(
        [(r[0], int(r[1] or 0), int(r[2] or 0)) for r in by_hour],
        [(int(r[0] or 0), int(r[1] or 0), int(r[2] or 0)) for r in ports[:top]],
        [(str(r[0]), int(r[1] or 0), int(r[2] or 0)) for r in exporters[:top]],
        [(str(r[0]), "" if r[1] is None else str(r[1]), int(r[2] or 0)) for r in ifaces[:top]],
        flows,
        grant.audit_seq,
        lo,
        hi,
        _marks(gov, actor, lo, hi),
    )


def _marks(
    gov: Governance, actor: str, lo: datetime, hi: datetime
) -> list[tuple[datetime, str, str]]:
    """Attacks (DDoS and reflection findings) and actions put in force, read under M14 (counts
    and times, no targets)."""
    out: list[tuple[datetime, str, str]] = []
    try:
        f = gov.open("M14", "findings", ["detected", "kind"], actor, start=lo, end=hi)
        try:
            t = f.arrow()
        finally:
            f.sandbox.close()
        t = t.filter(
            pc.is_in(t.column("kind"), value_set=pa.array(["ddos", "reflection", "spoofing"]))
        )
        out += [(r["detected"], f"attack: {r['kind']}", "attack") for r in t.to_pylist()]
        a = gov.open("M14", "actions", ["kind", "state", "start", "action_id"], actor)
        try:
            t = act.latest_table(a.arrow())
        finally:
            a.sandbox.close()
        t = t.filter(pc.is_valid(t.column("start")))
        out += [
            (r["start"], f"action: {r['kind']} ({r['state']})", "action")
            for r in t.to_pylist()
            if r["kind"] != "alert" and lo <= r["start"] <= hi
        ]
    except AccessRefused:
        pass
    return sorted(out)[:200]


def trends(gov: Governance, actor: str) -> dict[str, list[tuple[datetime, int]]]:
    """Counts per UTC day: findings (read under M14, kind and time only), alerts sent and
    opt-outs (from the audit log's action steps and consent changes: counts, never who)."""
    from mamori.web.auditindex import audit_index

    out: dict[str, list[tuple[datetime, int]]] = {}
    try:
        g = gov.open("M14", "findings", ["detected"], actor)
        try:
            rows = g.sql(
                f"SELECT date_trunc('day', detected) AS d, count(*) FROM {g.name} GROUP BY d"
            ).fetchall()
        finally:
            g.sandbox.close()
        out["findings"] = sorted((_utc(d), int(n)) for d, n in rows if d is not None)
    except AccessRefused:
        out["findings"] = []
    t = audit_index(gov).table()
    alerts: dict[datetime, int] = {}
    opt_outs: dict[datetime, int] = {}
    interesting = t.filter(
        pc.or_(
            pc.and_(
                pc.equal(t.column("event"), "write"),
                pc.fill_null(pc.match_substring(t.column("detail"), '"step": "applied"'), False),
            ),
            pc.and_(
                pc.equal(t.column("event"), "consent"),
                pc.fill_null(pc.match_substring(t.column("detail"), '"state": "out"'), False),
            ),
        )
    )
    for ts, event, detail in zip(
        interesting.column("ts").to_pylist(),
        interesting.column("event").to_pylist(),
        interesting.column("detail").to_pylist(),
        strict=True,
    ):
        day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        if event == "consent":
            opt_outs[day] = opt_outs.get(day, 0) + 1
            continue
        d = json.loads(detail or "{}")
        if d.get("kinds") == ["alert"]:
            alerts[day] = alerts.get(day, 0) + len(d.get("action_ids", []))
    out["alerts"] = sorted(alerts.items())
    out["opt_outs"] = sorted(opt_outs.items())
    return out


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class Contacts:
    """Who contacted a finding's endpoint and when: hosts numbered, never named."""

    hosts: list[tuple[str, list[datetime]]]  # "host 1" … with contact times, most active first
    intervals_s: list[float]  # seconds between one host's successive contacts
    since: datetime
    until: datetime
    flows: int
    grant_seq: int


def contacts(
    gov: Governance, finding: Mapping[str, Any], actor: str, *, top: int = 20
) -> Contacts | None:
    """The flows to a finding's endpoint in its time span, read under the finding's measure
    (it must read flows; M2 does): per inside host, when it made contact. Hosts are numbered by
    activity; their addresses stay in the sandbox."""
    measure = str(finding.get("measure") or "")
    ip = finding.get("ip")
    if (
        not ip
        or measure not in gov.catalogue
        or not gov.catalogue[measure].may_read("flows")
        or not gov.config.measure_enabled(measure)
    ):
        return None
    addr = str(ipaddress.ip_address(str(ip)))  # parsed: safe to name in the query
    lo = finding.get("first_seen") or finding.get("detected")
    hi = finding.get("last_seen") or finding.get("detected")
    if not isinstance(lo, datetime) or not isinstance(hi, datetime):
        return None
    lo, hi = lo - timedelta(minutes=5), hi + timedelta(minutes=5)
    try:
        grant = gov.open(
            measure,
            "flows",
            ["time_start", "src_addr", "dst_addr", "dst_port"],
            actor,
            start=lo,
            end=hi,
        )
    except AccessRefused:
        return None
    try:
        port = finding.get("port")
        cond = f"dst_addr = '{addr}'" + (f" AND dst_port = {int(port)}" if port is not None else "")
        t = grant.sql(
            f"SELECT time_start, dense_rank() OVER (ORDER BY n DESC, src_addr) AS host FROM "
            f"(SELECT time_start, src_addr, count(*) OVER (PARTITION BY src_addr) AS n "
            f"FROM {grant.name} WHERE {cond}) ORDER BY host, time_start"
        ).to_arrow_table()
    finally:
        grant.sandbox.close()
    per: dict[int, list[datetime]] = {}
    for when, host in zip(
        t.column("time_start").to_pylist(), t.column("host").to_pylist(), strict=True
    ):
        per.setdefault(int(host), []).append(_utc(when))
    intervals = [
        (b - a).total_seconds()
        for times in per.values()
        for a, b in itertools.pairwise(times)
        if b > a
    ]
    hosts = [(f"host {h}", times) for h, times in sorted(per.items())[:top]]
    return Contacts(hosts, intervals, lo, hi, t.num_rows, grant.audit_seq)


# ------------------------------------------------------------------ attacks (M13, M10)

ATTACK_KINDS = ("ddos", "reflection", "spoofing")
ATTACK_MEASURES = ("M10", "M13")
ATTACK_RANGES = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "72h": timedelta(hours=72),
    "7d": timedelta(days=7),
}


@dataclass
class Attacks:
    """Attacks found, the network rules that answered them, and the traffic to each attacked
    prefix, on one time axis."""

    since: datetime
    until: datetime
    step: timedelta
    findings: list[dict[str, Any]]  # the attack findings in the range, newest first
    rules: list[dict[str, Any]]  # network actions (nftables, FlowSpec, RTBH) in the range
    series: list[tuple[str, list[tuple[datetime, int]]]]  # per prefix: packets per step
    flows: int
    refused: list[str]
    grant_seq: int | None


def _prefix_of(ip: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(str(ip), strict=False)
    except ValueError:
        return None


def _prefilter(nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """A cheap SQL condition that keeps at least every address in ``nets`` (the exact test is
    done after, on the aggregated rows); every piece comes from a parsed network."""
    conds = []
    for n in nets:
        if n.prefixlen == n.max_prefixlen:
            conds.append(f"dst_addr = '{n.network_address}'")
        elif n.version == 4 and n.prefixlen >= 8:
            octets = str(n.network_address).split(".")[: n.prefixlen // 8]
            conds.append(f"starts_with(dst_addr, '{'.'.join(octets)}.')")
        else:
            return "TRUE"
    return " OR ".join(conds) or "FALSE"


def attacks(
    gov: Governance,
    actor: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    span: timedelta = timedelta(hours=24),
    buckets: int = 120,
    prefixes: int = 6,
) -> Attacks:
    """DDoS, reflection and spoofing findings and the network rules of M10 and M13, read through
    governance under those measures (the console's kept reads), and the packets per time step to
    each attacked prefix (flow headers read under M13 in the range only; aggregated here, nothing
    per flow leaves). Without ``since``/``until``: the ``span`` up to the latest attack."""
    loaded = findings_table(gov, ATTACK_MEASURES, actor)
    f = loaded.table
    f = f.filter(pc.is_in(f.column("kind"), value_set=pa.array(ATTACK_KINDS)))
    a_loaded = actions_table(gov, ATTACK_MEASURES, actor)
    a = a_loaded.table
    a = a.filter(pc.is_in(a.column("kind"), value_set=pa.array(sorted(NETWORK_KINDS))))
    refused = loaded.refused + a_loaded.refused
    if until is None:
        # up to the latest attack or rule step (not into the future), with a margin
        times = [
            pc.max(pc.coalesce(f.column("last_seen"), f.column("detected"))).as_py(),
            pc.max(pc.coalesce(a.column("end"), a.column("start"), a.column("created"))).as_py(),
        ]
        latest = max((_utc(t) for t in times if t is not None), default=None)
        now = datetime.now(UTC)
        until = min(latest + span / 8, now) if latest is not None else now
        if since is not None and until <= since:
            until = since + span
    if since is None:
        since = until - span
    step = max(timedelta(minutes=1), (until - since) / buckets)
    step = timedelta(seconds=round(step.total_seconds() / 60) * 60)
    lo = pa.scalar(since, pa.timestamp("ms", "UTC"))
    hi = pa.scalar(until, pa.timestamp("ms", "UTC"))
    start = pc.coalesce(f.column("first_seen"), f.column("detected"))
    end = pc.coalesce(f.column("last_seen"), f.column("detected"))
    f = f.filter(pc.and_(pc.less_equal(start, hi), pc.greater_equal(end, lo)))
    f_rows = f.sort_by([("detected", "descending")]).to_pylist()
    # a rule shows if it was in force (or waiting) at some time in the range
    r_start = pc.coalesce(a.column("start"), a.column("created"))
    r_end = pc.coalesce(a.column("end"), a.column("expires"))
    a = a.filter(pc.and_(pc.less_equal(r_start, hi), pc.greater_equal(r_end, lo)))
    rules = a.sort_by([("created", "descending")]).to_pylist()
    # the attacked prefixes, most attacked first (a spoofing finding names an exporter: no prefix)
    count: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}
    for r in f_rows:
        net = _prefix_of(r.get("ip")) if r["kind"] != "spoofing" else None
        if net is not None:
            count[net] = count.get(net, 0) + 1
    nets = sorted(count, key=lambda n: (-count[n], str(n)))[:prefixes]
    series: list[tuple[str, list[tuple[datetime, int]]]] = []
    flows, seq = 0, None
    if nets and gov.config.measure_enabled("M13"):
        cols = ["time_start", "dst_addr", "packets", "sampling_rate"]
        try:
            grant = gov.open("M13", "flows", cols, actor, start=since, end=until)
        except AccessRefused as exc:
            refused.append(exc.reason)
        else:
            try:
                secs = int(step.total_seconds())
                lo_s, hi_s = since.astimezone(UTC).isoformat(), until.astimezone(UTC).isoformat()
                agg = grant.sql(
                    f"SELECT time_bucket(INTERVAL '{secs} seconds', time_start, "
                    f"TIMESTAMPTZ '{lo_s}') AS b, dst_addr, "
                    "sum(packets * coalesce(sampling_rate, 1))::BIGINT AS p, count(*) AS n "
                    f"FROM {grant.name} WHERE time_start >= TIMESTAMPTZ '{lo_s}' "
                    f"AND time_start < TIMESTAMPTZ '{hi_s}' AND ({_prefilter(nets)}) "
                    "GROUP BY b, dst_addr"
                ).to_arrow_table()
            finally:
                grant.sandbox.close()
            seq = grant.audit_seq
            flows = int(pc.sum(agg.column("n")).as_py() or 0)
            addrs = agg.column("dst_addr").combine_chunks()
            for net in nets:
                mine = agg.filter(pa.array(in_networks(addrs, [net])))
                per = mine.group_by("b", use_threads=False).aggregate([("p", "sum")])
                pts = sorted(
                    (_utc(b), int(p or 0))
                    for b, p in zip(
                        per.column("b").to_pylist(), per.column("p_sum").to_pylist(), strict=True
                    )
                )
                series.append((str(net), pts))
    return Attacks(since, until, step, f_rows, rules, series, flows, refused, seq)
