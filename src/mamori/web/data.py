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

from mamori.governance import AccessRefused, Governance
from mamori.schemas import ACTIONS

__all__ = [
    "STATE_RANK",
    "ActionDecisionError",
    "Read",
    "actions",
    "alerts",
    "decide_action",
    "findings",
    "latest_versions",
    "traffic",
]

# Action rows are versioned: a decision writes a new row. States only move forward, so the row
# with the highest rank is the current one (ties: the later start/end wins).
STATE_RANK = {"pending": 0, "active": 1, "rejected": 2, "ended": 2, "expired": 2}
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


def latest_versions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The current version of each action (see :data:`STATE_RANK`)."""
    best: dict[str, dict[str, Any]] = {}

    def key(r: dict[str, Any]) -> tuple[int, datetime, datetime]:
        lo = datetime.min.replace(tzinfo=UTC)
        return (STATE_RANK.get(r["state"], 0), r.get("end") or lo, r.get("start") or lo)

    for r in rows:
        cur = best.get(r["action_id"])
        if cur is None or key(r) > key(cur):
            best[r["action_id"]] = r
    return list(best.values())


def effective_state(row: dict[str, Any], now: datetime) -> str:
    """An active action whose end has passed is shown as expired (no write needed)."""
    end = row.get("end")
    if row["state"] == "active" and end is not None and end <= now:
        return "expired"
    return str(row["state"])


def actions(
    gov: Governance, measures: Sequence[str], actor: str, *, target: str | None = None
) -> Read:
    tables, refused = _read(gov, measures, "actions", actor)
    rows = latest_versions([r for t in tables for r in t.to_pylist()])
    now = datetime.now(UTC)
    for r in rows:
        r["effective_state"] = effective_state(r, now)
    if target:
        rows = [r for r in rows if target in (r.get("target") or "")]
    rows.sort(key=lambda r: r["created"], reverse=True)
    return Read(rows[:ROW_LIMIT], refused, len(rows) > ROW_LIMIT)


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
    """A decision that does not apply to the action's current state."""


# decision -> (states it applies to, new state)
DECISIONS = {
    "approve": (("pending",), "active"),
    "reject": (("pending",), "rejected"),
    "end": (("active",), "ended"),
}


def decide_action(
    gov: Governance, measures: Sequence[str], action_id: str, decision: str, actor: str
) -> dict[str, Any]:
    """Approve, reject or end an action: a new version of its row, written under its measure."""
    if decision not in DECISIONS:
        raise ActionDecisionError(f"unknown decision {decision!r}")
    current = [r for r in actions(gov, measures, actor).rows if r["action_id"] == action_id]
    if not current:
        raise ActionDecisionError(f"no action {action_id!r} that you may decide on")
    row = dict(current[0])
    state = row["effective_state"]
    allowed, new_state = DECISIONS[decision]
    if state not in allowed:
        raise ActionDecisionError(
            f"action {action_id} is {state}; {decision} applies only to {', '.join(allowed)}"
        )
    now = datetime.now(UTC)
    version = {c: row.get(c) for c in ACTIONS.column_names}
    version["state"] = new_state
    if decision == "approve":
        version["start"] = now
        version["approved_by"] = actor
        if version["end"] is not None and version["end"] <= now:
            version["end"] = None  # a stale expiry from the proposal would end it at once
    else:
        version["end"] = now
    gov.write(
        row["measure"],
        "actions",
        pa.Table.from_pylist([version], schema=ACTIONS.arrow),
        actor,
        basis=row["legal_basis"],
        detail={"action_id": action_id, "decision": decision},
    )
    gov.audit.append(
        actor=actor,
        event="action",
        measure=row["measure"],
        legal_basis=row["legal_basis"],
        dataset="actions",
        detail={
            "action_id": action_id,
            "decision": decision,
            "from": state,
            "to": new_state,
            "kind": row["kind"],
        },
    )
    return version


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
