"""The C&C list this ISP shares (measure M3), and the guard every export passes.

The list is aggregated endpoint data only: one row per (ip, port, protocol) that a detector named
as a C&C server, with the first and last time it was seen, a confidence and the detecting method.
:func:`guard` is the last check before anything leaves: it refuses — and audits the refusal — when
a row names an address in the ISP's own subscriber pools, when an address cannot be read (so cannot
be checked), or when a column other than :data:`ALLOWED_FIELDS` would be included.

Review before anything leaves: a finding is a *candidate* until an analyst confirms it in the
console or a feed lists its endpoint later (*corroborated*: :func:`reviewed_list` records it, as a
``review`` audit event, when it first sees the listing). Only confirmed and corroborated
endpoints are shared; candidates only with ``include_candidates`` (an explicit flag, written into
the share event's audit detail with how many endpoints of each state left), and rejected or
false-positive ones never.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.addresses import in_networks
from mamori.config import IPNetwork
from mamori.detect.reviews import CORROBORATED, SHAREABLE, WITHDRAWN, Reviews
from mamori.governance import Governance

__all__ = [
    "ALLOWED_FIELDS",
    "LIST_SCHEMA",
    "ExportRefused",
    "ReviewedList",
    "ShareError",
    "c2_list",
    "guard",
    "in_pools",
    "reviewed_list",
]

#: reputation categories that corroborate a C&C finding (as seeds: mamori.detect.seeds)
CORROBORATING = ("c2", "first-stage")

# What may leave the ISP, and nothing else: the endpoint, when it was seen, how sure we are, how.
ALLOWED_FIELDS = ("ip", "port", "protocol", "first_seen", "last_seen", "confidence", "method")

_TS = pa.timestamp("ms", tz="UTC")
LIST_SCHEMA = pa.schema(
    [
        pa.field("ip", pa.string(), nullable=False),
        pa.field("port", pa.uint16()),
        pa.field("protocol", pa.string()),
        pa.field("first_seen", _TS),
        pa.field("last_seen", _TS),
        pa.field("confidence", pa.float32()),
        pa.field("method", pa.string()),
    ]
)


class ShareError(Exception):
    """Base of sharing errors."""


class ExportRefused(ShareError, PermissionError):
    """An export that would let something other than aggregated endpoint data leave. Audited."""

    def __init__(self, reason: str, audit_seq: int) -> None:
        self.reason = reason
        self.audit_seq = audit_seq
        super().__init__(f"export refused: {reason} [audit entry {audit_seq}]")


def in_pools(addrs: pa.Array | Sequence[str | None], pools: Sequence[IPNetwork]) -> np.ndarray:
    """Boolean mask: which of ``addrs`` lie in ``pools``. Unreadable addresses count as inside —
    what cannot be checked must not leave — and an IPv4 address in IPv6 clothing (mapped, 6to4)
    is checked as the IPv4 address it carries."""
    return in_networks(addrs, pools, unreadable=True, embedded_v4=True)


def guard(gov: Governance, table: pa.Table, actor: str, *, what: str) -> None:
    """Refuse (audited) unless ``table`` holds only allowed fields and no subscriber address."""
    extra = [c for c in table.column_names if c not in ALLOWED_FIELDS]
    reason = ""
    if extra:
        reason = f"field(s) {extra} are not among the fields that may be shared {ALLOWED_FIELDS}"
    elif "ip" in table.column_names:
        mask = in_pools(table.column("ip").combine_chunks(), gov.config.pools())
        bad = int(mask.sum())
        if bad:
            reason = (
                f"{bad} of {table.num_rows} address(es) lie in the ISP's own subscriber pools "
                "or cannot be read; only C&C endpoints outside them may be shared"
            )
    if reason:
        entry = gov.audit.append(
            actor=actor,
            event="refused",
            measure="M3",
            dataset="findings",
            columns=table.column_names,
            detail={"mode": "export", "what": what, "reason": reason, "rows": table.num_rows},
        )
        raise ExportRefused(reason, entry.seq)


@dataclass(frozen=True)
class ReviewedList:
    """The list to share (columns of :data:`LIST_SCHEMA`), each endpoint's review state, and
    how many endpoints of each state there were before the review filter."""

    table: pa.Table
    states: list[str]
    held_back: dict[str, int]
    include_candidates: bool
    # endpoints whose share was ended or expired: listed as withdrawals, never as C&C
    withdrawn: pa.Table = field(default_factory=LIST_SCHEMA.empty_table)

    def counts(self) -> dict[str, int]:
        """Endpoints in the list per review state (the audit detail of a share event)."""
        return {k: self.states.count(k) for k in ("confirmed", CORROBORATED, "candidate")}


def c2_list(gov: Governance, actor: str, *, min_score: float = 0.0) -> pa.Table:
    """Every C&C endpoint found, whatever its review state (the console's view; what may be
    shared is :func:`reviewed_list`)."""
    return _aggregate(_findings(gov, actor), min_score)


def reviewed_list(
    gov: Governance, actor: str, *, min_score: float = 0.0, include_candidates: bool = False
) -> ReviewedList:
    """The C&C list that may leave: confirmed and corroborated endpoints (and candidates, with
    ``include_candidates``); never rejected ones. Records corroboration first."""
    t = _findings(gov, actor)
    _corroborate(gov, actor, t)
    ids = t.column("finding_id")
    state = Reviews(gov).column(ids)
    t = t.append_column("state", state)
    full = _aggregate(t, min_score, with_state=True)
    states = full.column("state").to_pylist()
    allowed = set(SHAREABLE) | ({"candidate"} if include_candidates else set())
    keep = pa.array([s in allowed for s in states], pa.bool_())
    held: dict[str, int] = {}
    for s_ in states:
        if s_ not in allowed:
            held[s_] = held.get(s_, 0) + 1
    kept = full.filter(keep)
    gone = full.filter(pc.equal(full.column("state"), WITHDRAWN))
    return ReviewedList(
        table=kept.drop_columns(["state"]).cast(LIST_SCHEMA),
        states=kept.column("state").to_pylist(),
        held_back=held,
        include_candidates=include_candidates,
        withdrawn=gone.drop_columns(["state"]).cast(LIST_SCHEMA),
    )


def _corroborate(gov: Governance, actor: str, t: pa.Table) -> None:
    """Record, for each candidate finding whose endpoint a feed now lists (the address with any
    port, or with the finding's port), that it is corroborated."""
    if t.num_rows == 0:
        return
    reviews = Reviews(gov)
    latest = reviews.latest()
    todo = [
        r for r in t.select(["finding_id", "measure", "ip", "port"]).to_pylist()
        if r["finding_id"] not in latest
    ]  # fmt: skip
    if not todo:
        return
    rep = gov.open("M3", "reputation", ["ip", "port", "category", "source"], actor).arrow()
    rep = rep.filter(pc.is_in(rep["category"], pa.array(CORROBORATING)))
    listed: dict[tuple[str, int | None], str] = {}
    for r in rep.select(["ip", "port", "source"]).to_pylist():
        if r["ip"]:
            listed.setdefault((r["ip"], r["port"]), str(r["source"] or "feed"))
    done: set[str] = set()
    for r in todo:
        src = listed.get((r["ip"], None)) or listed.get((r["ip"], r["port"]))
        if src is not None and r["finding_id"] not in done:
            done.add(r["finding_id"])
            reviews.corroborate(r["finding_id"], r["measure"] or "M2", actor, src)


def _findings(gov: Governance, actor: str) -> pa.Table:
    grant = gov.open(
        "M3",
        "findings",
        [
            "detected",
            "finding_id",
            "kind",
            "method",
            "ip",
            "port",
            "protocol",
            "score",
            "first_seen",
            "last_seen",
            "measure",
        ],
        actor,
    )
    t = grant.arrow()
    return t.filter(pc.and_(pc.equal(t["kind"], "c2"), pc.is_valid(t["ip"])))


# a withdrawn share outranks a confirmation (someone ended it), a rejection outranks both
_RANK = {
    "rejected": 5,
    "false-positive": 5,
    WITHDRAWN: 4,
    "confirmed": 3,
    CORROBORATED: 2,
    "candidate": 1,
}


def _aggregate(t: pa.Table, min_score: float, *, with_state: bool = False) -> pa.Table:
    """Findings aggregated per (ip, port, protocol). Confidence is the highest score, rounded
    to two decimals so that it survives formats that carry it as a percentage (STIX); missing
    first/last-seen times fall back to detection time. An endpoint's state is its strongest
    finding's: a rejection wins (an analyst said no), then confirmed, corroborated, candidate.
    """
    first = pc.coalesce(t["first_seen"], t["last_seen"], t["detected"])
    last = pc.coalesce(t["last_seen"], t["first_seen"], t["detected"])
    cols = {
        "ip": t["ip"],
        "port": t["port"],
        "protocol": t["protocol"],
        "first_seen": first,
        "last_seen": last,
        "score": t["score"],
        "method": t["method"],
    }
    aggs = [("first_seen", "min"), ("last_seen", "max"), ("score", "max"), ("method", "min")]
    if with_state:
        ranks = [_RANK.get(s, 1) for s in t.column("state").to_pylist()]
        cols["rank"] = pa.array(ranks, pa.int8())
        aggs.append(("rank", "max"))
    g = pa.table(cols).group_by(["ip", "port", "protocol"], use_threads=False).aggregate(aggs)
    if min_score > 0:  # on the endpoint's best score, so its first/last seen stay whole
        g = g.filter(pc.fill_null(pc.greater_equal(g["score_max"], min_score), False))
    conf = pc.divide(pc.round(pc.multiply(g["score_max"].cast(pa.float64()), 100.0)), 100.0)
    out = {
        "ip": g["ip"],
        "port": g["port"],
        "protocol": g["protocol"],
        "first_seen": g["first_seen_min"],
        "last_seen": g["last_seen_max"],
        "confidence": conf.cast(pa.float32()),
        "method": g["method_min"],
    }
    schema = LIST_SCHEMA
    if with_state:
        names = {v: k for k, v in _RANK.items() if k != "false-positive"}
        out["state"] = pa.array([names[int(x)] for x in g["rank_max"].to_pylist()], pa.string())
        schema = LIST_SCHEMA.append(pa.field("state", pa.string()))
    table = pa.table(out).cast(schema)
    return table.sort_by([("ip", "ascending"), ("port", "ascending"), ("protocol", "ascending")])
