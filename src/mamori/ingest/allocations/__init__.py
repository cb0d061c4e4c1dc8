"""Address-allocation logs → the ``allocations`` registry dataset.

Formats: FreeRADIUS ``detail`` files (:mod:`.radius`), Kea DHCPv4 memfile leases (:mod:`.kea`),
Juniper CGNAT port-block syslog (:mod:`.cgnat`) and plain CSV (:mod:`.csv`). Sessions are built
in :mod:`.common`. CGNAT port blocks also arrive as IPFIX NAT events at the flow collector
(:mod:`.nat_events` reads them as rows, :mod:`.ipfix_nat` pairs them; stored by
:mod:`mamori.ingest.collector`, not loaded from a file).

How rows look: a RADIUS session or DHCP lease is (address, subscriber). A CGNAT port block is
two-stage: (public address, port block, ``inside_addr``) with no subscriber — the holder of the
inside address at the time (from RADIUS or DHCP) is the subscriber. Governance's consent filter and
:mod:`mamori.attribute` both resolve the second stage; a CSV may also give a subscriber for a port
block directly (one stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from mamori.ingest.allocations.cgnat import parse_juniper_pba
from mamori.ingest.allocations.common import IngestReport, Issues, SubscriberMap, build_sessions
from mamori.ingest.allocations.csv import parse_allocations_csv
from mamori.ingest.allocations.kea import KeaKey, parse_kea_leases
from mamori.ingest.allocations.radius import parse_radius_detail

if TYPE_CHECKING:  # the flow decoder imports this package (NAT events): keep the store out of it
    from mamori.governance import Governance

__all__ = [
    "FORMATS",
    "AllocationFormat",
    "IngestReport",
    "KeaKey",
    "SubscriberMap",
    "load_allocations",
    "read_allocations",
]

AllocationFormat = Literal["radius", "kea", "cgnat-syslog", "csv"]
FORMATS: tuple[AllocationFormat, ...] = ("radius", "kea", "cgnat-syslog", "csv")


def read_allocations(
    path: Path,
    fmt: AllocationFormat,
    *,
    subscribers: SubscriberMap | None = None,
    kea_key: KeaKey = "hwaddr",
    timeout_s: float = 86400.0,
    skew_s: float = 2.0,
) -> tuple[pa.Table, IngestReport]:
    """Parse one file into allocation rows (no store access) and a report of what was found."""
    report = IngestReport(format=fmt, file=str(path))
    issues = Issues(report)
    if fmt == "csv":
        rows = parse_allocations_csv(path, issues)
        if subscribers is not None and rows.num_rows:
            mapped = subscribers.apply(rows.column("subscriber_id").combine_chunks())
            rows = rows.set_column(
                rows.column_names.index("subscriber_id"), "subscriber_id", mapped
            )
        return rows, report
    if fmt == "radius":
        events = parse_radius_detail(path, issues, timeout_s=timeout_s, skew_s=skew_s)
    elif fmt == "kea":
        events = parse_kea_leases(path, issues, key=kea_key)
    elif fmt == "cgnat-syslog":
        events = parse_juniper_pba(path, issues, timeout_s=timeout_s, skew_s=skew_s)
    else:
        raise ValueError(f"unknown allocation format {fmt!r}; known: {', '.join(FORMATS)}")
    return build_sessions(events, issues, subscribers=subscribers), report


def load_allocations(
    gov: Governance,
    path: Path,
    fmt: AllocationFormat,
    *,
    actor: str,
    subscribers: SubscriberMap | None = None,
    kea_key: KeaKey = "hwaddr",
    timeout_s: float | None = None,
    skew_s: float | None = None,
    dry_run: bool = False,
) -> IngestReport:
    """Parse ``path`` and store its allocations through governance (audited); returns the report.
    Bad lines are counted and reported with line numbers; the good ones around them are kept."""
    cfg = gov.config.attribution
    rows, report = read_allocations(
        path,
        fmt,
        subscribers=subscribers,
        kea_key=kea_key,
        timeout_s=cfg.session_timeout_s if timeout_s is None else timeout_s,
        skew_s=cfg.skew_s if skew_s is None else skew_s,
    )
    if not dry_run and rows.num_rows:
        gov.write_registry("allocations", rows, actor, source=fmt)
        report.rows_stored = rows.num_rows
    return report
