"""Correlation discovery: a planted C&C among popular services is found; the popular ones are not."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from mamori.detect.c2_correlation import CorrelationParams, correlate, tarone_tests
from mamori.detect.flowview import open_oriented
from mamori.detect.seeds import open_seeds
from mamori.governance import Governance
from tests.detect.conftest import (
    BOTS,
    CDNS,
    KNOWN_CC,
    NTP,
    OWN_SERVER,
    RARE_SITE,
    RESOLVER,
    SPAN_S,
    UNKNOWN_CC,
    Rows,
    load_reputation,
    load_world,
    synthetic_flows,
)

pytestmark = pytest.mark.slow  # a store per test


def _run(gov: Governance) -> dict[tuple[str, int], dict[str, object]]:
    view = open_oriented(gov, "test")
    seeds = open_seeds(gov, "test", view.sandbox)
    t = correlate(view, seeds)
    return {(r["ip"], r["port"]): r for r in t.to_pylist()}


def test_planted_cc_found_with_evidence(gov: Governance) -> None:
    load_world(gov)
    found = _run(gov)
    assert UNKNOWN_CC in found
    ev = json.loads(str(found[UNKNOWN_CC]["evidence"]))
    assert ev["supporting_hosts"] == len(BOTS)
    assert ev["sampled_flows"] > 0
    assert ev["estimated_flows"] == ev["sampled_flows"]
    assert ev["q_value"] <= 1e-3


@pytest.mark.parametrize(
    "endpoint",
    [
        *((c, 443) for c in CDNS),
        (RESOLVER, 53),
        NTP,
        RARE_SITE,
        OWN_SERVER,
        ("203.0.113.165", 23),  # a scan target all bots probed
    ],
)
def test_popular_rare_and_probed_endpoints_not_reported(
    gov: Governance, endpoint: tuple[str, int]
) -> None:
    load_world(gov)
    assert endpoint not in _run(gov)


def test_sampled_flows_scaled_in_evidence(gov: Governance) -> None:
    gov.write("M1", "flows", synthetic_flows(rate=10), "collector")
    load_reputation(gov)
    found = _run(gov)
    assert UNKNOWN_CC in found
    ev = json.loads(str(found[UNKNOWN_CC]["evidence"]))
    assert ev["sampling_rates"] == [10, 10]
    assert ev["estimated_flows"] == 10 * ev["sampled_flows"]


def test_wrongly_listed_cdn_makes_no_findings(gov: Governance) -> None:
    """A feed listing a CDN makes most hosts suspects; nothing converges for that seed."""
    gov.write("M1", "flows", synthetic_flows(), "collector")
    load_reputation(gov, [(CDNS[0], 443, "c2")])
    assert _run(gov) == {}


def test_no_seeds_no_findings(gov: Governance) -> None:
    gov.write("M1", "flows", synthetic_flows(), "collector")
    assert _run(gov) == {}


def _busy_world(seed: int = 3) -> pa.Table:
    """What 1-in-1,000 sampling leaves of an ISP whose hosts' activity is heavy-tailed: the hosts
    seen at a popular site are mostly the busiest, and the busiest are seen everywhere (most of all
    addresses shared by many subscribers behind CGNAT). 600 hosts, 300 sites by Zipf popularity; 12 bots seen at a listed C&C and at their unlisted one."""
    rng = np.random.default_rng(seed)
    r = Rows({k: [] for k in (
        "time_start", "time_end", "src_addr", "dst_addr", "src_port", "dst_port", "protocol",
        "tcp_flags", "packets", "bytes", "sampling_rate")})  # fmt: skip
    hosts = [f"10.0.{i // 250 + 1}.{i % 250 + 1}" for i in range(600)]
    sites = [(f"100.64.{i // 250}.{i % 250 + 1}", 443) for i in range(300)]
    pop = 1.0 / np.arange(1, len(sites) + 1)
    pop /= pop.sum()
    activity = rng.lognormal(0.0, 1.0, len(hosts))
    activity[-15:] *= 200.0  # shared (CGNAT) addresses: many subscribers' traffic each
    for h, a in zip(hosts, activity, strict=True):
        for s in rng.choice(len(sites), size=rng.poisson(4.0 * a), p=pop):
            r.exchange(h, sites[int(s)], float(rng.uniform(0, SPAN_S)), 900, rate=1000)
    for b in hosts[:12]:
        r.exchange(b, KNOWN_CC[0], float(rng.uniform(0, SPAN_S)), 520, rate=1000)
        r.exchange(b, UNKNOWN_CC, float(rng.uniform(0, SPAN_S)), 520, rate=1000)
    return pa.Table.from_pydict(r.cols)


def test_busy_hosts_of_a_listed_popular_site_do_not_make_findings(gov: Governance) -> None:
    """A feed wrongly lists a site of the long tail: its suspects are mostly the busiest hosts, who use
    other sites more than average hosts do — more than ten activity strata can tell (a
    stratified baseline reports one of them). Compared host by host with their own activity
    (degree-corrected), they converge on nothing; the real C&C is still found."""
    gov.write("M1", "flows", _busy_world(), "collector")
    load_reputation(gov, [("100.64.0.60", 443, "c2"), (*KNOWN_CC[0], "c2")])
    found = _run(gov)
    assert set(found) == {UNKNOWN_CC}
    ev = json.loads(str(found[UNKNOWN_CC]["evidence"]))
    assert ev["supporting_hosts"] == 12
    assert ev["expected_hosts"] < 1.0


@pytest.mark.parametrize(
    ("n_max", "e_low", "expected"),
    [
        # every pair could reach any level: all count
        ([50, 50, 50], [0.1, 0.1, 0.1], 3),
        # two hosts at most, with 0.5 expected: p >= 0.09, never below alpha / m — none count
        ([2, 2, 2, 2], [0.5, 0.5, 0.5, 0.5], 1),
        # one strong pair among hopeless ones: only it counts
        ([40, 2, 2, 2], [0.1, 0.5, 0.5, 0.5], 1),
        # could never reach min_lift (3 × 20 > 30): does not count
        ([30, 30], [20.0, 0.1], 1),
    ],
)
def test_tarone_counts_only_pairs_that_could_be_reported(
    n_max: list[int], e_low: list[float], expected: int
) -> None:
    assert tarone_tests(np.array(n_max), np.array(e_low), CorrelationParams()) == expected
