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

Per key the intervals are sorted once by start (one NumPy ``argsort`` of ``key * span + start``,
keys numbered densely, times clipped to the window asked about), each with the latest end of the
intervals before it (a running maximum). One binary search per lookup finds the last interval
started by the time asked about — an ASOF join: when it still holds then and nothing before it
reaches that far, it is the only candidate; when something before it does (overlaps, a long
session around a short one), every interval between the first whose reach passes that time and
that last one is checked. So the work is one sort of the allocations and a binary search per
lookup, never a join of every lookup with every session of its address. DuckDB reads the grant
and maps lookups to keys (port arithmetic on CGNAT block grids); the index is NumPy, because a
window sort of 10M rows in DuckDB cost several times as much, and the answers are put together
in Arrow (only lookups with several holders go through a DuckDB aggregate).

A CGNAT row names an inside address; the holder of that inside address at the same time (the same
search again on the same index, stage two) is the subscriber. The answer is:

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

from mamori.governance import Governance, Grant

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
# Batches up to this many lookups first keep only the allocation rows of their addresses.
_NARROW = 50_000


def _rows_sql(skew_ms: int, *, narrow: bool = False) -> str:
    """Every interval a lookup may hit, over ``{q}`` (lookups), ``{alloc}`` (the grant) and
    ``{withheld}`` (periods of rows governance withheld); a row's number is its id, times are
    epoch milliseconds, ``kp``/``pe`` the port block (-1/65535: the whole address).

    ``narrow``: keep only the rows of the addresses asked about and of the inside addresses
    their port blocks name — for a small batch, far less to index than every row."""
    relevant = (
        """AND (addr IN (SELECT ip FROM {q}) OR addr IN (
            SELECT inside_addr FROM {alloc}
            WHERE inside_addr IS NOT NULL AND addr IN (SELECT ip FROM {q})))"""
        if narrow
        else ""
    )
    return f"""
SELECT * FROM (
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
)"""


# Shared by the probe and the answer queries: port blocks per address, and which lookups need a
# port they were not given.
_BLOCKS_CTES = """
blocks AS (SELECT addr, kp, pe, kid FROM {keys} WHERE kp >= 0),
sizes AS (
    SELECT addr, min(kp) AS base, min(pe - kp + 1) AS size, max(pe - kp + 1) AS size_max
    FROM blocks GROUP BY addr
),
need_port AS (
    SELECT qid FROM {q}
    WHERE port IS NULL AND (pool_cgnat OR ip IN (SELECT addr FROM sizes))
)"""

# The first-stage probes (qid, key, t): a lookup without a port probes its whole-address key; one
# with a port also the port block containing it.
_PROBES_SQL = f"""
WITH {_BLOCKS_CTES},
messy AS MATERIALIZED (
    -- addresses whose blocks are not one grid of equal blocks (a changed block size): probed by
    -- a range join; on the others the port gives its block by arithmetic
    SELECT addr FROM sizes WHERE size <> size_max
    UNION
    SELECT b.addr FROM blocks b JOIN sizes s USING (addr) WHERE (b.kp - s.base) % s.size <> 0
),
tidy AS (SELECT * FROM sizes WHERE addr NOT IN (SELECT addr FROM messy)),
pq AS (
    SELECT qid, ip, port::INTEGER AS port, epoch_ms(ts) AS t FROM {{q}}
    WHERE port IS NOT NULL AND ts IS NOT NULL AND ip IN (SELECT addr FROM sizes)
)
SELECT x.qid, k.kid AS key, x.t
FROM (
    SELECT qid, ip AS addr, -1 AS kp, 65535 AS pe, epoch_ms(ts) AS t FROM {{q}}
    WHERE ts IS NOT NULL AND qid NOT IN (SELECT qid FROM need_port)
    UNION ALL
    SELECT pq.qid, pq.ip, t.base + (pq.port - t.base) // t.size * t.size,
           t.base + (pq.port - t.base) // t.size * t.size + t.size - 1, pq.t
    FROM pq JOIN tidy t ON pq.ip = t.addr
    WHERE pq.port >= t.base
    UNION ALL
    SELECT pq.qid, pq.ip, b.kp, b.pe, pq.t
    FROM pq JOIN blocks b ON pq.ip = b.addr AND pq.port BETWEEN b.kp AND b.pe
    WHERE pq.ip IN (SELECT addr FROM messy)
) x JOIN {{keys}} k USING (addr, kp, pe)
"""

_NEED_PORT_SQL = f"WITH {_BLOCKS_CTES}\nSELECT qid FROM need_port"

