"""Beaconing: host → endpoint pairs whose connections come at regular times with regular sizes.

Follows RITA's published beacon analysis (Active Countermeasures, ``pkg/beacon``): for each pair,
over the connection start times and the bytes each connection carried,

* Bowley (quartile) skewness of the inter-arrival times and of the sizes — a beacon's distribution
  is symmetric: score ``1 - |skew|``;
* median absolute deviation about the median (MADM) — a beacon's spread is small: for times
  ``1 - MADM / median``, for sizes ``1 - MADM / 32`` bytes (RITA's constant);
* a connection-count score: how many connections the pair made against what one every
  ``count_period_s`` over the observed span would give;
* for sizes, a smallness score ``1 - mode / 65535``.

The time score and the size score are the means of their parts; the pair's score is the mean of
the two. All of it is one DuckDB query over the oriented flows.

Sampling: a 1-in-N sampled link drops most connections of a beacon, and the gaps between the
survivors are multiples of the period — no longer regular. Pairs are scored only where evidence
is enough: at least ``min_connections`` sampled records and a sampling rate of at most
``max_rate`` (lightly sampled or unsampled links). Elsewhere the beacon score is unknown, not low.
Endpoints a large share of the hosts use are not scored at all (see ``max_share_scored``).
"""

from __future__ import annotations

import pyarrow as pa

from mamori.detect.base import DetectorParams
from mamori.detect.flowview import FlowView

__all__ = [
    "BeaconParams",
    "beacon_endpoints_sql",
    "beacon_pairs",
    "beacon_sql",
    "materialise_pairs",
]


class BeaconParams(DetectorParams):
    min_connections: int = 6
    max_rate: int = 16
    count_period_s: float = 1800.0
    #: connection starts closer than this are one connection (a flow split by the exporter)
    merge_s: float = 1.0
    #: a pair with at least this score beacons
    threshold: float = 0.8
    #: pairs are scored only towards endpoints at most this share of hosts use (or
    #: ``min_hosts_scored``): a service a large part of the population uses is no C&C, and
    #: scoring every subscriber's pairs with it is most of the cost
    max_share_scored: float = 0.05
    min_hosts_scored: int = 10


# the most frequent size, the largest of equally frequent ones, on both engines: mode() breaks
# ties by the order rows arrive in, which differs between plans and engines (a pair whose sizes
# never repeat got a different score from one run to the next). The largest, because the score
# rewards small sizes: where no size repeats, there is no evidence of a small fixed message
# (silence rather than a false claim)
_MOST_FREQUENT_SIZE = """    bm AS (
        SELECT host, ext, eport, proto, bytes AS bmode FROM (
            SELECT host, ext, eport, proto, bytes,
                   row_number() OVER (PARTITION BY host, ext, eport, proto
                                      ORDER BY count(*) DESC, bytes DESC) AS r
            FROM ev GROUP BY host, ext, eport, proto, bytes
        ) WHERE r = 1
    ),"""

_DUCKDB_INTERVALS = """
    d AS (
        SELECT *, ts - lag(ts) OVER (PARTITION BY host, ext, eport, proto ORDER BY ts) AS dt
        FROM ev
    ),
{most_frequent_size}
    a0 AS (
        SELECT host, ext, eport, proto,
               count(*) AS n, min(ts) AS first, max(ts) AS last,
               quantile_cont(CASE WHEN dt >= {merge_s} THEN dt END, [0.25, 0.5, 0.75]) AS tq,
               mad(CASE WHEN dt >= {merge_s} THEN dt END) AS tmad,
               count(CASE WHEN dt >= {merge_s} THEN dt END) AS nd,
               quantile_cont(bytes, [0.25, 0.5, 0.75]) AS bq,
               mad(bytes) AS bmad
        FROM d GROUP BY ALL
    ),
    a AS (SELECT a0.*, bm.bmode FROM a0 JOIN bm USING (host, ext, eport, proto)),"""

# Spark has no mad(): the same figures in SQL both engines run (tested against DuckDB's own in
# tests/detect/test_beacon.py)
_NEUTRAL_INTERVALS = """
    d0 AS (
        SELECT *, ts - lag(ts) OVER (PARTITION BY host, ext, eport, proto ORDER BY ts) AS dt0
        FROM ev
    ),
    d1 AS (SELECT *, CASE WHEN dt0 >= {merge_s} THEN dt0 END AS dt FROM d0),
    -- the median absolute deviation, spelled so that Spark runs it too (it has no mad())
    d AS (
        SELECT *, median(dt) OVER (PARTITION BY host, ext, eport, proto) AS dt_med,
               median(bytes) OVER (PARTITION BY host, ext, eport, proto) AS bytes_med
        FROM d1
    ),
{most_frequent_size}
    a0 AS (
        SELECT host, ext, eport, proto,
               count(*) AS n, min(ts) AS first, max(ts) AS last,
               quantile_cont(dt, [0.25, 0.5, 0.75]) AS tq,
               median(abs(dt - dt_med)) AS tmad,
               count(dt) AS nd,
               quantile_cont(bytes, [0.25, 0.5, 0.75]) AS bq,
               median(abs(bytes - bytes_med)) AS bmad
        FROM d GROUP BY ALL
    ),
    a AS (SELECT a0.*, bm.bmode FROM a0 JOIN bm USING (host, ext, eport, proto)),"""


