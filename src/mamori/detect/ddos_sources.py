"""Who inside sent an outbound attack (M13): the subscribers' devices to ask to stop.

An outbound DDoS finding names either an inside source that flooded others by itself (scope
``host``) or an outside address flooded from inside (scope ``remote``: many devices, each below
any per-source threshold). For the latter, the flows to the victim during the attack are read
(M13, header fields only) and every inside source that sent at least ``min_share`` of the
attack's packets, from ``min_sampled`` sampled packets up, is one of its senders.

Each sender becomes a finding of kind ``attack-source`` (measure M13: address, first and last
time, the attack type as label, the victim and the DDoS finding behind it); ``mamori notify``
attributes it to the subscriber who held the address then, and asks them to stop, under
self-defence (:mod:`mamori.act.legal`). No subscriber is named here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from mamori.detect.flowview import internal_nets, v4_range_sql
from mamori.governance import Governance

__all__ = ["SourceParams", "attack_sources"]


class SourceParams(BaseModel):
    min_share: float = Field(
        default=0.005, gt=0, le=1, description="share of the attack's packets a sender sent"
    )
    min_sampled: int = Field(
        default=3, ge=1, description="sampled packets a sender needs (one is a guess)"
    )
    margin_s: float = Field(
        default=60.0, ge=0, description="flows read this long either side of the attack"
    )


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    from mamori.schemas import dataset

    return pa.Table.from_pylist(rows, schema=dataset("findings").arrow)


def attack_sources(
    gov: Governance,
    attacks: pa.Table,
    actor: str,
    params: SourceParams | None = None,
    *,
    write: bool = True,
) -> pa.Table:
    """``attacks``: DDoS findings (the ``findings`` schema); returns (and writes) the
    ``attack-source`` findings of the outbound ones."""
    p = params or SourceParams()
    rows: list[dict[str, Any]] = []
    nets, _ = internal_nets(gov)
    inside = v4_range_sql("src_addr", nets)
    now = datetime.now(UTC)
    for f in attacks.to_pylist():
        ev = json.loads(f["evidence"] or "{}")
        if f["kind"] != "ddos" or ev.get("direction") != "outbound":
            continue
        first, last = f["first_seen"], f["last_seen"]
        base = {"attack": f["finding_id"], "label": f["method"], "victim": None}
        if ev.get("scope") == "host":
            rows.append(_row(f["ip"], first, last, f["method"], {**base, "pps": ev.get("pps")},
                             now))  # fmt: skip
            continue
        grant = gov.open(
            "M13",
            "flows",
            ["time_start", "time_end", "src_addr", "dst_addr", "packets", "sampling_rate"],
            actor,
            justification="the senders of an outbound attack, to ask them to stop",
            start=first - timedelta(seconds=p.margin_s),
            end=last + timedelta(seconds=p.margin_s),
        )
        victim = str(f["ip"]).replace("'", "")
        senders = grant.sql(
            f"""
            WITH s AS (
                SELECT src_addr, sum(packets * sampling_rate) AS est, sum(packets) AS sampled,
                       min(time_start) AS first, max(time_end) AS last
                FROM {grant.name}
                WHERE dst_addr = '{victim}' AND {inside}
                GROUP BY src_addr
            )
            SELECT *, est / sum(est) OVER () AS share FROM s
            QUALIFY est / sum(est) OVER () >= {p.min_share} AND sampled >= {p.min_sampled}
            ORDER BY est DESC
            """
        ).fetchall()
        for src, est, sampled, s_first, s_last, share in senders:
            evidence = {**base, "victim": victim, "est_packets": int(est or 0),
                        "sampled_packets": int(sampled), "share": round(float(share), 4)}  # fmt: skip
            rows.append(_row(src, s_first, s_last, f["method"], evidence, now))
    table = _table(rows)
    if write and table.num_rows:
        gov.write("M13", "findings", table, actor, justification="senders of outbound attacks")
    return table


def _row(ip: str, first: datetime, last: datetime, method: str, evidence: dict[str, Any],
         now: datetime) -> dict[str, Any]:  # fmt: skip
    key = f"{ip}|{evidence['attack']}"
    return {
        "detected": now,
        "finding_id": "attack-source-" + hashlib.sha256(key.encode()).hexdigest()[:16],
        "kind": "attack-source",
        "method": method,
        "ip": ip,
        "port": None,
        "protocol": None,
        "score": float(evidence.get("share") or 1.0),
        "first_seen": first,
        "last_seen": last,
        "measure": "M13",
        "evidence": json.dumps(evidence, sort_keys=True),
    }