# The answer of a lookup with several holders (overlaps, skew, two logs): min/max instead of
# DISTINCT aggregates, since one holder or several is all that matters.
_MANY_SQL = """
SELECT qid,
       CASE WHEN sub = sub_max AND NOT unnamed THEN 'ok'
            WHEN sub IS NOT NULL THEN 'ambiguous'
            ELSE 'unknown' END AS status,
       sub, CASE WHEN inside = inside_max THEN 1 ELSE 2 END AS n_inside, inside,
       CASE WHEN src = src_max THEN src ELSE src || ',' || src_max END AS src
FROM (
    SELECT qid, min(sub) AS sub, max(sub) AS sub_max, bool_or(unnamed) AS unnamed,
           min(inside) AS inside, max(inside) AS inside_max,
           min(src) AS src, max(src) AS src_max
    FROM {h} GROUP BY qid
)
"""


def _ints(table: pa.Table, name: str, null: int = -1) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        col = pc.fill_null(col, null)
    return np.asarray(col.combine_chunks().to_numpy(zero_copy_only=False), dtype=np.int64)


class _Index:
    """Allocation intervals sorted once by (key, start), for lookups at times in [t0, t1].

    A key is an (address, port block) pair, numbered densely. Times are clipped to [t0, t1 + 1]
    — nothing outside changes an answer in that window — so that ``key * span + time`` is one
    integer: a probe is one binary search, and the latest end of everything started before a row
    (its *reach*) a running maximum over the whole array (a key's values all lie above the
    previous key's). The row id of an interval is its row number in ``rows``."""

    def __init__(self, rows: pa.Table, t0: int, t1: int) -> None:
        self.t0 = t0
        self.span = t1 - t0 + 2
        enc = pc.dictionary_encode(rows.column("addr").combine_chunks())
        self.addrs: pa.Array = enc.dictionary
        aid = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), np.int64)
        # (address, port block) in one integer: address id, then block start + 1, then block end
        code = (aid << 34) | ((_ints(rows, "kp") + 1) << 17) | _ints(rows, "pe")
        del aid
        code[code < 0] = -1  # a row without an address: sorted first, answers nothing
        by_code = np.argsort(code)
        code = code[by_code]
        skip = int(np.searchsorted(code, 0))
        by_code, code = by_code[skip:], code[skip:]
        fresh = np.empty(code.size, dtype=bool)
        fresh[:1] = True
        np.not_equal(code[1:], code[:-1], out=fresh[1:])
        self.codes = code[fresh]  # sorted: the key number of a code is its position here
        key = np.cumsum(fresh) - 1
        del code, fresh
        if self.codes.size * self.span >= 1 << 62:
            raise ValueError(
                f"attribution window of {self.span} ms over {self.codes.size} keys does not fit "
                "one 63-bit sort key; look up fewer or closer times per call"
            )
        # for a CGNAT row, the key of its inside address's whole-address rows; -1 when there is
        # none, -2 on a row that is not a CGNAT row
        whole = np.full(len(self.addrs) + 1, -1, dtype=np.int64)
        is_whole = ((self.codes >> 17) & 0x1FFFF) == 0
        whole[self.codes[is_whole] >> 34] = np.flatnonzero(is_whole)
        inside = rows.column("inside_addr")
        iaid = pc.fill_null(pc.index_in(inside, value_set=self.addrs), len(self.addrs))
        ikey = whole[np.asarray(iaid.to_numpy(zero_copy_only=False), np.int64)]
        ikey[~np.asarray(pc.is_valid(inside).to_numpy(zero_copy_only=False))] = -2
        del whole, iaid
        lo = np.clip(_ints(rows, "lo"), t0, t1 + 1)
        lo -= t0
        packed = np.take(lo, by_code)
        del lo
        packed += key * self.span
        # already grouped by key: this sort only orders each key's intervals by start
        order = np.argsort(packed)
        self.start = np.take(packed, order)
        del packed
        self.rid = np.take(by_code, order)
        del by_code
        key = np.take(key, order)
        del order
        hi = np.clip(_ints(rows, "hi"), t0, t1 + 1)
        hi -= t0
        self.end = np.take(hi, self.rid)
        del hi
        self.end += key * self.span
        del key
        self.ikey = np.take(ikey, self.rid)
        del ikey
        self.reach = np.maximum.accumulate(self.end)

    def keys(self) -> pa.Table:
        """The keys: number, address, block start (-1: whole address), block end."""
        return pa.table(
            {
                "kid": pa.array(np.arange(self.codes.size, dtype=np.int64)),
                "addr": self.addrs.take(pa.array(self.codes >> 34)),
                "kp": pa.array(((self.codes >> 17) & 0x1FFFF) - 1, pa.int32()),
                "pe": pa.array(self.codes & 0xFFFF, pa.int32()),
            }
        )

    def candidates(self, qid: np.ndarray, key: np.ndarray, t: np.ndarray) -> pa.Table:
        """Every row holding each probe's key at its time: (qid, pkey, rid, ikey, cg)."""
        if not len(self.start):
            qid = key = np.zeros(0, dtype=np.int64)
            return self._table(qid, key, key)
        p = key * self.span + (t - self.t0)
        last = np.searchsorted(self.start, p, side="right") - 1
        # the last interval of the key started by then: only candidate when it still holds and
        # nothing before it reaches that far
        prev = np.where(last > 0, self.reach[np.maximum(last - 1, 0)], -1)
        valid = last >= 0
        valid[valid] = self.start[last[valid]] >= key[valid] * self.span
        one = valid & (self.end[np.maximum(last, 0)] > p) & (prev <= p)
        many = np.flatnonzero(valid & (prev > p))
        # otherwise every interval from the first whose reach passes the time to the last one
        first = np.searchsorted(self.reach, p[many], side="right")
        counts = last[many] - first + 1
        owner = np.repeat(many, counts)
        offset = np.repeat(np.cumsum(counts) - counts, counts)
        pos = np.repeat(first, counts) + (np.arange(owner.size) - offset)
        hold = self.end[pos] > p[owner]
        owner, pos = owner[hold], pos[hold]
        one_i = np.flatnonzero(one)
        who = np.concatenate([one_i, owner])
        return self._table(qid[who], key[who], np.concatenate([last[one_i], pos]))

    def _table(self, qid: np.ndarray, key: np.ndarray, at: np.ndarray) -> pa.Table:
        return pa.table(
            {
                "qid": pa.array(qid, pa.int64()),
                "pkey": pa.array(key, pa.int64()),
                "rid": pa.array(self.rid[at], pa.int64()),
                "ikey": pa.array(np.maximum(self.ikey[at], -1), pa.int64()),
                "cg": pa.array(self.ikey[at] > -2, pa.bool_()),
            }
        )


