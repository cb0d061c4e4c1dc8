"""The C&C list this ISP shares (measure M3), and the guard every export passes.

The list is aggregated endpoint data only: one row per (ip, port, protocol) that a detector named
as a C&C server, with the first and last time it was seen, a confidence and the detecting method.
:func:`guard` is the last check before anything leaves: it refuses — and audits the refusal — when
a row names an address in the ISP's own subscriber pools, when an address cannot be read (so cannot
be checked), or when a column other than :data:`ALLOWED_FIELDS` would be included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.addresses import in_networks
from mamori.config import IPNetwork
from mamori.governance import Governance

__all__ = [
    "ALLOWED_FIELDS",
    "LIST_SCHEMA",
    "ExportRefused",
    "ShareError",
    "c2_list",
    "guard",
    "in_pools",
]

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


def c2_list(gov: Governance, actor: str, *, min_score: float = 0.0) -> pa.Table:
    """The C&C list: findings of kind ``c2`` aggregated per (ip, port, protocol).

    Confidence is the highest score, rounded to two decimals so that it survives formats that
    carry it as a percentage (STIX). Missing first/last-seen times fall back to detection time.
    """
    grant = gov.open(
        "M3",
        "findings",
        [
            "detected",
            "kind",
            "method",
            "ip",
            "port",
            "protocol",
            "score",
            "first_seen",
            "last_seen",
        ],
        actor,
    )
    t = grant.arrow()
    t = t.filter(pc.and_(pc.equal(t["kind"], "c2"), pc.is_valid(t["ip"])))
    first = pc.coalesce(t["first_seen"], t["last_seen"], t["detected"])
    last = pc.coalesce(t["last_seen"], t["first_seen"], t["detected"])
    t = pa.table(
        {
            "ip": t["ip"],
            "port": t["port"],
            "protocol": t["protocol"],
            "first_seen": first,
            "last_seen": last,
            "score": t["score"],
            "method": t["method"],
        }
    )
    g = t.group_by(["ip", "port", "protocol"], use_threads=False).aggregate(
        [
            ("first_seen", "min"),
            ("last_seen", "max"),
            ("score", "max"),
            ("method", "min"),
        ]
    )
    if min_score > 0:  # on the endpoint's best score, so its first/last seen stay whole
        g = g.filter(pc.fill_null(pc.greater_equal(g["score_max"], min_score), False))
    conf = pc.divide(pc.round(pc.multiply(g["score_max"].cast(pa.float64()), 100.0)), 100.0)
    out = pa.table(
        {
            "ip": g["ip"],
            "port": g["port"],
            "protocol": g["protocol"],
            "first_seen": g["first_seen_min"],
            "last_seen": g["last_seen_max"],
            "confidence": conf.cast(pa.float32()),
            "method": g["method_min"],
        }
    ).cast(LIST_SCHEMA)
    return out.sort_by([("ip", "ascending"), ("port", "ascending"), ("protocol", "ascending")])