def _intervals_sql(engine: str, p: BeaconParams) -> str:
    """CTEs ``d`` … ``a``: per pair, the intervals' and sizes' quartiles, median absolute
    deviations and most frequent size. DuckDB keeps its own mad() and quartiles (the neutral
    spelling's window medians cost it minutes at 10M records); another engine gets the neutral
    spelling. Both take the most frequent size the same way."""
    sql = _DUCKDB_INTERVALS if engine == "duckdb" else _NEUTRAL_INTERVALS
    return sql.replace("{merge_s}", str(p.merge_s)).replace(
        "{most_frequent_size}", _MOST_FREQUENT_SIZE
    )


def beacon_sql(view: str, p: BeaconParams, engine: str = "duckdb") -> str:
    """Per (host, ext, eport, proto): n, first, last, median interval, scores. ``engine``: the
    sandbox's (:attr:`Sandbox.engine`), for the one step written twice."""
    return f"""
    WITH pop AS (SELECT count(DISTINCT host) AS n_pop FROM {view}),
    rare AS (
        SELECT ext, eport, proto FROM {view} WHERE outbound AND rate <= {p.max_rate}
        GROUP BY ALL
        HAVING count(DISTINCT host) <= greatest({p.min_hosts_scored},
                                                {p.max_share_scored} * (SELECT n_pop FROM pop))
    ),
    pc AS (
        SELECT host, ext, eport, proto
        FROM {view} o SEMI JOIN rare USING (ext, eport, proto)
        WHERE outbound
        GROUP BY ALL
        HAVING count(*) >= {p.min_connections} AND max(rate) <= {p.max_rate}
    ),
    ev AS (
        SELECT o.host, o.ext, o.eport, o.proto, o.ts, o.bytes
        FROM {view} o SEMI JOIN pc USING (host, ext, eport, proto)
        WHERE o.outbound
    ),
{_intervals_sql(engine, p)}
    s AS (
        SELECT *,
            CASE WHEN tq[3] - tq[1] <= 0 THEN 1.0
                 ELSE 1.0 - least(1.0, abs((tq[1] + tq[3] - 2 * tq[2]) / (tq[3] - tq[1]))) END
                AS ts_skew,
            CASE WHEN tq[2] <= 0 THEN 0.0 ELSE greatest(0.0, 1.0 - tmad / tq[2]) END AS ts_madm,
            least(1.0, nd / greatest(1.0, (last - first) / {p.count_period_s})) AS ts_count,
            CASE WHEN bq[3] - bq[1] <= 0 THEN 1.0
                 ELSE 1.0 - least(1.0, abs((bq[1] + bq[3] - 2 * bq[2]) / (bq[3] - bq[1]))) END
                AS ds_skew,
            greatest(0.0, 1.0 - bmad / 32.0) AS ds_madm,
            greatest(0.0, 1.0 - bmode / 65535.0) AS ds_small
        FROM a WHERE nd >= {p.min_connections - 1}
    )
    SELECT host, ext, eport, proto, n, first, last, tq[2] AS period_s,
           (ts_skew + ts_madm + ts_count) / 3.0 AS ts_score,
           (ds_skew + ds_madm + ds_small) / 3.0 AS ds_score,
           ((ts_skew + ts_madm + ts_count) / 3.0 + (ds_skew + ds_madm + ds_small) / 3.0) / 2.0
               AS score
    FROM s
    """


def beacon_pairs(view: FlowView, params: BeaconParams | None = None) -> pa.Table:
    """Scored host → endpoint pairs (internal to the detectors: it holds host addresses)."""
    p = params or BeaconParams()
    out: pa.Table = view.sql(beacon_sql(view.name, p, view.sandbox.engine)).to_arrow_table()
    return out


def materialise_pairs(view: FlowView, params: BeaconParams | None = None) -> str:
    """Score the pairs once into a table of the run (dropped with the view); its name."""
    name = view.name + "_beacon"
    sql = beacon_sql(view.name, params or BeaconParams(), view.sandbox.engine)
    view.sql(sql).create(name)
    view.tables.insert(0, name)
    return name


