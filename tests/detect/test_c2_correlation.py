"""Correlation discovery: a planted C&C among popular services is found; the popular ones are not."""

from __future__ import annotations

import json

import pytest

from mamori.detect.c2_correlation import correlate
from mamori.detect.flowview import open_oriented
from mamori.detect.seeds import open_seeds
from mamori.governance import Governance
from tests.detect.conftest import (
    BOTS,
    CDNS,
    NTP,
    OWN_SERVER,
    RARE_SITE,
    RESOLVER,
    UNKNOWN_CC,
    load_reputation,
    load_world,
    synthetic_flows,
)


def _run(gov: Governance) -> dict[tuple[str, int], dict[str, object]]:
    view = open_oriented(gov, "test")
    seeds = open_seeds(gov, "test", view.relation)
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
