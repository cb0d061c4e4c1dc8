"""Infected-host detection by matching (measure M4): flows and resolver queries against the C&C
lists in force.

* Flows: a flow *to* a listed C&C address (and port, when the entry names one) makes the flow's
  source the subscriber side; a flow *from* one (the C&C server's answer, often the only direction
  a sampling router kept) makes its destination the subscriber side.
* Resolver queries: the queried name and each of its parent domains against listed C&C names.
* An entry counts only while valid: from the source's first-seen time (or always, when it gives
  none) until it expires.

Everything is read through governance for M4, so the rows of subscribers who opted out are gone
before any comparison; the joins run in DuckDB on the grants' relations. Matches are grouped into
findings per subscriber-side address (per address *and port* inside CGNAT pools, where an address
alone names no one), split where the address was quiet for longer than ``gap``. Each finding's
matched communications are written to ``matches`` (kept 30 days, for the alert) and the finding to
``findings``; the evidence holds counts and indicators, never who the subscriber is.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from mamori.detect.base import DetectorParams, DetectorRun, Window, section
from mamori.governance import Governance, Sandbox
from mamori.ingest.reputation import current_reputation_grant
from mamori.schemas import FINDINGS

__all__ = ["InfectedDetector", "InfectedParams", "MatchReport", "match_reputation"]

MEASURE = "M4"
_FOREVER = "TIMESTAMPTZ '9999-12-31 00:00:00+00'"
_ORIGIN = "TIMESTAMPTZ '0001-01-01 00:00:00+00'"
_PROTO = {6: "tcp", 17: "udp"}


class InfectedParams(DetectorParams):
    """``[detect.infected]``: infected-host detection by matching C&C lists (M4)."""

    categories: tuple[Literal["c2", "first-stage", "malware-site", "phishing"], ...] = Field(
        default=("c2",), min_length=1, description="list categories a contact is matched against"
    )
    session_gap_minutes: float = Field(
        default=60.0, gt=0, le=7 * 24 * 60, description="a quieter address starts a new finding"
    )
    cgnat_port_block: int = Field(
        default=0,
        ge=0,
        le=65536,
        description="ports per subscriber block on CGNAT addresses (aligned blocks); 0 = unknown: "
        "one finding per address and port",
    )
    popular_share: float = Field(
        default=0.1,
        gt=0,
        le=1.0,
        description="an entry matched by more than this share of the active subscriber "
        "addresses is held back as a probable wrong listing (a CDN, a cloud service)",
    )
    popular_min_addresses: int = Field(
        default=20, ge=1, description="…and by at least this many addresses"
    )
    service_share: float = Field(
        default=0.01,
        gt=0,
        le=1.0,
        description="an entry that a stable population reached throughout the window (in every "
        "one of service_slices parts of it, listed then or not) is an established service "
        "listed by mistake, held for review, when that population is more than this share of "
        "the active subscriber addresses: a C&C's population is small next to the subscriber "
        "base, and C&C rotate",
    )
    service_min_addresses: int = Field(
        default=5,
        ge=1,
        description="…and at least this many addresses (a stable population, not a few devices)",
    )
    service_slices: int = Field(
        default=3,
        ge=2,
        le=1000,
        description="parts the window is cut into for service_share; an address belongs to the "
        "stable population when it reached the entry in every part. Run over the longest "
        "window retention allows (days): 'throughout' then means the observation history. "
        "At low sampling rates few addresses are seen in every part, and the rule holds nothing",
    )
    service_min_history_hours: float = Field(
        default=2.0,
        ge=0,
        description="the established-service rule applies only to windows at least this long: "
        "over minutes every beacon looks steady, and no C&C has had time to arrive or rotate",
    )
    link_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="a subscriber address that connects to a listed address within this many "
        "seconds of asking the resolver for a listed name shows the name resolving to the "
        "address: the two entries are one endpoint, and holding one for review holds the other",
    )
    link_min_pairs: int = Field(
        default=3,
        ge=1,
        description="…seen at least this many times (a query and a connection once together "
        "could be chance)",
    )
    link_min_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="…and after at least this share of the name's queries from the addresses "
        "that reached the address: a name that resolves to an address is followed by a "
        "connection to it nearly every time, a device that happens to talk to both only now "
        "and then",
    )
    ordinary_min_addresses: int = Field(
        default=5,
        ge=1,
        description="a bare-address entry (no port) that at least this many subscriber "
        "addresses reach with ordinary traffic (web-like sizes, browsing hours, no beacon "
        "rhythm) is held for review, not alerted on: a popular benign site listed by mistake",
    )
    ordinary_min_addresses_port: int = Field(
        default=10,
        ge=1,
        description="…for an entry that names a port: a listed port is more specific, so more "
        "subscribers are needed",
    )
    ordinary_min_packet_bytes: float = Field(
        default=600.0,
        ge=0,
        description="web-like sizes: the median bytes per packet of the flow records from the "
        "listed endpoint (pages and images fill their packets) at least this; a C&C's answers "
        "are small. Per packet, so that it holds on sampled records too",
    )
    ordinary_max_regularity: float = Field(
        default=0.2,
        ge=0,
        description="no beacon rhythm: the median, over subscribers with at least four "
        "contacts, of the spread of their intervals (MAD / median) above this (a beacon's is "
        "near 0); subscribers seen too few times (sampling) show no rhythm",
    )
    ordinary_max_night_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="browsing hours: at most this share of the contacts between 01:00 and "
        "06:00 local time (bots call home around the clock)",
    )
    local_utc_offset_hours: float = Field(
        default=9.0, ge=-12, le=14, description="the subscribers' local time (browsing hours)"
    )
    memory_limit_mb: int | None = Field(
        default=None,
        ge=64,
        description="memory of the matching sandbox (spills to the store past it); unset: "
        "[governance] sandbox_memory_limit_mb",
    )


class MatchReport(BaseModel):
    """What a matching run did; ``findings`` are JSON-ready (as ``detect infected --json``)."""

    since: datetime | None
    until: datetime | None
    indicators_ip: int
    indicators_domain: int
    flow_matches: int
    dns_matches: int
    matches_stored: int
    #: listed endpoints held for review as probable wrong listings, not alerted on: indicator,
    #: subscriber addresses that contacted it, active subscriber addresses in the window, and
    #: why ("popular": a large share of the subscribers; "ordinary traffic": many of them, the
    #: way people browse)
    held_back: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    seconds: float


def _v4_int(col: str) -> str:
    """SQL: an IPv4 text column as an integer (NULL for anything else)."""
    parts = " + ".join(
        f"(TRY_CAST(split_part({col}, '.', {k + 1}) AS UBIGINT) << {24 - 8 * k})" for k in range(4)
    )
    return f"(CASE WHEN regexp_full_match({col}, '\\d+\\.\\d+\\.\\d+\\.\\d+') THEN {parts} END)"


def _ranges(x: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str | None:
    """SQL condition: the IPv4 integer ``x`` lies in one of the IPv4 ``nets`` (IPv6 ones are not
    checked here)."""
    v4 = [n for n in nets if n.version == 4]
    if not v4:
        return None
    conds = [f"{x} BETWEEN {int(n.network_address)} AND {int(n.broadcast_address)}" for n in v4]
    return "(" + " OR ".join(conds) + ")"


def _in_nets(col: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str | None:
    """SQL condition: the address text ``col`` lies in one of the IPv4 ``nets``; when ``nets``
    has IPv6 prefixes, every IPv6 address passes (DuckDB has no IPv6 arithmetic without an
    extension; governance's consent filter still applies to them)."""
    v4 = _ranges(_v4_int(col), nets)
    if any(n.version == 6 for n in nets):
        return f"({v4} OR contains({col}, ':'))" if v4 else f"contains({col}, ':')"
    return v4


def _fid(ip: str, port: int, first: datetime) -> str:
    key = f"{MEASURE}|reputation|{ip}|{port}|{first.isoformat()}"
    return "inf-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _sql(
    rep: str,
    flows: str,
    dns: str,
    *,
    categories: tuple[str, ...],
    pool_cond: str | None,
    cgnat_cond: str | None,
    gap_s: int,
    port_block: int,
    popular_share: float,
    popular_min: int,
    active: int,
    ordinary: InfectedParams | None = None,
    history: tuple[float, float] | None = None,
) -> str:
    cats = ", ".join("'" + c.replace("'", "''") + "'" for c in categories)
    keep = pool_cond.replace("{ip}", "ip") if pool_cond else "TRUE"
    cgnat = cgnat_cond.replace("{ip}", "ip") if cgnat_cond else "FALSE"
    block = f"port::INTEGER // {port_block} * {port_block}" if port_block else "port::INTEGER"
    return f"""
WITH rep AS (
    SELECT indicator_type, ip, port, domain, confidence, malware, source,
           coalesce(first_seen, {_ORIGIN}) AS vf, coalesce(expires, {_FOREVER}) AS vu
    FROM {rep} WHERE category IN ({cats})
),
rep_ip AS (SELECT * FROM rep WHERE ip IS NOT NULL AND indicator_type IN ('ip', 'ip-port')),
rep_dom AS (SELECT * FROM rep WHERE domain IS NOT NULL AND indicator_type = 'domain'),
-- one pass over the flows keeps those with a listed address on either side
fl AS MATERIALIZED (
    SELECT * FROM {flows}
    WHERE dst_addr IN (SELECT ip FROM rep_ip) OR src_addr IN (SELECT ip FROM rep_ip)
),
-- every contact with a listed address, valid then or not (the history ``service`` reads)
fm_all AS MATERIALIZED (
    SELECT f.time_start AS ts, f.src_addr AS ip, f.src_port AS port, f.protocol,
           f.dst_addr AS peer, f.dst_port AS peer_port, 'to' AS via,
           coalesce(f.sampling_rate, 1) AS weight, r.ip AS rip, r.port AS rport,
           r.confidence, r.malware, r.source, f.bytes, f.packets, r.vf, r.vu
    FROM fl f JOIN rep_ip r
      ON f.dst_addr = r.ip AND (r.port IS NULL OR f.dst_port = r.port)
    UNION ALL
    SELECT f.time_start, f.dst_addr, f.dst_port, f.protocol, f.src_addr, f.src_port, 'from',
           coalesce(f.sampling_rate, 1), r.ip, r.port, r.confidence, r.malware, r.source,
           f.bytes, f.packets, r.vf, r.vu
    FROM fl f JOIN rep_ip r
      ON f.src_addr = r.ip AND (r.port IS NULL OR f.src_port = r.port)
),
fm_raw AS (SELECT * FROM fm_all WHERE ts >= vf AND ts < vu),
-- one row per matched flow: the most specific entry (address and port over address alone)
fm AS (
    SELECT ts, ip, port, protocol, via, weight,
           arg_max(rip || coalesce(':' || rport::VARCHAR, ''), (rport IS NOT NULL)::INT)
               AS indicator,
           max(confidence) AS confidence, list(DISTINCT malware) AS malware,
           list(DISTINCT source) AS sources, max(bytes) AS bytes, max(packets) AS packets
    FROM fm_raw GROUP BY ts, ip, port, protocol, peer, peer_port, via, weight
),
dq AS (
    SELECT ts, client_addr, client_port, qname, string_split(qname, '.') AS parts
    FROM {dns} WHERE qname IS NOT NULL
),
dn AS (
    SELECT ts, client_addr, client_port, qname,
           array_to_string(parts[i:], '.') AS name
    FROM (SELECT *, unnest(generate_series(1, len(parts) - 1)) AS i FROM dq)
),
dj AS MATERIALIZED (
    SELECT q.ts, q.client_addr, q.client_port, q.qname, r.domain, r.vf, r.vu, r.confidence,
           r.malware, r.source
    FROM dn q JOIN rep_dom r ON q.name = r.domain
),
dm AS (
    SELECT ts, client_addr AS ip, client_port AS port, NULL::UTINYINT AS protocol,
           'dns' AS via, 1::BIGINT AS weight, arg_max(domain, length(domain)) AS indicator,
           max(confidence) AS confidence, list(DISTINCT malware) AS malware,
           list(DISTINCT source) AS sources, NULL::DOUBLE AS bytes,
           NULL::DOUBLE AS packets
    FROM dj WHERE ts >= vf AND ts < vu
    GROUP BY ts, client_addr, client_port, qname
),
-- MATERIALIZED: the subscriber-pool test runs on matches only, not pushed down to every flow
mu AS MATERIALIZED (SELECT * FROM fm UNION ALL BY NAME SELECT * FROM dm),
m AS MATERIALIZED (SELECT * FROM mu WHERE {keep}),
pop AS (SELECT indicator, count(DISTINCT ip) AS n FROM m GROUP BY indicator),
{_ordinary_sql(ordinary)}
{_service_sql(ordinary, history, keep, active)}
-- one reason per held entry, the strongest first
held_all AS (
    SELECT indicator, n, 1 AS pri, 'popular' AS why FROM pop
    WHERE n >= {popular_min} AND n > {popular_share * active}
    UNION ALL SELECT indicator, n, 2, 'established service' FROM service
    UNION ALL SELECT indicator, n, 3, 'ordinary traffic' FROM ordinary
),
held0 AS (SELECT indicator, arg_min(n, pri) AS n, arg_min(why, pri) AS why
          FROM held_all GROUP BY indicator),
{_link_sql(ordinary)}
-- a listed name and the listed address it resolves to are one endpoint: held together
held AS (
    SELECT indicator, n AS addresses, {active}::BIGINT AS active, why FROM held0
    UNION ALL
    SELECT x.other, any_value(p.n), {active}::BIGINT,
           'same endpoint as ' || min(x.indicator)
    FROM (SELECT name AS indicator, addr AS other FROM link
          UNION ALL SELECT addr, name FROM link) x
    JOIN held0 h ON h.indicator = x.indicator
    LEFT JOIN pop p ON p.indicator = x.other
    WHERE x.other NOT IN (SELECT indicator FROM held0)
    GROUP BY x.other
),
k AS (
    SELECT *, CASE WHEN {cgnat} THEN coalesce({block}, -1) ELSE -1 END AS key_port
    FROM m WHERE indicator NOT IN (SELECT indicator FROM held)
),
s AS (
    SELECT *, CASE WHEN lag(ts) OVER w IS NULL
                     OR ts - lag(ts) OVER w > INTERVAL {gap_s} SECOND THEN 1 ELSE 0 END AS brk
    FROM k WINDOW w AS (PARTITION BY ip, key_port ORDER BY ts)
)
SELECT 'match' AS row_kind, ts, ip, port, protocol, via, weight, indicator, confidence,
       array_to_string(list_filter(malware, x -> x IS NOT NULL), '|') AS malware,
       array_to_string(sources, '|') AS sources, key_port,
       sum(brk) OVER (PARTITION BY ip, key_port ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sess,
       NULL::BIGINT AS addresses, NULL::BIGINT AS active
FROM s
UNION ALL BY NAME
SELECT 'held' AS row_kind, indicator, addresses, active, why FROM held
"""


