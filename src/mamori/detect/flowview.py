"""Flows seen from the ISP's side: which end is ours, which is the outside endpoint.

Every flow detector looks at the same thing: an internal host (an address in the ISP's address
plan) talking to an external endpoint (address, port, protocol). :func:`open_oriented` opens the
flows through governance for the measure the detector declares (M2 for C&C discovery) into the
detector's sandbox and builds there one table with a row per flow record whose one end is inside
the plan and the other outside (dropped with :meth:`FlowView.close`); records between two outside
or two inside addresses say nothing about a subscriber's host talking to a server and are left
out.

Columns of the view: ``host``, ``ext``, ``eport`` (the external end's port), ``hport``, ``proto``, ``outbound``
(the host sent it), ``ts``/``te`` (epoch seconds), ``packets``, ``bytes``, ``rate`` (1-in-N;
null where the exporter's rate is unknown — never taken as 1, so such records count as seen but
add nothing to rate-scaled estimates and never pass as unsampled), ``est`` (the record shows an exchange, not a probe: for TCP an ACK without
RST — a scan's SYN or the RST it draws is not a conversation; UDP always), ``server_side``
(the internal host answers on a service port from an ephemeral outside port: the outside end is a
client of ours, not a server our host called).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from mamori.governance import Governance, Sandbox

__all__ = [
    "FLOW_COLUMNS",
    "FlowView",
    "internal_nets",
    "open_oriented",
    "rate_value",
    "v4_range_sql",
]

#: the flow columns M2 reads (all within its catalogue entry)
FLOW_COLUMNS = (
    "time_start",
    "time_end",
    "src_addr",
    "dst_addr",
    "src_port",
    "dst_port",
    "protocol",
    "tcp_flags",
    "packets",
    "bytes",
    "sampling_rate",
)

# Used when the configuration has no address plan (a lab capture): the private ranges are the
# only sensible guess at "inside".
_PRIVATE = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
)

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FlowView:
    """A table of oriented flows in the detector's sandbox, and what went into it."""

    name: str
    sandbox: Sandbox
    nets: tuple[Net, ...]
    plan_source: str  # "address_plan" | "private-ranges"
    audit_seq: int
    tables: list[str]
    #: records in the window whose sampling rate the exporter did not give (nor an override)
    unknown_rate: int = 0
    #: over a window of days, older days come as per-day aggregates (:mod:`.flowdays`) whose
    #: times are not the records' times; this table holds only the raw records (None: all are)
    raw_name: str | None = None
    #: days of the window read as per-day aggregates
    aggregated_days: int = 0

    def timing(self) -> FlowView:
        """The rows whose times are the records' own (what periodicity may be judged on)."""
        return self if self.raw_name is None else replace(self, name=self.raw_name)

    def close(self) -> None:
        """Drop the materialised tables (memory)."""
        for t in self.tables:
            self.sandbox.execute(f"DROP TABLE IF EXISTS {t}")

    def sql(self, query: str) -> Any:
        """Run ``query`` in the sandbox (it may name this table and the other inputs there)."""
        return self.sandbox.sql(query)


def rate_value(rate: Any) -> int | None:
    """A sampling rate of the view as evidence: ``None`` where the exporter's rate is unknown."""
    if rate is None or (isinstance(rate, float) and rate != rate):
        return None
    return int(rate)


def internal_nets(gov: Governance) -> tuple[tuple[Net, ...], str]:
    pools = gov.config.pools()
    if pools:
        return tuple(pools), "address_plan"
    return tuple(ipaddress.ip_network(p) for p in _PRIVATE), "private-ranges"


def _v4_int_sql(col: str, kind: str = "UBIGINT") -> str:
    parts = [f"TRY_CAST(split_part({col}, '.', {i}) AS {kind})" for i in range(1, 5)]
    return f"(({parts[0]} << 24) | ({parts[1]} << 16) | ({parts[2]} << 8) | {parts[3]})"


def v4_range_sql(col: str, nets: Sequence[Net]) -> str:
    """SQL that is true when the text address in ``col`` is an IPv4 address inside ``nets``."""
    v4 = [n for n in nets if n.version == 4]
    if not v4:
        return "FALSE"
    num = _v4_int_sql(col)
    ranges = " OR ".join(
        f"(__n BETWEEN {int(n.network_address)} AND {int(n.broadcast_address)})" for n in v4
    )
    # a lambda binds the converted number once per address
    return f"(NOT contains({col}, ':') AND list_transform([{num}], __n -> {ranges})[1])"


def _neutral_internal_sql(col: str, num: str, nets: Sequence[Net], v6_inside: str | None) -> str:
    """:func:`_internal_sql` in SQL both engines run (no lambda): ``num`` is ``col`` as a
    number (:func:`_v4_int_sql`, signed: a negative octet makes it negative, outside every
    range)."""
    v4 = [n for n in nets if n.version == 4]
    ranges = " OR ".join(
        f"({num} BETWEEN {int(n.network_address)} AND {int(n.broadcast_address)})" for n in v4
    )
    cond = f"coalesce(NOT contains({col}, ':') AND ({ranges}), FALSE)" if v4 else "FALSE"
    if v6_inside is not None:
        cond += f" OR list_contains({v6_inside}, {col})"
    return f"({cond})"


