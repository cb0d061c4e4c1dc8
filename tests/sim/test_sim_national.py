"""The national scenario's sampled generator, randomised worlds and the evidence ceiling.

Tiny parameterisations only (hundreds of subscribers, two days): the full scenario's timing is a
benchmark (bench/README.md), not a test."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mamori.sim import scenario_config, score_c2, simulate
from mamori.sim.config import with_sampling
from mamori.sim.national import _Out
from mamori.sim.randomise import randomise
from mamori.sim.traffic.core import Gen
from mamori.sim.world import build_world


def test_national_preset_is_national() -> None:
    cfg = scenario_config("national")
    assert cfg.subscribers >= 100_000 and cfg.hours >= 7 * 24
    assert cfg.generator == "sampled" and cfg.randomise
    assert {r.sampling for r in cfg.routers} == {1000}
    assert {r.sampling for r in scenario_config("national", sampling=10_000).routers} == {10_000}


@pytest.mark.parametrize(
    ("rate", "period_s", "packets"),
    [(1000, 60.0, 2), (1000, 300.0, 10), (10_000, 30.0, 4), (100, 900.0, 1)],
)
def test_periodic_thinning_keeps_the_expected_flows(
    rate: int, period_s: float, packets: int
) -> None:
    """Sampled flows of a periodic stream: Poisson with mean flows × P(a flow keeps a packet)."""
    cfg = with_sampling(scenario_config("national", subscribers=300, hours=48.0), rate)
    world = build_world(cfg, 0)
    o = _Out(Gen(world, 0), rate)
    subs = np.arange(300, dtype=np.int32)
    since = np.full(subs.size, world.t0)
    until = np.full(subs.size, world.t1)
    dirs, n_flows = o.stream("pc-cc", subs, since, until, period_s, 0.1, (packets, 100), (1, 60))
    q = 1.0 - (1.0 - 1.0 / rate) ** packets
    expected = float(n_flows.sum()) * q
    got = dirs[0][1].size
    assert abs(got - expected) <= 5 * math.sqrt(expected) + 1
    t = dirs[0][1]
    assert (t >= world.t0).all() and (t < world.t1).all()


@pytest.fixture(scope="module")
def tiny_national(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    out = {}
    for seed in (1, 2):
        d = tmp_path_factory.mktemp(f"national{seed}")
        simulate("national", d, seed=seed, subscribers=400, hours=48.0)
        out[seed] = json.loads((d / "truth.json").read_text(encoding="utf-8"))
        out[seed]["_summary"] = json.loads((d / "summary.json").read_text(encoding="utf-8"))
    return out


def test_each_seed_is_another_world(tiny_national: dict[int, dict[str, Any]]) -> None:
    a, b = (tiny_national[s]["world_parameters"] for s in (1, 2))
    assert a["scenario"]["share_cgnat"] != b["scenario"]["share_cgnat"]
    fam_a = {f["family"]: f["period_s"] for f in tiny_national[1]["families"]}
    fam_b = {f["family"]: f["period_s"] for f in tiny_national[2]["families"]}
    assert fam_a.keys() & fam_b.keys() and fam_a != fam_b
    roles = {t["role"] for t in tiny_national[1]["benign_traps"]}
    assert roles >= {"iot-cloud", "push", "messaging", "game", "vpn", "nas-relay", "mail-idle",
                     "ip-check", "ntp", "update", "cdn-poll"}  # fmt: skip


def test_records_are_the_sampled_exports(tiny_national: dict[int, dict[str, Any]]) -> None:
    for truth in tiny_national.values():
        routers = truth["_summary"]["routers"]
        assert all(r["sampling"] == 1000 for r in routers)
        # the generator's records are what the routers export, one for one
        assert sum(r["records"] for r in routers) == truth["flows"]["generated"]


def test_evidence_ceiling_in_the_truth(tiny_national: dict[int, dict[str, Any]]) -> None:
    for truth in tiny_national.values():
        cc = [e for e in truth["endpoints"] if e["role"] == "cc"]
        assert cc
        for e in cc:
            assert 0 <= e["sampled_hosts"] <= e["sampled_records"]
            assert e["sampled_subscribers"] <= e["sampled_records"]
            if e["contacts"] == 0:
                assert e["sampled_records"] == 0
        # with hundreds of bots beaconing for two days, some C&C are seen at 1/1,000
        assert any(e["sampled_hosts"] > 0 for e in cc)


def test_sampled_generator_refuses_dense_rates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too dense"):
        simulate("national", tmp_path, seed=0, subscribers=100, hours=2.0, sampling=10)


def test_randomise_draws_from_the_seed() -> None:
    base = scenario_config("demo")
    a1, d1 = randomise(base, 1)
    a2, _ = randomise(base, 1)
    b, _ = randomise(base, 2)
    assert a1 == a2 and a1 != b
    assert 0.05 <= a1.share_cgnat <= 0.6
    assert a1.share_cgnat + a1.share_static + a1.share_ipoe <= 1.0
    assert d1["pc"]["beacon_s"] == a1.pc.beacon_s


def _truth(hosts: list[int]) -> dict[str, Any]:
    eps = [{"ip": f"198.18.0.{i + 1}", "port": 443, "role": "cc", "contacts": 10,
            "sampled_hosts": h} for i, h in enumerate(hosts)]  # fmt: skip
    return {
        "window": {"from": "2026-11-02T00:00:00Z", "until": "2026-11-09T00:00:00Z"},
        "endpoints": eps,
        "feeds": {"unlisted": [{"ip": e["ip"], "port": 443} for e in eps]},
    }


@pytest.mark.parametrize(
    ("min_hosts", "observable", "recall_observable"),
    [(1, 2, 0.5), (2, 1, 1.0), (10, 0, 0.0)],
)
def test_recall_against_the_observable(
    min_hosts: int, observable: int, recall_observable: float
) -> None:
    truth = _truth([0, 1, 5])  # nobody, one host and five hosts sampled at each C&C
    found = [{"ip": "198.18.0.3", "port": 443, "score": 0.9}]
    sc = score_c2(found, truth, observable_min_hosts=min_hosts)
    assert sc.unknown_total == 3 and sc.recall_unknown == pytest.approx(1 / 3, abs=1e-6)
    assert sc.observable_total == observable
    assert sc.recall_observable == pytest.approx(recall_observable)
    assert sc.sampled_hosts == {"198.18.0.1:443": 0, "198.18.0.2:443": 1, "198.18.0.3:443": 5}