def _link_sql(p: InfectedParams | None) -> str:
    """CTE ``link``: (listed name, listed address) pairs where subscriber addresses connected
    to the address within ``link_seconds`` of asking for the name — the name resolves to it.
    Needs ``dj`` and ``fm_all``; empty when ``p`` is None."""
    if p is None:
        return "link AS (SELECT NULL::VARCHAR AS name, NULL::VARCHAR AS addr WHERE false),"
    return f"""
lq AS (SELECT DISTINCT domain AS name, client_addr AS ip, ts FROM dj),
lc AS (SELECT DISTINCT rip || coalesce(':' || rport::VARCHAR, '') AS addr, ip, ts FROM fm_all),
-- queries followed by a connection to a listed address, once per query and address
lp AS (
    SELECT q.name, c.addr, count(DISTINCT q.ts) AS n
    FROM lq q JOIN lc c
      ON c.ip = q.ip AND c.ts >= q.ts
     AND c.ts <= q.ts + INTERVAL {int(p.link_seconds * 1000)} MILLISECOND
    GROUP BY ALL HAVING count(DISTINCT q.ts) >= {p.link_min_pairs}
),
-- the name's queries from the addresses that reached the address at all
lt AS (
    SELECT p.name, p.addr, any_value(p.n) AS n, count(*) AS q
    FROM lp p JOIN lq ON lq.name = p.name
    WHERE lq.ip IN (SELECT ip FROM lc WHERE lc.addr = p.addr)
    GROUP BY p.name, p.addr
),
link AS (SELECT name, addr FROM lt WHERE n >= {p.link_min_share} * q),"""


