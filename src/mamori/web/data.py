"""What the console pages read, always through governance and under the view's measures.

Findings, actions and alerts are read under the measure that made them (a row of another measure
is dropped, so no page serves one measure's data under another's purpose). Filters are applied on
Arrow tables with compute kernels, never by pasting user input into SQL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mamori.act import base as act
from mamori.act.backends import default_backends
from mamori.governance import AccessRefused, Governance

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


def _read(
    gov: Governance,
    measures: Sequence[str],
    dataset: str,
    actor: str,
    columns: Sequence[str] | None = None,
) -> tuple[list[pa.Table], list[str]]:
    tables: list[pa.Table] = []
    refused: list[str] = []
    for m in measures:
        measure = gov.catalogue[m]
        if not gov.config.measure_enabled(m) or not measure.may_read(dataset):
            continue
        try:
            grant = gov.open(m, dataset, columns, actor)
        except AccessRefused as exc:
            refused.append(exc.reason)
            continue
        t = grant.arrow()
        if "measure" in t.column_names:
            t = t.filter(pc.equal(t.column("measure"), m))
        tables.append(t)
    return tables, refused


def _rows(tables: list[pa.Table], sort: str) -> tuple[list[dict[str, Any]], bool]:
    rows = [r for t in tables for r in t.to_pylist()]
    rows.sort(key=lambda r: r.get(sort) or datetime.min.replace(tzinfo=UTC), reverse=True)
    return rows[:ROW_LIMIT], len(rows) > ROW_LIMIT


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
    rows, cut = _rows(tables, "created")
    return Read(rows, refused, cut)


class ActionDecisionError(ValueError):
    """A decision that does not apply to the action (unknown, not this viewer's, or not a step of
    its life cycle from where it is)."""


def decide_action(
    gov: Governance, measures: Sequence[str], action_id: str, decision: str, actor: str
) -> act.Action:
    """Approve, reject or end an action through the action contract (:mod:`mamori.act.base`):
    a new version of its row, written under its measure and audited by the write; ending one
    withdraws it through its kind's back end first."""
    step = DECISIONS.get(decision)
    if step is None:
        raise ActionDecisionError(f"unknown decision {decision!r}")
    readable = [m for m in measures if gov.config.measure_enabled(m)]
    found = act.current(gov, actor, readable, ids=[action_id])
    action = found.get(action_id)
    if action is None:
        raise ActionDecisionError(f"no action {action_id!r} that you may decide on")
    backend = default_backends(gov.config).get(action.kind)
    detail = {"decision": decision}
    try:
        if step is act.ActionState.APPROVED:
            [done] = act.approve(gov, [action], actor, detail=detail)
        elif step is act.ActionState.REJECTED:
            [done] = act.reject(gov, [action], actor, detail=detail)
        else:
            [done] = act.end(gov, [action], actor, backend=backend, detail=detail)
    except act.InvalidTransition as exc:
        raise ActionDecisionError(str(exc)) from None
    return done


DECISIONS = {
    "approve": act.ActionState.APPROVED,
    "reject": act.ActionState.REJECTED,
    "end": act.ActionState.ENDED,
}


# ------------------------------------------------------------------------------ M14


@dataclass
class Traffic:
    by_hour: list[tuple[datetime, int, int]]  # hour, bytes, packets (scaled by sampling)
    top_ports: list[tuple[int, int, int]]  # protocol, port, bytes
    exporters: list[tuple[str, int, int]]  # exporter, bytes, flows
    flows: int
    grant_seq: int


def traffic(gov: Governance, actor: str, *, hours: int = 72, top: int = 10) -> Traffic:
    """Aggregates over flow headers (M14): nothing per flow leaves this function."""
    grant = gov.open(
        "M14",
        "flows",
        ["time_start", "dst_port", "protocol", "packets", "bytes", "exporter", "sampling_rate"],
        actor,
    )
    rel = grant.table()
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
    flows = int(rel.aggregate("count(*)").fetchall()[0][0])
    return Traffic(
        [(r[0], int(r[1] or 0), int(r[2] or 0)) for r in by_hour[-hours:]],
        [(int(r[0] or 0), int(r[1] or 0), int(r[2] or 0)) for r in ports[:top]],
        [(str(r[0]), int(r[1] or 0), int(r[2] or 0)) for r in exporters[:top]],
        flows,
        grant.audit_seq,
    )
