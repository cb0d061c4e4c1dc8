"""Load a feed into the ``reputation`` dataset, and read the reputation in force.

Every load of a source replaces that source's previous load: :func:`current_reputation` takes,
per source, the rows of its latest load (at or before ``at``) that have not expired. Older loads
stay in the store (until retention removes them), so what was in force at any past time can be
shown.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mamori.addresses import in_networks
from mamori.config import InputLimitsConfig, ReputationConfig
from mamori.governance import Governance, Grant, Sandbox
from mamori.ingest.reputation.abusech import parse_feodo, parse_threatfox, parse_urlhaus
from mamori.ingest.reputation.allowlist import people_allowlist
from mamori.ingest.reputation.common import LoadReport, Rows
from mamori.ingest.reputation.misp import parse_misp
from mamori.ingest.reputation.plain import parse_plain
from mamori.ingest.reputation.stix import parse_stix
from mamori.ingest.textlines import NotText, decode_text

__all__ = [
    "FORMATS",
    "FeedError",
    "current_reputation",
    "current_reputation_grant",
    "detect_format",
    "load_feed",
    "parse_feed",
]

log = logging.getLogger(__name__)

Parser = Callable[[Path, Rows, str], None]

#: format → (parser, default category, default confidence). Feodo Tracker lists an address only
#: after it answered as a C&C server, hence its higher default.
FORMATS: dict[str, tuple[Parser, str, float]] = {
    "feodo": (parse_feodo, "c2", 0.9),
    "urlhaus": (parse_urlhaus, "first-stage", 0.8),
    "threatfox": (parse_threatfox, "c2", 0.75),
    "stix": (parse_stix, "c2", 0.7),
    "misp": (parse_misp, "c2", 0.7),
    "plain": (parse_plain, "c2", 0.5),
}


class FeedError(ValueError):
    """The file as a whole cannot be read as the format (not a line in it)."""


def _head(path: Path, size: int = 8192) -> str:
    with path.open("rb") as fh:
        return decode_text(fh.read(size))[0]


def _is_json(path: Path) -> bool:
    return _head(path, 256).lstrip()[:1] in ("{", "[")


def detect_format(path: Path) -> str:
    """Guess the format from the start of the file."""
    head = _head(path)
    low = head.lower()
    if head.lstrip()[:1] in ("{", "["):
        if '"bundle"' in head or '"spec_version"' in head:
            return "stix"
        if '"Event"' in head or '"Attribute"' in head or '"response"' in head:
            return "misp"
        if '"ip_address"' in head:
            return "feodo"
        if '"ioc_value"' in head or '"ioc_type"' in head or '"query_status"' in head:
            return "threatfox"
        raise FeedError(f"{path}: JSON, but not a format Mamori reads; give --format")
    if "feodo tracker" in low or '"dst_ip"' in head or "dst_ip," in head:
        return "feodo"
    if "urlhaus" in low:
        return "urlhaus"
    if "threatfox" in low or "ioc_value" in low:
        return "threatfox"
    return "plain"


def parse_feed(
    path: Path,
    fmt: str | None = None,
    *,
    source: str | None = None,
    category: str | None = None,
    confidence: float | None = None,
    expires_days: float | None = None,
    loaded: datetime | None = None,
    limits: InputLimitsConfig | None = None,
) -> tuple[pa.Table, LoadReport]:
    """Parse ``path`` into a ``reputation`` table (not stored) and a report of what was bad.

    Raises :class:`FeedError` when the file as a whole is unusable (unknown format, broken
    JSON), :class:`~mamori.ingest.textlines.NotText` when it is not text at all (binary,
    UTF-16); single bad lines are counted in the report instead — so is an entry past
    ``limits`` (nested too deep, a STIX pattern too large)."""
    path = Path(path)
    if not path.is_file():
        raise FeedError(f"{path}: no such file")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise FeedError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    parser, default_cat, default_conf = FORMATS[fmt]
    src = source or (fmt if fmt in ("feodo", "urlhaus", "threatfox") else path.stem)
    try:
        rows = Rows(
            category=category,
            confidence=confidence,
            default_category=default_cat,
            default_confidence=default_conf,
            limits=limits,
        )
    except ValueError as exc:
        raise FeedError(str(exc)) from None
    variant = "json" if fmt in ("feodo", "threatfox") and _is_json(path) else "csv"
    try:
        parser(path, rows, variant)
    except NotText:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FeedError(f"{path}: not valid JSON for {fmt}: {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise FeedError(f"{path}: cannot read as {fmt}: {exc}") from None
    at = (loaded or datetime.now(UTC)).astimezone(UTC)
    table = rows.table(src[:128], at)
    if expires_days is not None:
        default = pa.scalar(at + timedelta(days=expires_days), table.schema.field("expires").type)
        filled = pa.compute.fill_null(table.column("expires"), default)
        table = table.set_column(table.schema.get_field_index("expires"), "expires", filled)
    by_cat, by_type = rows.counts()
    report = LoadReport(
        path=str(path),
        format=fmt + ("-json" if variant == "json" else ""),
        source=src,
        rows_loaded=table.num_rows,
        rows_bad=rows.n_bad,
        rows_skipped=rows.n_skipped,
        errors=sorted(rows.errors, key=lambda e: e.line),
        by_category=by_cat,
        by_type=by_type,
        loaded_at=at,
    )
    for e in rows.errors:
        log.info("%s line %d: %s", path, e.line, e.reason)
    if rows.n_bad:
        log.warning(
            "%s: %d malformed lines (first: line %d, %s); %d entries kept",
            path,
            rows.n_bad,
            rows.errors[0].line,
            rows.errors[0].reason,
            table.num_rows,
        )
    return table, report


def load_feed(
    gov: Governance,
    path: Path,
    fmt: str | None = None,
    *,
    actor: str,
    source: str | None = None,
    category: str | None = None,
    confidence: float | None = None,
    expires_days: float | None = None,
) -> LoadReport:
    """Parse ``path`` and store its good rows as the source's new list (audited as a registry
    load). Nothing is stored when no row is good: an unreadable download must not empty a list
    that was in force."""
    table, report = parse_feed(
        path,
        fmt,
        source=source,
        category=category,
        confidence=confidence,
        expires_days=expires_days,
        limits=gov.config.input_limits,
    )
    if table.num_rows:
        gov.write_registry("reputation", table, actor, source=report.source)
        report.stored = True
    return report


def current_reputation_grant(
    gov: Governance,
    measure: str,
    actor: str,
    at: datetime | None = None,
    *,
    drop_expired: bool = True,
    sandbox: Sandbox | None = None,
) -> Grant:
    """The reputation in force at ``at`` (default now), read for ``measure``: per source, its
    latest load at or before ``at``, without entries that expired by then (kept with
    ``drop_expired=False``, for matching past traffic against each entry's own validity). The
    grant lives in ``sandbox`` (a new one if none), next to the other inputs it is joined with;
    its ``name`` is a view of the entries in force. Entries the operator's allowlist
    (``reputation.allow_*``) covers are left out."""
    when = (at or datetime.now(UTC)).astimezone(UTC)
    grant = gov.open(
        measure, "reputation", None, actor, end=when + timedelta(microseconds=1), sandbox=sandbox
    )
    cols = ", ".join(f'"{c}"' for c in grant.columns)
    ts = f"TIMESTAMPTZ '{when.isoformat()}'"
    current = f"{grant.name}_current"
    grant.sandbox.execute(
        f"CREATE VIEW {current} AS SELECT {cols} FROM (SELECT *, max(loaded) OVER "
        f"(PARTITION BY source) AS _last FROM {grant.name} WHERE loaded <= {ts}) "
        "WHERE loaded = _last"
        + (f" AND (expires IS NULL OR expires > {ts})" if drop_expired else ""),
    )
    grant = dataclasses.replace(grant, name=current)
    allow = gov.config.reputation
    added = people_allowlist(gov)  # what analysts marked as false positives
    if added:
        allow = allow.model_copy(update={"allow_prefixes": (*allow.allow_prefixes, *added)})
    if allow.allow_prefixes or allow.allow_domains:
        cond = _allowed(grant, allow)
        kept = f"{current}_allowed"
        grant.sandbox.execute(
            f"CREATE VIEW {kept} AS SELECT * FROM {current} WHERE NOT coalesce({cond}, FALSE)"
        )
        grant = dataclasses.replace(grant, name=kept)
    return grant


def _allowed(grant: Grant, allow: ReputationConfig) -> str:
    """SQL condition over the grant's entries: the entry is on the operator's allowlist. The
    address test runs in NumPy over the distinct listed addresses (few), and the SQL names the
    hits."""
    conds = []
    if allow.allow_prefixes:
        sql = f"SELECT DISTINCT ip FROM {grant.name} WHERE ip IS NOT NULL"
        ips = grant.sql(sql).to_arrow_table()
        ips = ips.column(0).combine_chunks() if ips.num_rows else pa.array([], pa.string())
        hit = pc.filter(ips, pa.array(in_networks(ips, allow.allow_prefixes))).to_pylist()
        # the hits passed an address parser, so they hold no quote to escape
        if hit:
            conds.append("ip IN (" + ", ".join(f"'{ip}'" for ip in hit) + ")")
    for d in allow.allow_domains:  # validated names: letters, digits, '-', '_', '.'
        conds.append(f"(lower(domain) = '{d}' OR ends_with(lower(domain), '.{d}'))")
    return " OR ".join(conds) or "FALSE"


def current_reputation(
    gov: Governance, measure: str, actor: str, at: datetime | None = None
) -> pa.Table:
    """:func:`current_reputation_grant` as an Arrow table."""
    return current_reputation_grant(gov, measure, actor, at).arrow()
