"""Correlation discovery of C&C servers (measure M2a).

Start from *suspect hosts*: internal hosts that talked to a known C&C or first-stage server (the
seeds, from reputation). Infected hosts of one botnet also talk to its other, not-yet-listed
servers; so look at the suspects' other external peers, and report a peer on which the suspects
of one seed converge **more than the general population does**.

For seed *s* with ``K`` suspect hosts, a peer on which ``k`` suspects converge is compared with
what the population does: how many suspects would use it if each used it as often as a host *of
its own activity* does. Activity is a host's degree in the host–endpoint graph (how many distinct
endpoints it exchanged with, ``d_h``); a peer's popularity is its degree (``n``, distinct hosts).
In the degree-corrected (configuration-model) null, host *h* reaches the peer with probability
``1 − exp(−d_h·n / D)`` (``D``: all host–endpoint pairs); the sum over the seed's suspects is the
expected count ``E``. This matters most under sampling and behind CGNAT: the hosts seen at all
are the busy ones, a shared address carries hundreds of subscribers, and such addresses are seen
everywhere — compared with average hosts (or even with coarse activity strata), the busiest
hosts' peers all look like convergence. A beacon's volume does not move a host's degree, its
fan-out barely does. The chance of ``k`` or more is the Poisson tail ``P(X ≥ k | E)``, corrected
for the number of (seed, peer) pairs examined (Bonferroni) so the expected number of chance
findings stays below ``alpha``. Only pairs that could be reported count as examined: a peer that
only one host reached, or a seed with one suspect, can never show ``min_hosts`` converging
hosts (a restriction on the margins only, as in Tarone's correction for discrete tests).
Significance is not enough on its own: ``k`` must also be ``min_lift`` times ``E``, and at least
``min_purity`` of the peer's hosts must be suspects. A CDN, resolver, NTP or update server is
popular: suspects use it about as often as anyone of their activity, and ``k/E`` stays near 1. A
C&C server is used by (almost) nobody else. A wrongly listed benign seed (a CDN on a feed) makes
a suspect group that is just a slice of the population, and its lift on anything stays near 1.

Only *exchanges* count as contact: TCP records with ACK and no RST (a scan's SYN and the RST it
draws are not conversations — otherwise a scanning botnet's targets would look like a shared
peer), UDP records where the peer also sends back. Records where our host is the server are
skipped. The few scan targets that do answer (open telnet a botnet brute-forces) sit on a port
where most attempts go unanswered across all hosts (``max_port_probe_share``): victims, not
servers the bots are told to call.

Sampling: everything is counted on the sampled records, so the test works at any rate; fewer
sampled records mean fewer hosts seen and weaker (not wrong) evidence. The evidence of each
finding gives the distinct suspect hosts and sampled records supporting it, the sampling rates,
and the records scaled up by the rate.

Co-behaviour: the suspects' exchanges with a C&C look alike — the coefficient of variation of
bytes per packet across them, and (from :mod:`mamori.detect.beacon`) periodic timing. It adds to
the score; it does not gate, because sampling thins it out.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.stats import poisson  # type: ignore[import-untyped]

from mamori.detect.base import DetectorParams
from mamori.detect.flowview import FlowView, rate_value
from mamori.detect.seeds import Seeds

__all__ = ["CorrelationParams", "candidates_sql", "correlate", "margins_sql", "tarone_tests"]


class CorrelationParams(DetectorParams):
    #: at least this many distinct suspect hosts on a peer
    min_hosts: int = 2
    #: family-wise level: tail probability times the number of testable pairs (Tarone's count,
    #: :func:`tarone_tests`) below which a peer is reported
    alpha: float = 1e-3
    #: at least this share of the peer's hosts must be suspects
    min_purity: float = 0.2
    #: suspects must use the peer this many times more often than the population does
    min_lift: float = 3.0
    #: a port on which most attempts, across all hosts, go unanswered is being scanned: a
    #: scanning or brute-forcing botnet's answering targets converge too, but are victims
    max_port_probe_share: float = 0.5
    #: UDP peers must send back at least this share of the packets they receive
    min_udp_reply: float = 0.05


def candidates_sql(view: str, seeds: str, p: CorrelationParams) -> str:
    return f"""
    WITH o AS (SELECT * FROM {view} WHERE NOT server_side),
    pop AS (SELECT count(DISTINCT host) AS n_pop FROM o),
    fan AS (
        SELECT host, count(DISTINCT hash(ext, eport, proto)) AS fan_out
        FROM o WHERE est GROUP BY host
    ),
    edges AS (SELECT greatest(sum(fan_out), 1)::DOUBLE AS n_edges FROM fan),
    sh AS (
        SELECT DISTINCT s.seed_id, o.host
        FROM o JOIN {seeds} s ON o.ext = s.ip AND (s.port IS NULL OR o.eport = s.port)
    ),
    ks AS (SELECT seed_id, count(*) AS k_seed FROM sh GROUP BY seed_id),
    pr AS (
        SELECT sh.seed_id, o.ext, o.eport, o.proto,
               count(DISTINCT o.host) AS k, count(*) AS flows, sum(o.rate) AS est_flows,
               min(o.rate) AS rate_min, max(o.rate) AS rate_max,
               min(o.ts) AS first, max(o.te) AS last,
               stddev_pop(o.bytes / greatest(o.packets, 1))
                   / nullif(avg(o.bytes / greatest(o.packets, 1)), 0) AS size_cv
        FROM o JOIN sh USING (host)
        WHERE o.est
        GROUP BY sh.seed_id, o.ext, o.eport, o.proto
    ),
    pp AS (
        SELECT eport, proto, avg(CASE WHEN est THEN 0.0 ELSE 1.0 END) AS probe_share
        FROM o WHERE outbound GROUP BY ALL
    ),
    cand AS (SELECT * FROM pr WHERE k >= {p.min_hosts}),
    ep AS (
        SELECT o.ext, o.eport, o.proto, count(DISTINCT o.host) AS n_c,
               sum(CASE WHEN o.outbound THEN o.packets ELSE 0 END) AS out_p,
               sum(CASE WHEN o.outbound THEN 0 ELSE o.packets END) AS in_p
        FROM o SEMI JOIN cand USING (ext, eport, proto)
        WHERE o.est GROUP BY ALL
    ),
    -- a seed's suspects by fan-out: the expected count below depends on a suspect only through
    -- its fan-out, so it sums over the seed's distinct fan-outs, not over every suspect once per
    -- candidate peer (a seed with thousands of suspects times thousands of peers is billions)
    fh AS (
        SELECT sh.seed_id, f.fan_out, count(*) AS w
        FROM sh JOIN fan f ON f.host = sh.host GROUP BY ALL
    ),
    -- the purity test needs no expectation: peers that fail it are not worth one
    pure AS (
        SELECT c.seed_id, c.ext, c.eport, c.proto, ep.n_c
        FROM cand c JOIN ep USING (ext, eport, proto)
        WHERE c.k >= {p.min_purity} * ep.n_c
    ),
    ex AS (
        SELECT c.seed_id, c.ext, c.eport, c.proto,
               sum(fh.w * (1.0 - exp(-fh.fan_out * c.n_c / edges.n_edges))) AS expected
        FROM pure c
        JOIN fh ON fh.seed_id = c.seed_id
        CROSS JOIN edges
        GROUP BY ALL
    )
    SELECT c.*, coalesce(pp.probe_share, 0) AS probe_share, ep.n_c, ep.out_p, ep.in_p, ks.k_seed, pop.n_pop,
           coalesce(ex.expected, 0) AS expected,
           s.ip AS seed_ip, s.port AS seed_port, s.category AS seed_category,
           s.source AS seed_source
    FROM cand c
    JOIN ep USING (ext, eport, proto)
    JOIN ks USING (seed_id)
    JOIN {seeds} s USING (seed_id)
    LEFT JOIN ex USING (seed_id, ext, eport, proto)
    LEFT JOIN pp USING (eport, proto)
    CROSS JOIN pop
    WHERE c.k >= {p.min_purity} * ep.n_c
      AND c.k >= {p.min_lift} * coalesce(ex.expected, 0)
      AND (c.proto <> 17 OR ep.in_p >= {p.min_udp_reply} * ep.out_p)
      AND coalesce(pp.probe_share, 0) < {p.max_port_probe_share}
      AND NOT (c.ext = s.ip AND (s.port IS NULL OR c.eport = s.port))
    """


def margins_sql(view: str, seeds: str, p: CorrelationParams) -> str:
    """Per (seed, peer) pair with a suspect on it: what bounds the pair's test without looking at
    how many suspects are on it — the most there could be (``n_max``: the fewer of the seed's
    suspects and the peer's hosts) and a lower bound on the expected count ``e_low`` (the
    configuration-model sum is concave in each host's term: ``1 − exp(−x) ≥ x·(1 − exp(−x_max))
    / x_max`` for ``x ≤ x_max``, with ``x_max`` from the seed's busiest suspect)."""
    return f"""
    WITH o AS (SELECT * FROM {view} WHERE NOT server_side),
    fan AS (
        SELECT host, count(DISTINCT hash(ext, eport, proto)) AS fan_out
        FROM o WHERE est GROUP BY host
    ),
    edges AS (SELECT greatest(sum(fan_out), 1)::DOUBLE AS n_edges FROM fan),
    sh AS (
        SELECT DISTINCT s.seed_id, o.host
        FROM o JOIN {seeds} s ON o.ext = s.ip AND (s.port IS NULL OR o.eport = s.port)
    ),
    sd AS (
        SELECT sh.seed_id, count(*) AS k_seed, coalesce(sum(f.fan_out), 0)::DOUBLE AS d_sum,
               coalesce(max(f.fan_out), 0)::DOUBLE AS d_max
        FROM sh LEFT JOIN fan f USING (host) GROUP BY sh.seed_id
    ),
    pr AS (
        SELECT DISTINCT sh.seed_id, o.ext, o.eport, o.proto
        FROM o JOIN sh USING (host) WHERE o.est
    ),
    epn AS (
        SELECT ext, eport, proto, count(DISTINCT host) AS n_all
        FROM o SEMI JOIN pr USING (ext, eport, proto)
        WHERE est GROUP BY ALL
    )
    SELECT least(sd.k_seed, epn.n_all) AS n_max,
           CASE WHEN sd.d_max * epn.n_all = 0 THEN 0.0
                ELSE sd.d_sum * epn.n_all / edges.n_edges
                     * (1.0 - exp(-sd.d_max * epn.n_all / edges.n_edges))
                     / (sd.d_max * epn.n_all / edges.n_edges) END AS e_low
    FROM pr JOIN epn USING (ext, eport, proto) JOIN sd USING (seed_id) CROSS JOIN edges
    WHERE least(sd.k_seed, epn.n_all) >= {p.min_hosts}
    """


def tarone_tests(n_max: np.ndarray, e_low: np.ndarray, p: CorrelationParams) -> int:
    """How many tests the family-wise correction counts (Tarone 1990): a pair whose smallest
    attainable p-value (all ``n_max`` possible suspects on it) is above ``alpha / m``, or that
    could not reach ``min_lift`` even then, can never be reported, so it does not dilute the
    others. ``m`` is the smallest count for which at most ``m`` pairs remain."""
    n_max = np.asarray(n_max, dtype=np.float64)
    e_low = np.asarray(e_low, dtype=np.float64)
    ok = n_max >= p.min_lift * e_low
    p_min = np.sort(poisson.sf(n_max[ok] - 1, np.maximum(e_low[ok], 1e-12)))
    n = p_min.size
    if n == 0:
        return 1
    m = np.arange(1, n + 1)
    counts = np.searchsorted(p_min, p.alpha / m, side="right")
    return int(m[np.argmax(counts <= m)])


_EMPTY = pa.schema(
    [
        ("ip", pa.string()),
        ("port", pa.int32()),
        ("proto", pa.int32()),
        ("score", pa.float64()),
        ("first", pa.float64()),
        ("last", pa.float64()),
        ("evidence", pa.string()),
    ]
)


def _round(x: float, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def correlate(
    view: FlowView,
    seeds: Seeds,
    params: CorrelationParams | None = None,
    periodic: dict[tuple[str, int, int], float] | None = None,
) -> pa.Table:
    """Candidate C&C endpoints: ip, port, proto, score, first, last (epoch s), evidence JSON.

    ``periodic``: beacon score per (ip, port, proto) from :mod:`mamori.detect.beacon`, if run.
    """
    p = params or CorrelationParams()
    if seeds.count == 0:
        return _EMPTY.empty_table()
    t = view.sql(candidates_sql(view.name, seeds.name, p)).to_arrow_table()
    if t.num_rows == 0:
        return _EMPTY.empty_table()
    c = {name: t.column(name).to_numpy(zero_copy_only=False) for name in t.column_names}
    k = c["k"].astype(np.int64)
    n_c = c["n_c"].astype(np.int64)
    k_seed = c["k_seed"].astype(np.int64)
    n_pop = c["n_pop"].astype(np.int64)
    mg = view.sql(margins_sql(view.name, seeds.name, p)).to_arrow_table()
    m_pairs = tarone_tests(
        mg.column("n_max").to_numpy(zero_copy_only=False),
        mg.column("e_low").to_numpy(zero_copy_only=False),
        p,
    )
    expected = c["expected"].astype(np.float64)
    # k suspects where `expected` would use it by chance (degree-corrected, see above)
    pval = poisson.sf(k - 1, np.maximum(expected, 1e-9))
    qval = np.minimum(1.0, pval * m_pairs)
    keep = qval <= p.alpha
    if not keep.any():
        return _EMPTY.empty_table()
    idx = np.nonzero(keep)[0]
    # keep the strongest seed per endpoint
    best: dict[tuple[str, int, int], int] = {}
    for ii in idx:
        i = int(ii)
        key = (str(c["ext"][i]), int(c["eport"][i]), int(c["proto"][i]))
        j = best.get(key)
        if j is None or qval[i] < qval[j] or (qval[i] == qval[j] and k[i] > k[j]):
            best[key] = i
    rows: dict[str, list[Any]] = {f.name: [] for f in _EMPTY}
    for key, i in best.items():
        purity = float(k[i] / max(n_c[i], 1))
        cv = c["size_cv"][i]
        size_sim = 1.0 / (1.0 + float(cv)) if cv is not None and not math.isnan(cv) else 0.0
        per = (periodic or {}).get(key)
        cob = max(size_sim, per or 0.0)
        strength = min(1.0, -math.log10(max(float(qval[i]), 1e-300)) / 10.0)
        score = 0.5 * strength + 0.3 * purity + 0.2 * cob
        evidence = {
            "method": "correlation",
            "seed": {
                "ip": str(c["seed_ip"][i]),
                "port": None if c["seed_port"][i] is None else int(c["seed_port"][i]),
                "category": str(c["seed_category"][i]),
                "source": str(c["seed_source"][i]),
            },
            "suspect_hosts": int(k_seed[i]),
            "population_hosts": int(n_pop[i]),
            "supporting_hosts": int(k[i]),
            "endpoint_hosts": int(n_c[i]),
            "purity": _round(purity),
            "expected_hosts": _round(float(expected[i]), 3),
            "lift": _round(float(k[i]) / max(float(expected[i]), 1e-9), 2),
            "sampled_flows": int(c["flows"][i]),
            "estimated_flows": int(c["est_flows"][i]),
            "sampling_rates": [rate_value(c["rate_min"][i]), rate_value(c["rate_max"][i])],
            "p_value": float(f"{pval[i]:.3g}"),
            "q_value": float(f"{qval[i]:.3g}"),
            "pairs_tested": m_pairs,
            "size_cv": _round(cv),
            "periodicity": _round(per) if per is not None else None,
        }
        rows["ip"].append(key[0])
        rows["port"].append(key[1])
        rows["proto"].append(key[2])
        rows["score"].append(round(score, 4))
        rows["first"].append(float(c["first"][i]))
        rows["last"].append(float(c["last"][i]))
        rows["evidence"].append(json.dumps(evidence, sort_keys=True))
    return pa.Table.from_pydict(rows, schema=_EMPTY)