def _service_sql(
    p: InfectedParams | None, history: tuple[float, float] | None, keep: str, active: int
) -> str:
    """CTE ``service``: entries a stable population of subscriber addresses reached in every
    part of the history ``(start, end)`` (epoch seconds), listed then or not, with ``n`` that
    population. A population that has always used an endpoint, and is a large share of the
    subscribers, is a service's; a C&C's is small, and arrives and leaves with the C&C. Needs
    ``fm_all`` and ``dj``; empty when ``p`` or ``history`` is None."""
    if (
        p is None
        or history is None
        or history[1] - history[0] < max(p.service_min_history_hours * 3600, 1e-3)
    ):
        return "service AS (SELECT NULL::VARCHAR AS indicator, 0::BIGINT AS n WHERE false),"
    t0, t1 = history
    k = p.service_slices
    need = max(p.service_min_addresses, p.service_share * active)
    return f"""
hc AS (
    SELECT rip || coalesce(':' || rport::VARCHAR, '') AS indicator, ip, ts FROM fm_all
    UNION ALL SELECT domain, client_addr, ts FROM dj
),
hs AS (
    SELECT indicator, ip,
           count(DISTINCT least({k - 1}, greatest(0, floor((epoch(ts) - {t0})
                                                          / {t1 - t0} * {k}))::INTEGER)) AS parts
    FROM hc WHERE {keep} GROUP BY indicator, ip
),
service AS (
    SELECT indicator, count(*) AS n FROM hs WHERE parts = {k}
    GROUP BY indicator HAVING count(*) >= {need}
),"""