def _answer(
    gov: Governance, probe: pa.Table, grant: Grant, withheld: pa.Table, skew_ms: int
) -> pa.Table:
    """One row per lookup: qid, status, sub, n_inside, inside, src."""
    rows = gov.combine(
        _rows_sql(skew_ms, narrow=probe.num_rows <= _NARROW),
        q=probe,
        alloc=grant,
        withheld=withheld,
    ).to_arrow_table()
    ts = probe.column("ts").cast(pa.int64())
    t0, t1 = (pc.min(ts).as_py() or 0), (pc.max(ts).as_py() or 0)
    index = _Index(rows, t0, t1)
    keys = index.keys()
    probes = gov.combine(_PROBES_SQL, q=probe, keys=keys).to_arrow_table()
    qid1, t = _ints(probes, "qid"), _ints(probes, "t")
    c1 = index.candidates(qid1, _ints(probes, "key"), t)
    # stage two: the holder of each CGNAT row's inside address at the same time
    when = np.zeros(probe.num_rows, dtype=np.int64)
    when[qid1] = t
    cq, ck = _ints(c1, "qid"), _ints(c1, "ikey")
    inner = c1.column("cg").combine_chunks().to_numpy(zero_copy_only=False) & (ck >= 0)
    width = int(ck.max(initial=0)) + 1
    pair = np.unique(cq[inner] * width + ck[inner])
    qid2, key2 = pair // width, pair % width
    c2 = index.candidates(qid2, key2, when[qid2])
    del index
    need_port = _ints(gov.combine(_NEED_PORT_SQL, q=probe, keys=keys).to_arrow_table(), "qid")
    return _summarise(gov, probe.num_rows, rows, c1, c2, need_port)