def beacon_endpoints_sql(
    view: str,
    pairs: str,
    p: BeaconParams,
    max_share: float,
    max_hosts_min: int,
    max_probe_share: float = 0.5,
    *,
    seeds: str | None = None,
    rat_min_per_hour: float = 100.0,
) -> str:
    """Endpoints some host beacons to, with how many hosts use them at all and what corroborates
    or weakens the beacon.

    A periodic service many subscribers use (NTP, update checks, messaging, camera clouds)
    beacons too; what sets a C&C apart is that few hosts use it. An endpoint is kept when at
    most ``max(max_hosts_min, max_share × population)`` hosts exchange with it, on a port that is
    not being scanned (most attempts on it, across all hosts, unanswered: a brute-forcing bot
    repeating itself against a victim is regular too).

    A pair counts as beaconing when its score reaches ``p.threshold``, or when it makes at least
    ``rat_min_per_hour`` connections an hour (a RAT's bursts; its score still says how regular).
    Per endpoint: ``per_hour`` (the busiest pair's connections an hour, scaled by the sampling
    rate, over a span of at least ten minutes so a short burst does not look endless),
    ``suspects`` (beaconing hosts that also reach a seed, when ``seeds`` names the seed table),
    ``ports_served`` (distinct ports of the endpoint our hosts exchange with) and ``in_out``
    (bytes it sends over bytes it receives).
    """
    suspects = (
        f"""SELECT DISTINCT o.host FROM {view} o JOIN {seeds} s
            ON o.ext = s.ip AND (s.port IS NULL OR s.port = o.eport)
            WHERE o.est AND NOT o.server_side"""
        if seeds
        else f"SELECT host FROM {view} WHERE false"
    )
    return f"""
    WITH bp AS (
        SELECT *, n / greatest(last - first, 600.0) * 3600.0 AS per_hour FROM {pairs}
    ),
    o AS (SELECT * FROM {view} WHERE NOT server_side),
    pop AS (SELECT count(DISTINCT host) AS n_pop FROM o),
    sus AS ({suspects}),
    beat AS (
        SELECT bp.*, sus.host IS NOT NULL AS suspect FROM bp LEFT JOIN sus USING (host)
        WHERE bp.score >= {p.threshold} OR bp.per_hour >= {rat_min_per_hour}
    ),
    hot AS (
        SELECT ext, eport, proto, count(*) AS beaconing_hosts, max(score) AS max_score,
               avg(score) AS mean_score, median(period_s) AS period_s, sum(n) AS sampled_flows,
               min(first) AS first, max(last) AS last, max(per_hour) AS per_hour,
               count(*) FILTER (WHERE suspect) AS suspects
        FROM beat GROUP BY ALL
    ),
    pp AS (
        SELECT eport, proto, avg(CASE WHEN est THEN 0.0 ELSE 1.0 END) AS probe_share
        FROM o WHERE outbound GROUP BY ALL
    ),
    ep AS (
        SELECT o.ext, o.eport, o.proto, count(DISTINCT o.host) AS hosts,
               max(o.rate) AS rate_max, min(o.rate) AS rate_min,
               sum(CASE WHEN o.outbound THEN 0 ELSE o.bytes END) AS bytes_in,
               sum(CASE WHEN o.outbound THEN o.bytes ELSE 0 END) AS bytes_out
        FROM o SEMI JOIN hot USING (ext, eport, proto)
        WHERE o.est
        GROUP BY ALL
    ),
    srv AS (
        SELECT ext, count(DISTINCT eport * 256 + proto) AS ports_served
        FROM o WHERE est AND ext IN (SELECT ext FROM hot) GROUP BY ALL
    )
    SELECT hot.ext, hot.eport, hot.proto, hot.beaconing_hosts, hot.max_score, hot.mean_score,
           hot.period_s, hot.sampled_flows, hot.first, hot.last, hot.suspects,
           hot.per_hour * coalesce(ep.rate_min, 1) AS per_hour,
           ep.hosts, ep.rate_min, ep.rate_max, pop.n_pop, srv.ports_served,
           ep.bytes_in / greatest(ep.bytes_out, 1) AS in_out,
           greatest({max_hosts_min}, {max_share} * pop.n_pop) AS max_hosts
    FROM hot JOIN ep USING (ext, eport, proto) JOIN srv USING (ext) CROSS JOIN pop
    LEFT JOIN pp USING (eport, proto)
    WHERE ep.hosts <= greatest({max_hosts_min}, {max_share} * pop.n_pop)
      AND coalesce(pp.probe_share, 0) < {max_probe_share}
    """