def _ordinary_sql(p: InfectedParams | None) -> str:
    """CTE ``ordinary``: flow-matched entries many subscriber addresses reach the way people
    browse — large answers, no rhythm, daytime — with ``n`` addresses. Needs ``fm_raw``'s
    bytes and ``m``; empty when ``p`` is None."""
    if p is None:
        return "ordinary AS (SELECT NULL::VARCHAR AS indicator, 0::BIGINT AS n WHERE false),"
    off = round(p.local_utc_offset_hours * 3600)
    return f"""
mf AS (SELECT * FROM m WHERE via IN ('to', 'from')),
od AS (
    SELECT indicator, ip, port, ts, via, bytes, packets,
           epoch(ts) - epoch(lag(ts) OVER (PARTITION BY indicator, ip, via ORDER BY ts)) AS dt
    FROM mf
),
orh AS (
    SELECT indicator, ip, mad(dt) / nullif(median(dt), 0) AS spread
    FROM od WHERE via = 'to' GROUP BY ALL HAVING count(dt) >= 3
),
ordinary AS (
    SELECT od.indicator, count(DISTINCT od.ip) AS n
    FROM od
    GROUP BY od.indicator
    HAVING count(DISTINCT od.ip) >= CASE WHEN any_value(od.indicator) LIKE '%:%'
                                         THEN {p.ordinary_min_addresses_port}
                                         ELSE {p.ordinary_min_addresses} END
       AND coalesce(median(od.bytes / greatest(od.packets, 1)) FILTER (WHERE od.via = 'from'), 0)
           >= {p.ordinary_min_packet_bytes}
       AND avg(CASE WHEN hour(od.ts + INTERVAL {off} SECOND) BETWEEN 1 AND 5 THEN 1.0
                    ELSE 0.0 END) <= {p.ordinary_max_night_share}
       AND coalesce((SELECT median(spread) FROM orh WHERE orh.indicator = od.indicator),
                    1e9) > {p.ordinary_max_regularity}
),"""