def _summarise(
    gov: Governance, n: int, rows: pa.Table, c1: pa.Table, c2: pa.Table, need_port: np.ndarray
) -> pa.Table:
    """One row per lookup (qid, status, sub, n_inside, inside, src) from the candidate rows of
    both stages: a lookup with one holder (nearly all) is answered here, in Arrow; those with
    several go through one small aggregate."""
    q1, r1, k1 = _ints(c1, "qid"), _ints(c1, "rid"), _ints(c1, "ikey")
    cg1 = np.asarray(c1.column("cg").combine_chunks().to_numpy(zero_copy_only=False), bool)
    q2, p2, r2 = _ints(c2, "qid"), _ints(c2, "pkey"), _ints(c2, "rid")
    # holders: a plain row; a port block with each holder of its inside address then, or with
    # none (an unnamed holder)
    width = max(int(p2.max(initial=0)), int(k1.max(initial=0))) + 1
    code2 = q2 * width + p2
    by2 = np.argsort(code2)
    code2 = code2[by2]
    code1 = np.where(cg1 & (k1 >= 0), q1 * width + k1, -1)
    first = np.searchsorted(code2, code1, side="left")
    count = np.where(cg1, np.searchsorted(code2, code1, side="right") - first, 0)
    rows_per = np.maximum(count, 1)
    h = np.repeat(np.arange(q1.size), rows_per)
    step = np.arange(h.size) - np.repeat(np.cumsum(rows_per) - rows_per, rows_per)
    matched = count[h] > 0
    rid2 = np.full(h.size, -1, dtype=np.int64)
    rid2[matched] = r2[by2[first[h][matched] + step[matched]]]
    hq, rid1, cg = q1[h], r1[h], cg1[h]

    # the identities of the holders' rows only
    def at(col: str, pos: np.ndarray) -> pa.Array:
        return rows.column(col).take(pa.array(pos, mask=pos < 0)).combine_chunks()

    sub = pc.if_else(pa.array(cg), at("subscriber_id", rid2), at("subscriber_id", rid1))
    inside = pc.if_else(pa.array(cg), at("inside_addr", rid1), pa.nulls(h.size, pa.string()))
    src1 = at("source", rid1)
    src = pc.if_else(
        pa.array(cg),
        pc.binary_join_element_wise(src1, pc.fill_null(at("source", rid2), "?"), "+"),
        src1,
    )
    hidden = np.asarray(pc.fill_null(at("hidden", rid1), False).to_numpy(zero_copy_only=False))
    hidden2 = np.asarray(pc.fill_null(at("hidden", rid2), False).to_numpy(zero_copy_only=False))
    unnamed = (
        (cg & ~matched)
        | hidden
        | (cg & hidden2)
        | ~np.asarray(pc.is_valid(sub).to_numpy(zero_copy_only=False))
    )
    holders = np.bincount(hq, minlength=n)
    one = holders[hq] == 1
    single = pa.table(
        {
            "qid": pa.array(hq[one]),
            "status": pa.array(
                np.where(
                    unnamed[one],
                    np.where(
                        np.asarray(pc.is_valid(sub).to_numpy(zero_copy_only=False))[one],
                        "ambiguous",
                        "unknown",
                    ),
                    "ok",
                ),
                pa.string(),
            ),
            "sub": sub.filter(pa.array(one)),
            "n_inside": pa.array(
                np.where(inside.is_valid().to_numpy(zero_copy_only=False)[one], 1, 2)
            ),
            "inside": inside.filter(pa.array(one)),
            "src": src.filter(pa.array(one)),
        }
    )
    parts = [single]
    if not one.all():
        many = pa.table(
            {
                "qid": pa.array(hq[~one]),
                "sub": sub.filter(pa.array(~one)),
                "unnamed": pa.array(unnamed[~one]),
                "inside": inside.filter(pa.array(~one)),
                "src": src.filter(pa.array(~one)),
            }
        )
        parts.append(gov.combine(_MANY_SQL, h=many).to_arrow_table())
    nobody = np.flatnonzero(holders == 0)
    status = np.where(np.isin(nobody, need_port), "port-required", "unknown")
    parts.append(
        pa.table(
            {
                "qid": pa.array(nobody),
                "status": pa.array(status, pa.string()),
                "sub": pa.nulls(nobody.size, pa.string()),
                "n_inside": pa.array(np.full(nobody.size, 2)),
                "inside": pa.nulls(nobody.size, pa.string()),
                "src": pa.nulls(nobody.size, pa.string()),
            }
        )
    )
    res = pa.concat_tables([t.cast(parts[0].schema) for t in parts])
    return res.take(pc.sort_indices(res.column("qid")))


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
        sandbox=gov.sandbox(gov.config.attribution.memory_limit_mb, label="attribution"),
        # a large batch reads the allocations once (see _rows_sql): streamed, not copied
        stream=q.num_rows > _NARROW,
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
        held
        if (held := grant.withheld_arrow()) is not None
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
    try:
        res = _answer(gov, probe, grant, withheld, skew_ms)
    finally:
        grant.sandbox.close()
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
