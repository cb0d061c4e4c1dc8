"""(address, port, time) → the subscriber who held it, as one vectorised join, through governance.

How a lookup is answered
------------------------
Allocations are read with :meth:`Governance.open` for the caller's measure, so under a
consent-based measure the rows of subscribers who are out never reach this module (they come out
``unknown``); governance also hands over *when* the withheld rows held their addresses, without
identity, so a lookup close to a reassignment cannot name the other holder by mistake.

Each allocation row becomes an interval ``[start - skew, end + skew)`` keyed by (address, port
block). A row without a port block covers every port of its address. A lookup with a port probes
its address's whole-address rows and the one port block containing the port; without a port, an
address that is shared by port blocks (or lies in a ``cgnat`` pool of the address plan) answers
``port-required``.

Per key the intervals are sorted once by start, each with the latest end of the intervals before
it. One ASOF join finds the last interval started by the time asked about: when it still holds
then and nothing before it reaches that far, it is the only candidate; when something before it
does (overlaps, a long session around a short one), an explicit range join restricted to those
few lookups lists every holder. So the work is one sort of the allocations and an ASOF join, never
a join of every lookup with every session of its address.

A CGNAT row names an inside address; the holder of that inside address at the same time (the same
lookup again, stage two) is the subscriber. The answer is:

* ``ok``: exactly one subscriber, and no withheld or unresolvable holder, within the tolerance;
* ``ambiguous``: more than one holder (overlapping sessions, clock-skew window over a
  reassignment), including a holder we may not or cannot name;
* ``unknown``: nobody we may name held it;
* ``port-required``: a shared (CGNAT) address given without a port.

Every call writes one audit entry (event ``attribute``): measure, legal basis, counts per status
and the subscriber ids resolved — never the addresses, ports or times asked about.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from mamori.governance import Governance

__all__ = [
    "QUERY_SCHEMA",
    "RESULT_SCHEMA",
    "STATUSES",
    "Attribution",
    "attribute",
    "attribute_one",
]

TS = pa.timestamp("ms", tz="UTC")
STATUSES = ("ok", "ambiguous", "unknown", "port-required")
QUERY_SCHEMA = pa.schema(
    [pa.field("ip", pa.string()), pa.field("port", pa.uint16()), pa.field("ts", TS)]
)
RESULT_SCHEMA = pa.schema(
    [
        *QUERY_SCHEMA,
        pa.field("status", pa.string(), nullable=False),
        pa.field("subscriber_id", pa.string()),
        pa.field("inside_addr", pa.string()),
        pa.field("allocation_source", pa.string()),
    ]
)
_ALLOC_COLS = (
    "start",
    "end",
    "addr",
    "port_start",
    "port_end",
    "subscriber_id",
    "inside_addr",
    "source",
)


class Attribution(BaseModel):
    """One answer of :func:`attribute_one`."""

    model_config = ConfigDict(frozen=True)

    ip: str
    port: int | None
    ts: datetime
    status: Literal["ok", "ambiguous", "unknown", "port-required"]
    subscriber_id: str | None
    inside_addr: str | None
    allocation_source: str | None


def _canonical_ips(ip: pa.ChunkedArray) -> pa.ChunkedArray:
    """IPv6 text in the compressed form ingest stores; IPv4 text as given."""
    arr = ip.combine_chunks()
    v6 = pc.fill_null(pc.match_substring(arr, ":"), False)
    if not pc.any(v6).as_py():
        return pa.chunked_array([arr])
    values = arr.to_pylist()
    for i in np.flatnonzero(v6.to_numpy(zero_copy_only=False)).tolist():
        with contextlib.suppress(ValueError):  # if not an address: matches nothing, unknown
            values[i] = str(ipaddress.ip_address(values[i]))
    return pa.chunked_array([pa.array(values, pa.string())])


def _in_networks(
    ip: pa.ChunkedArray, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> np.ndarray:
    """Boolean mask: which addresses lie in any of ``nets`` (IPv4 in NumPy, IPv6 one by one)."""
    n = len(ip)
    hit = np.zeros(n, dtype=bool)
    if not nets or not n:
        return hit
    arr = ip.combine_chunks()
    is_v4 = pc.fill_null(pc.match_substring_regex(arr, r"^\d+\.\d+\.\d+\.\d+$"), False)
    mask = is_v4.to_numpy(zero_copy_only=False)
    if mask.any():
        octets = pc.list_flatten(pc.split_pattern(pc.filter(arr, is_v4), "."))
        ints = np.asarray(octets.cast(pa.uint32()).to_numpy(), dtype=np.uint64).reshape(-1, 4)
        if (ints > 255).any():
            ints = np.where(ints > 255, 0, ints)  # not an address: matches no pool usefully
        value = (ints[:, 0] << 24) | (ints[:, 1] << 16) | (ints[:, 2] << 8) | ints[:, 3]
        sub = np.zeros(len(value), dtype=bool)
        for net in nets:
            if net.version == 4:
                lo, hi = int(net.network_address), int(net.broadcast_address)
                sub |= (value >= lo) & (value <= hi)
        hit[mask] = sub
    other = np.flatnonzero(~mask)
    if other.size:
        texts = pc.take(arr, pa.array(other)).to_pylist()
        for i, text in zip(other.tolist(), texts, strict=True):
            if text is None:
                continue
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                continue
            hit[i] = any(addr.version == net.version and addr in net for net in nets)
    return hit


def _normalise(queries: pa.Table) -> pa.Table:
    missing = [c for c in ("ip", "ts") if c not in queries.column_names]
    if missing:
        raise ValueError(f"attribution queries need columns ip, port, ts; missing {missing}")
    ip = queries.column("ip").cast(pa.string())
    port = (
        queries.column("port").cast(pa.uint16())
        if "port" in queries.column_names
        else pa.chunked_array([pa.nulls(queries.num_rows, pa.uint16())])
    )
    ts = queries.column("ts")
    if pa.types.is_timestamp(ts.type) and ts.type.tz is None:
        ts = pc.assume_timezone(ts, "UTC")
    ts = ts.cast(TS)
    out = queries
    for name, col in (("ip", ip), ("port", port), ("ts", ts)):
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, col)
        else:
            out = out.append_column(name, col)
    return out


_FOREVER_MS = 253402214400000  # 9999-12-31: "still held"
_NONE = -(1 << 62)
# Batches up to this many lookups first keep only the allocation rows of their addresses.
_NARROW = 50_000


def _lookup_sql(skew_ms: int, *, narrow: bool = False) -> str:
    """The whole lookup as one query over ``{q}`` (lookups), ``{alloc}`` (the grant) and
    ``{withheld}`` (periods of rows governance withheld). Times are epoch milliseconds.

    Addresses get integer ids, so a key (address, port block) is one BIGINT. Allocation rows and
    lookups of a stage go through *one* sort by (key, time): for every row, ``m`` is the latest
    end among the rows before it, and for a lookup ``rs`` is the last interval started by then.
    Joined back, ``m`` of that interval is the reach of everything started before it: when the
    interval still holds at the lookup's time and that reach does not, it is the only candidate;
    when the reach does, an explicit range join restricted to those few lookups lists them all.

    ``narrow``: first keep only the rows of the addresses asked about and of the inside
    addresses their port blocks name — for a small batch, far less to sort than every row."""
    relevant = (
        """AND (addr IN (SELECT ip FROM q) OR addr IN (
            SELECT inside_addr FROM {alloc}
            WHERE inside_addr IS NOT NULL AND addr IN (SELECT ip FROM q)))"""
        if narrow
        else ""
    )

    def stage(p: str, rows: str) -> str:
        # Candidate rows (rid) for the probes in CTE ``p`` (qid, key, t) among ``rows``; with
        # the probe's key (pkey) and, for a CGNAT row, the key of its inside address (ikey).
        return f"""
{p}_w AS MATERIALIZED (
    SELECT key, isq, id, t, hi, ikey, cg,
           max(hi) OVER o AS m,
           last_value(CASE WHEN isq = 0 THEN id END IGNORE NULLS) OVER (
               PARTITION BY key ORDER BY t, isq, hi
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS rs
    FROM (
        SELECT key, lo AS t, 0 AS isq, hi, rid AS id, ikey, cg FROM {rows}
        UNION ALL
        SELECT key, t, 1, NULL, qid, NULL, NULL FROM {p}
    )
    WINDOW o AS (PARTITION BY key ORDER BY t, isq, hi
                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
{p}_l AS (
    SELECT x.id AS qid, x.key AS pkey, x.t, x.rs, r.m AS reach, r.hi AS r_hi, r.ikey, r.cg
    FROM {p}_w x LEFT JOIN {p}_w r ON r.isq = 0 AND r.id = x.rs
    WHERE x.isq = 1
),
{p}_r AS (
    SELECT qid, pkey, t, rs AS rid, ikey, cg FROM {p}_l
    WHERE r_hi > t AND coalesce(reach, {_NONE}) <= t
    UNION ALL
    SELECT r.qid, r.pkey, r.t, x.rid, x.ikey, x.cg
    FROM (SELECT * FROM {p}_l WHERE reach > t) r
    JOIN {rows} x ON x.key = r.pkey AND r.t >= x.lo AND r.t < x.hi
)"""

    return f"""
WITH q AS (
    SELECT qid, ip, port::INTEGER AS port, epoch_ms(ts) AS t, pool_cgnat FROM {{q}}
),
a AS MATERIALIZED (
    SELECT row_number() OVER () AS rid, * FROM (
    SELECT addr, coalesce(port_start::INTEGER, -1) AS kp,
           coalesce(port_end::INTEGER, 65535) AS pe,
           epoch_ms(start) - {skew_ms} AS lo,
           coalesce(epoch_ms("end"), {_FOREVER_MS}) + {skew_ms} AS hi,
           subscriber_id, inside_addr, source, false AS hidden
    FROM {{alloc}} WHERE ("end" IS NULL OR "end" >= start) {relevant}
    UNION ALL
    SELECT addr, coalesce(port_start::INTEGER, -1), coalesce(port_end::INTEGER, 65535),
           epoch_ms(start) - {skew_ms}, coalesce(epoch_ms("end"), {_FOREVER_MS}) + {skew_ms},
           NULL, NULL, NULL, true
    FROM {{withheld}} WHERE "end" IS NULL OR "end" >= start
    )
),
ids AS MATERIALIZED (
    SELECT addr, row_number() OVER () AS aid FROM (SELECT DISTINCT addr FROM a)
),
k AS MATERIALIZED (
    -- the narrow copy the sorts work on: integer key, times, row id, and for a CGNAT row the key
    -- of its inside address (null when nobody is known to have held it)
    SELECT (i.aid << 34) | ((a.kp + 1)::BIGINT << 17) | a.pe AS key, a.lo, a.hi, a.rid,
           (j.aid << 34) | 65535 AS ikey, a.inside_addr IS NOT NULL AS cg
    FROM a JOIN ids i USING (addr) LEFT JOIN ids j ON j.addr = a.inside_addr
),
blocks AS MATERIALIZED (SELECT DISTINCT addr, kp, pe FROM a WHERE kp >= 0),
sizes AS (
    SELECT addr, min(kp) AS base, min(pe - kp + 1) AS size, max(pe - kp + 1) AS size_max
    FROM blocks GROUP BY addr
),
messy AS MATERIALIZED (
    -- addresses whose blocks are not one grid of equal blocks (a changed block size): probed by
    -- a range join; on the others the port gives its block by arithmetic
    SELECT addr FROM sizes WHERE size <> size_max
    UNION
    SELECT b.addr FROM blocks b JOIN sizes s USING (addr) WHERE (b.kp - s.base) % s.size <> 0
),
tidy AS (SELECT * FROM sizes WHERE addr NOT IN (SELECT addr FROM messy)),
shared AS (SELECT addr FROM sizes),
need_port AS (
    SELECT qid FROM q WHERE port IS NULL AND (pool_cgnat OR ip IN (SELECT addr FROM shared))
),
pq AS (SELECT * FROM q WHERE port IS NOT NULL AND ip IN (SELECT addr FROM shared)),
p1 AS MATERIALIZED (
    SELECT x.qid, (i.aid << 34) | ((x.kp + 1)::BIGINT << 17) | x.pe AS key, x.t
    FROM (
        SELECT qid, ip AS addr, -1 AS kp, 65535 AS pe, t FROM q
        WHERE qid NOT IN (SELECT qid FROM need_port)
        UNION ALL
        SELECT pq.qid, pq.ip, t.base + (pq.port - t.base) // t.size * t.size,
               t.base + (pq.port - t.base) // t.size * t.size + t.size - 1, pq.t
        FROM pq JOIN tidy t ON pq.ip = t.addr
        WHERE pq.port >= t.base
        UNION ALL
        SELECT pq.qid, pq.ip, b.kp, b.pe, pq.t
        FROM pq JOIN blocks b ON pq.ip = b.addr AND pq.port BETWEEN b.kp AND b.pe
        WHERE pq.ip IN (SELECT addr FROM messy)
    ) x JOIN ids i USING (addr)
),
{stage("p1", "k")},
p2 AS MATERIALIZED (
    SELECT DISTINCT qid, ikey AS key, t FROM p1_r WHERE cg AND ikey IS NOT NULL
),
k2 AS MATERIALIZED (SELECT * FROM k WHERE key IN (SELECT key FROM p2)),
{stage("p2", "k2")},
pairs AS (
    SELECT qid, rid AS rid1, NULL::BIGINT AS rid2, false AS cg, false AS unresolved
    FROM p1_r WHERE NOT cg
    UNION ALL
    -- a port block whose inside address nobody (we may name) held: an unnamed holder
    SELECT c1.qid, c1.rid, c2.rid, true, c2.rid IS NULL
    FROM p1_r c1 LEFT JOIN p2_r c2 ON c1.qid = c2.qid AND c1.ikey = c2.pkey
    WHERE c1.cg
),
pay AS (
    SELECT rid, subscriber_id, inside_addr, source, hidden FROM a
    WHERE rid IN (SELECT rid1 FROM pairs UNION ALL SELECT rid2 FROM pairs)
),
holders AS (
    SELECT h.qid,
           CASE WHEN h.cg THEN y.subscriber_id ELSE x.subscriber_id END AS subscriber_id,
           CASE WHEN h.cg THEN x.inside_addr END AS inside,
           CASE WHEN h.cg THEN x.source || '+' || coalesce(y.source, '?') ELSE x.source END
               AS source,
           h.unresolved OR x.hidden OR coalesce(y.hidden, false) AS hidden
    FROM pairs h JOIN pay x ON x.rid = h.rid1 LEFT JOIN pay y ON y.rid = h.rid2
),
summary AS (
    -- min/max instead of DISTINCT aggregates: one holder or several is all that matters
    SELECT qid, min(subscriber_id) AS sub, max(subscriber_id) AS sub_max,
           bool_or(hidden OR subscriber_id IS NULL) AS unnamed,
           min(inside) AS inside, max(inside) AS inside_max,
           min(source) AS src, max(source) AS src_max
    FROM holders GROUP BY qid
)
SELECT q.qid,
       CASE WHEN q.qid IN (SELECT qid FROM need_port) THEN 'port-required'
            WHEN s.sub = s.sub_max AND NOT s.unnamed THEN 'ok'
            WHEN s.sub IS NOT NULL THEN 'ambiguous'
            ELSE 'unknown' END AS status,
       s.sub,
       CASE WHEN s.inside = s.inside_max THEN 1 ELSE 2 END AS n_inside, s.inside,
       CASE WHEN s.src = s.src_max THEN s.src ELSE s.src || ',' || s.src_max END AS src
FROM q LEFT JOIN summary s USING (qid)
ORDER BY q.qid
"""


def attribute(
    gov: Governance,
    queries: pa.Table,
    *,
    measure: str,
    actor: str,
    case: str | None = None,
    basis: str | None = None,
    justification: str | None = None,
    skew_s: float | None = None,
) -> pa.Table:
    """Who held each (``ip``, ``port``, ``ts``) of ``queries``: one result row per query, in
    order, with the query's columns plus ``status``, ``subscriber_id`` (only when ``ok``),
    ``inside_addr`` (the CGNAT inside address, when the answer went through one) and
    ``allocation_source`` (the log it came from: ``radius``; ``cgnat-syslog+kea`` for a port
    block and then its inside address; ``csv,radius`` when two logs agree — with more than two,
    the first and last by name). The skew tolerance is applied in whole milliseconds. Raises :class:`~mamori.governance.AccessRefused` when ``measure``
    may not read allocations on ``basis``; writes one audit entry."""
    q = _normalise(queries)
    skew = gov.config.attribution.skew_s if skew_s is None else float(skew_s)
    if skew < 0:
        raise ValueError(f"clock-skew tolerance must not be negative (got {skew})")
    skew_ms = round(skew * 1000)
    latest = pc.max(q.column("ts")).as_py() if q.num_rows else None
    end = latest + timedelta(milliseconds=skew_ms + 1) if latest is not None else None
    grant = gov.open(
        measure,
        "allocations",
        list(_ALLOC_COLS),
        actor,
        case,
        basis=basis,
        justification=justification,
        end=end,
    )
    probe = pa.table(
        {
            "qid": pa.array(np.arange(q.num_rows, dtype=np.int64)),
            "ip": _canonical_ips(q.column("ip")),
            "port": q.column("port"),
            "ts": q.column("ts"),
            "pool_cgnat": pa.array(
                _in_networks(q.column("ip"), gov.config.pools("cgnat")), pa.bool_()
            ),
        }
    )
    withheld: pa.Table = (
        grant.withheld.to_arrow_table()
        if grant.withheld is not None
        else pa.table(
            {
                "addr": pa.array([], pa.string()),
                "port_start": pa.array([], pa.uint16()),
                "port_end": pa.array([], pa.uint16()),
                "start": pa.array([], TS),
                "end": pa.array([], TS),
            }
        )
    )
    with gov.memory_limit(gov.config.attribution.memory_limit_mb):
        res = gov.combine(
            _lookup_sql(skew_ms, narrow=q.num_rows <= _NARROW),
            q=probe,
            alloc=grant,
            withheld=withheld,
        ).to_arrow_table()
    status = res.column("status").cast(pa.string())
    ok = pc.equal(status, "ok")
    null_s = pa.nulls(len(res), pa.string())
    sub = pc.if_else(ok, res.column("sub"), null_s)
    inside = pc.if_else(
        pc.and_(ok, pc.equal(res.column("n_inside"), 1)), res.column("inside"), null_s
    )
    source = pc.if_else(ok, res.column("src"), null_s)
    out = q
    for name, col in (
        ("status", status),
        ("subscriber_id", sub),
        ("inside_addr", inside),
        ("allocation_source", source),
    ):
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, pa.chunked_array(col.chunks, pa.string()))
    counts = {s: 0 for s in STATUSES}
    vc = pc.value_counts(status)
    for item in vc.to_pylist():
        counts[item["values"]] = int(item["counts"])
    resolved = sorted(pc.unique(pc.drop_null(sub)).to_pylist())
    gov.audit.append(
        actor=actor,
        event="attribute",
        measure=measure,
        legal_basis=grant.legal_basis,
        dataset="allocations",
        columns=list(_ALLOC_COLS),
        case_id=case,
        detail={
            "lookups": q.num_rows,
            "status": counts,
            "subscribers": resolved,
            "skew_s": skew,
            "access_seq": grant.audit_seq,
            **({"justification": justification} if justification else {}),
        },
    )
    return out


def attribute_one(
    gov: Governance,
    ip: str,
    port: int | None,
    at: datetime,
    *,
    measure: str,
    actor: str,
    case: str | None = None,
    basis: str | None = None,
    justification: str | None = None,
    skew_s: float | None = None,
) -> Attribution:
    """:func:`attribute` for a single lookup."""
    when = at if at.tzinfo else at.replace(tzinfo=UTC)
    table = pa.table(
        {
            "ip": pa.array([ip], pa.string()),
            "port": pa.array([port], pa.uint16()),
            "ts": pa.array([when], TS),
        }
    )
    row = attribute(
        gov,
        table,
        measure=measure,
        actor=actor,
        case=case,
        basis=basis,
        justification=justification,
        skew_s=skew_s,
    ).to_pylist()[0]
    return Attribution(**row)
