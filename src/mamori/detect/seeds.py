"""Known bad endpoints (reputation, read under M2) as a DuckDB view the detectors join against.

Only entries that name an address are usable on flows (M2 may not read resolver logs). An entry
counts from the time its source listed it (``first_seen``, else the time it was loaded), so a run
over a past window only uses what was known by the window's end — what makes a lead-time
evaluation honest.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mamori.governance import Governance

__all__ = ["SEED_CATEGORIES", "Seeds", "open_seeds"]

#: reputation categories whose contacts make an internal host a suspect
SEED_CATEGORIES = ("c2", "first-stage")

_names = itertools.count(1)


@dataclass(frozen=True)
class Seeds:
    """``name``: view with seed_id, ip, port (null = any), category, source, listed (epoch s)."""

    name: str
    count: int
    audit_seq: int


def open_seeds(
    gov: Governance, actor: str, relation: Any, *, until: datetime | None = None
) -> Seeds:
    """Register the view of seeds known by ``until``. ``relation`` is any relation on the same
    connection (used only to reach it: detect may not import DuckDB)."""
    grant = gov.open(
        "M2",
        "reputation",
        ["ip", "port", "category", "source", "first_seen", "loaded", "expires"],
        actor,
        justification="seeds for C&C discovery",
    )
    n = next(_names)
    raw = f"m2_rep_{n}"
    grant.relation.create_view(raw, replace=True)
    cats = ", ".join(f"'{c}'" for c in SEED_CATEGORIES)
    cutoff = f"TIMESTAMPTZ '{until.isoformat()}'" if until is not None else None
    known = f"coalesce(first_seen, loaded) <= {cutoff}" if cutoff else "TRUE"
    alive = f"(expires IS NULL OR expires > {cutoff})" if cutoff else "TRUE"
    name = f"m2_seeds_{n}"
    sql = f"""
        SELECT row_number() OVER (ORDER BY ip, port) AS seed_id, ip, port, category, source,
               listed
        FROM (
            SELECT ip, CAST(port AS INTEGER) AS port, min(category) AS category,
                   min(source) AS source, min(epoch(coalesce(first_seen, loaded))) AS listed
            FROM {raw}
            WHERE ip IS NOT NULL AND category IN ({cats}) AND {known} AND {alive}
            GROUP BY ip, port
        )
    """
    grant.relation.query(raw + "_s", sql).create_view(name, replace=True)
    count = relation.query(name + "_c", f"SELECT count(*) FROM {name}").fetchall()[0][0]
    return Seeds(name=name, count=int(count), audit_seq=grant.audit_seq)