def open_oriented(
    gov: Governance,
    actor: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    purpose: str = "C&C discovery",
    measure: str = "M2",
    sandbox: Sandbox | None = None,
) -> FlowView:
    """Open flows under ``measure`` (justified act, ``purpose`` recorded) into ``sandbox`` (a new
    one if none) and build the oriented table there."""
    box = sandbox if sandbox is not None else gov.sandbox(label=f"{measure}-flows")
    grant = gov.open(
        measure,
        "flows",
        list(FLOW_COLUMNS),
        actor,
        justification=purpose,
        start=since,
        end=until,
        sandbox=box,
    )
    nets, source = internal_nets(gov)
    raw = grant.name
    window = []
    if since is not None:
        window.append(f"time_start >= TIMESTAMPTZ '{since.isoformat()}'")
    if until is not None:
        window.append(f"time_start < TIMESTAMPTZ '{until.isoformat()}'")
    where = " AND ".join(window) or "TRUE"

    v6_name: str | None = None
    v6_nets = [x for x in nets if x.version == 6]
    if v6_nets:
        # IPv6 membership is decided in Python on the distinct addresses (few), not per flow.
        distinct = box.sql(
            f"SELECT DISTINCT a FROM (SELECT src_addr a FROM {raw} UNION ALL "
            f"SELECT dst_addr FROM {raw}) WHERE contains(a, ':')",
        ).fetchall()
        inside: list[str] = []
        for (text,) in distinct:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if any(ip in x for x in v6_nets):
                inside.append(text)
        if inside:
            quoted = ", ".join("'" + a.replace("'", "") + "'" for a in inside)
            v6_name = f"[{quoted}]"

    # Inside or outside is decided once per distinct address (tens of thousands), not per record.
    addr_name = f"{raw}_addr"
    box.execute(
        f"CREATE TABLE {addr_name} AS SELECT a, {_neutral_internal_sql('a', 'n', nets, v6_name)}"
        f" AS inside FROM (SELECT a, {_v4_int_sql('a', 'BIGINT')} AS n FROM (SELECT DISTINCT a "
        f"FROM (SELECT src_addr AS a FROM {raw} WHERE {where} UNION "
        f"SELECT dst_addr FROM {raw} WHERE {where})))",
    )
    name = f"{raw}_oriented"
    view_sql = f"""
        SELECT
            CASE WHEN s_in THEN src_addr ELSE dst_addr END AS host,
            CASE WHEN s_in THEN dst_addr ELSE src_addr END AS ext,
            CAST(CASE WHEN s_in THEN dst_port ELSE src_port END AS INTEGER) AS eport,
            CAST(CASE WHEN s_in THEN src_port ELSE dst_port END AS INTEGER) AS hport,
            CAST(protocol AS SMALLINT) AS proto,
            s_in AS outbound,
            epoch(time_start) AS ts,
            epoch(time_end) AS te,
            CAST(packets AS DOUBLE) AS packets,
            CAST(bytes AS DOUBLE) AS bytes,
            CAST(nullif(sampling_rate, 0) AS DOUBLE) AS rate,
            CASE WHEN protocol = 6
                 THEN (coalesce(tcp_flags, 0) & 16) > 0 AND (coalesce(tcp_flags, 0) & 4) = 0
                 ELSE protocol = 17 END AS est,
            (CASE WHEN s_in THEN src_port ELSE dst_port END) < 1024
              AND (CASE WHEN s_in THEN dst_port ELSE src_port END) >= 1024 AS server_side
        FROM (
            SELECT f.*, s.inside AS s_in, d.inside AS d_in
            FROM {raw} f
            JOIN {addr_name} s ON f.src_addr = s.a
            JOIN {addr_name} d ON f.dst_addr = d.a
            WHERE {where}
        )
        WHERE s_in <> d_in AND protocol IN (6, 17)
    """
    unknown = box.sql(
        f"SELECT count(*) FROM {raw} WHERE {where} AND coalesce(sampling_rate, 0) = 0"
    ).fetchall()[0][0]
    # Materialised: every method reads it several times, and the joins above are the expensive
    # part. The granted rows are dropped once it is built (memory).
    box.execute(f"CREATE TABLE {name} AS {view_sql}")
    box.execute(f"DROP TABLE {addr_name}")
    box.execute(f"DROP TABLE {raw}")
    return FlowView(
        name=name,
        sandbox=box,
        nets=nets,
        plan_source=source,
        audit_seq=grant.audit_seq,
        tables=[name],
        unknown_rate=int(unknown),
    )