def _split(joined: list[str | None]) -> list[str]:
    return sorted({x for text in joined if text for x in text.split("|") if x})[:10]


def _findings(g: pa.Table, detected: datetime) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Group the session-numbered matches into findings (Arrow group-by), one evidence object
    per finding."""
    grouped = g.group_by(["ip", "key_port", "sess"]).aggregate(
        [
            ("ts", "min"),
            ("ts", "max"),
            ("port", "min"),
            ("confidence", "max"),
            ("indicator", "distinct"),
            ("via", "list"),
            ("weight", "sum"),
            ("protocol", "list"),
            ("malware", "list"),
            ("sources", "list"),
        ]
    )
    rows: list[dict[str, Any]] = []
    for r in grouped.to_pylist():
        vias = Counter(r["via_list"])
        n = sum(vias.values())
        conf = float(r["confidence_max"] or 0.0)
        first: datetime = r["ts_min"]
        # behind CGNAT: a port of the subscriber's block (the first seen)
        port = None if r["key_port"] < 0 else int(r["port_min"])
        protos = Counter(p for p in r["protocol_list"] if p is not None)
        indicators = sorted(r["indicator_distinct"])
        rows.append(
            {
                "detected": detected,
                "finding_id": _fid(r["ip"], r["key_port"], first),
                "kind": "infected",
                "method": "reputation",
                "ip": r["ip"],
                "port": port,
                "protocol": _PROTO.get(protos.most_common(1)[0][0]) if protos else None,
                # repeated, independent contacts make an accidental match less likely
                "score": round(1.0 - (1.0 - conf) ** min(n, 3), 4),
                "first_seen": first,
                "last_seen": r["ts_max"],
                "measure": MEASURE,
                "evidence": json.dumps(
                    {
                        "indicators": indicators[:20],
                        "indicator_count": len(indicators),
                        "flows_to_indicator": vias.get("to", 0),
                        "flows_from_indicator": vias.get("from", 0),
                        "flows_estimated": int(r["weight_sum"] or 0) - vias.get("dns", 0),
                        "queries": vias.get("dns", 0),
                        "malware": _split(r["malware_list"]),
                        "sources": _split(r["sources_list"]),
                        "max_confidence": round(conf, 4),
                    },
                    sort_keys=True,
                ),
                "_key": (r["ip"], r["key_port"], r["sess"]),
            }
        )
    return grouped, rows


def _match(
    gov: Governance,
    box: Sandbox,
    opts: InfectedParams,
    categories: tuple[str, ...],
    *,
    actor: str,
    since: datetime | None,
    until: datetime | None,
) -> tuple[pa.Table, tuple[int, int]]:
    """The matched rows (and held-back entries) and the (ip, domain) indicator counts; every
    input is a grant in ``box``."""
    # the latest list of each source, each entry used only while it was valid (see _sql)
    rep = current_reputation_grant(gov, MEASURE, actor, drop_expired=False, sandbox=box)
    flows = gov.open(
        MEASURE,
        "flows",
        [
            "time_start",
            "src_addr",
            "dst_addr",
            "src_port",
            "dst_port",
            "protocol",
            "sampling_rate",
            "bytes",
            "packets",
        ],
        actor,
        start=since,
        end=until,
        sandbox=box,
    )
    dns = gov.open(
        MEASURE,
        "dns_queries",
        ["ts", "client_addr", "client_port", "qname"],
        actor,
        start=since,
        end=until,
        sandbox=box,
    )
    vrep, vflows, vdns = rep.name, flows.name, dns.name
    cfg = gov.config
    pools = _in_nets("{ip}", list(cfg.pools())) if cfg.address_plan else None
    cgnat = _in_nets("{ip}", list(cfg.pools("cgnat")))
    counts = box.sql(
        f"SELECT count(*) FILTER (WHERE ip IS NOT NULL AND indicator_type IN ('ip', 'ip-port')),"
        f" count(*) FILTER (WHERE domain IS NOT NULL AND indicator_type = 'domain') FROM {vrep}"
        f" WHERE category IN ({', '.join(repr(c) for c in categories)})",
    ).fetchall()[0]
    # subscriber addresses active in the window (the denominator of an entry's popularity); the
    # address test runs once per distinct address
    keep_x = "TRUE"
    if cfg.address_plan:
        keep_x = _ranges("x", list(cfg.pools())) or "FALSE"
        if any(n.version == 6 for n in cfg.pools()):
            keep_x = f"({keep_x} OR x IS NULL)"  # IPv6 (see _in_nets)
    active = int(
        box.sql(
            # MATERIALIZED: keeps DuckDB from pushing the costly test down to every row
            f"WITH a AS MATERIALIZED (SELECT DISTINCT unnest([src_addr, dst_addr]) AS a FROM "
            f"{vflows} UNION SELECT client_addr FROM {vdns}), "
            f"x AS MATERIALIZED (SELECT {_v4_int('a')} AS x FROM a) "
            f"SELECT count(*) FROM x WHERE {keep_x}",
        ).fetchall()[0][0]
    )
    # the history the established-service rule cuts into parts: the window asked for, or, when
    # open, the span of the data read
    seen = box.sql(
        f"SELECT epoch(min(t)), epoch(max(t)) FROM (SELECT time_start AS t FROM {vflows} "
        f"UNION ALL SELECT ts FROM {vdns})"
    ).fetchall()[0]
    t0 = since.timestamp() if since else seen[0]
    t1 = until.timestamp() if until else seen[1]
    history = (float(t0), float(t1)) if t0 is not None and t1 is not None else None
    g = box.sql(
        _sql(
            vrep,
            vflows,
            vdns,
            categories=categories,
            pool_cond=pools,
            active=active,
            cgnat_cond=cgnat,
            gap_s=int(opts.session_gap_minutes * 60),
            port_block=opts.cgnat_port_block,
            popular_share=opts.popular_share,
            popular_min=opts.popular_min_addresses,
            ordinary=opts,
            history=history,
        ),
    ).to_arrow_table()
    return g, (int(counts[0]), int(counts[1]))


def match_reputation(
    gov: Governance,
    *,
    actor: str,
    since: datetime | None = None,
    until: datetime | None = None,
    write: bool = True,
    settings: InfectedParams | None = None,
) -> MatchReport:
    """Match M4's flows and resolver queries in [since, until) against the C&C lists in force
    now; store the matches and the ``infected`` findings (unless ``write`` is false).
    ``settings`` default to the configuration's ``[detect.infected]`` section."""
    opts = settings or InfectedParams(**section(gov.config.detect, "infected"))
    categories = tuple(opts.categories)
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    detected = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the store keeps ms
    # the latest list of each source, each entry used only while it was valid (see _sql)
    box = gov.sandbox(opts.memory_limit_mb, label="M4-matching")
    try:
        g, counts = _match(gov, box, opts, categories, actor=actor, since=since, until=until)
    finally:
        box.close()
    is_held = pc.equal(g.column("row_kind"), "held")
    held = [
        {"indicator": r["indicator"], "addresses": r["addresses"], "active": r["active"],
         "why": r["why"]}
        for r in g.filter(is_held).select(["indicator", "addresses", "active", "why"]).to_pylist()
    ]  # fmt: skip
    g = g.filter(pc.invert(is_held))
    if held and write:
        # held entries wait for a person, in the open: the audit names each entry (a feed's
        # indicator, never a subscriber) and why it was not alerted on
        gov.audit.append(
            actor=actor,
            event="held-for-review",
            measure=MEASURE,
            dataset="reputation",
            detail={"detector": "infected", "held": held},
        )
    _, rows = _findings(g, detected)
    n_dns = int(pc.sum(pc.equal(g.column("via"), "dns")).as_py() or 0) if g.num_rows else 0
    stored = 0
    if rows and write:
        ids = pa.table(
            {
                "ip": [r["_key"][0] for r in rows],
                "key_port": pa.array([r["_key"][1] for r in rows], g.schema.field("key_port").type),
                "sess": pa.array([r["_key"][2] for r in rows], g.schema.field("sess").type),
                "finding_id": [r["finding_id"] for r in rows],
            }
        )
        joined = g.join(ids, ["ip", "key_port", "sess"], join_type="inner")
        matches = pa.table(
            {
                "ts": joined.column("ts"),
                "ip": joined.column("ip"),
                "port": joined.column("port"),
                "indicator": joined.column("indicator"),
                "finding_id": joined.column("finding_id"),
            }
        ).sort_by("ts")
        gov.write(
            MEASURE,
            "matches",
            matches,
            actor,
            detail={"method": "reputation", "findings": len(rows)},
        )
        stored = matches.num_rows
        findings = pa.Table.from_pylist(
            [{k: v for k, v in r.items() if k != "_key"} for r in rows], schema=FINDINGS.arrow
        )
        gov.write(MEASURE, "findings", findings, actor, detail={"method": "reputation"})
    out = []
    for r in rows:
        out.append(
            {
                "finding_id": r["finding_id"],
                "kind": "infected",
                "ip": r["ip"],
                "port": r["port"],
                "proto": r["protocol"],
                "score": r["score"],
                "method": "reputation",
                "first_seen": r["first_seen"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "last_seen": r["last_seen"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "evidence": json.loads(r["evidence"]),
                "measure": MEASURE,
            }
        )
    out.sort(key=lambda f: (f["first_seen"], f["ip"], f["port"] or -1))
    return MatchReport(
        since=since,
        until=until,
        indicators_ip=int(counts[0]),
        indicators_domain=int(counts[1]),
        flow_matches=g.num_rows - n_dns,
        dns_matches=n_dns,
        matches_stored=stored,
        held_back=sorted(held, key=lambda h: -int(h["addresses"])),
        findings=out,
        seconds=round(time.perf_counter() - t0, 3),
    )


class InfectedDetector:
    """``mamori detect infected``: the M4 matching run as a :class:`~mamori.detect.base.Detector`."""

    name = "infected"
    measure = MEASURE
    Params = InfectedParams

    def __init__(self, params: InfectedParams | None = None, *, write: bool = True) -> None:
        self.params: InfectedParams = params or InfectedParams()
        self.write = write

    def match(self, gov: Governance, window: Window, *, actor: str) -> MatchReport:
        """The run, with the matching report (what ``detect infected`` prints)."""
        return match_reputation(
            gov,
            actor=actor,
            since=window.since,
            until=window.until,
            write=self.write,
            settings=self.params,
        )

    def run(self, gov: Governance, window: Window, *, actor: str) -> DetectorRun:
        report = self.match(gov, window, actor=actor)
        summary = report.model_dump(mode="json", exclude={"findings"})
        return DetectorRun(findings=_as_findings(report.findings), summary=summary)


def _as_findings(found: list[dict[str, Any]]) -> pa.Table:
    now = datetime.now(UTC)
    rows = [
        {
            "detected": now,
            "finding_id": f["finding_id"],
            "kind": f["kind"],
            "method": f["method"],
            "ip": f["ip"],
            "port": f["port"],
            "protocol": f["proto"],
            "score": f["score"],
            "first_seen": datetime.fromisoformat(f["first_seen"]),
            "last_seen": datetime.fromisoformat(f["last_seen"]),
            "measure": f["measure"],
            "evidence": json.dumps(f["evidence"], sort_keys=True),
        }
        for f in found
    ]
    return pa.Table.from_pylist(rows, schema=FINDINGS.arrow)
