"""Known bad endpoints (reputation, read under M2) as a table the detectors join against, in the
sandbox that holds their flows.

Only entries that name an address are usable on flows (M2 may not read resolver logs). An entry
counts from the time its source listed it (``first_seen``, else the time it was loaded), so a run
over a past window only uses what was known by the window's end — what makes a lead-time
evaluation honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mamori.governance import Governance, Sandbox

__all__ = ["SEED_CATEGORIES", "Seeds", "open_seeds"]

#: reputation categories whose contacts make an internal host a suspect
SEED_CATEGORIES = ("c2", "first-stage")


@dataclass(frozen=True)
class Seeds:
    """``name``: table with seed_id, ip, port (null = any), category, source, listed (epoch s)."""

    name: str
    count: int
    audit_seq: int


def open_seeds(
    gov: Governance, actor: str, sandbox: Sandbox, *, until: datetime | None = None
) -> Seeds:
    """Build, in ``sandbox``, the table of seeds known by ``until``."""
    grant = gov.open(
        "M2",
        "reputation",
        ["ip", "port", "category", "source", "first_seen", "loaded", "expires"],
        actor,
        justification="seeds for C&C discovery",
        sandbox=sandbox,
    )
    raw = grant.name
    cats = ", ".join(f"'{c}'" for c in SEED_CATEGORIES)
    cutoff = f"TIMESTAMPTZ '{until.isoformat()}'" if until is not None else None
    known = f"coalesce(first_seen, loaded) <= {cutoff}" if cutoff else "TRUE"
    alive = f"(expires IS NULL OR expires > {cutoff})" if cutoff else "TRUE"
    name = f"{raw}_seeds"
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
    sandbox.execute(f"CREATE TABLE {name} AS {sql}")
    count = sandbox.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]
    return Seeds(name=name, count=int(count), audit_seq=grant.audit_seq)
