"""Reflection victims and open reflectors from flows (M13): rate corrected for sampling, unknown
rates never taken as 1, the ISP's resolvers never reported, thresholds from [detect.reflection]."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config_network import NetworkConfig
from mamori.detect.base import Window
from mamori.detect.reflection import ReflectionDetector, ReflectionParams
from mamori.detect.registry import build
from mamori.governance import Governance
from tests.conftest import T0, make_config, table

VICTIM = "10.0.5.5"
QUIET = "10.0.5.6"  # answers from six public resolvers: an ordinary subscriber
REFLECTOR = "192.0.2.53"  # a static customer's open resolver
RESOLVER = "192.0.2.1"  # the ISP's own resolver


def rec(src: str, dst: str, sport: int, dport: int, *, at_s: float = 0, packets: int = 1,
        rate: int | None = 1000, proto: int = 17, nbytes: int = 1400) -> dict[str, Any]:  # fmt: skip
    return {
        "time_start": T0 + timedelta(seconds=at_s),
        "time_end": T0 + timedelta(seconds=at_s + 1),
        "src_addr": src,
        "dst_addr": dst,
        "src_port": sport,
        "dst_port": dport,
        "protocol": proto,
        "packets": packets,
        "bytes": nbytes * packets,
        "sampling_rate": rate,
    }


def _flows(gov: Governance) -> None:
    rows = []
    # 30 NTP/DNS reflectors hit the victim over 61 s: 90 sampled packets x 1000 / 61 s
    for i in range(30):
        port = 123 if i % 2 else 53
        rows.append(rec(f"198.18.0.{i + 1}", VICTIM, port, 4444, at_s=2 * i, packets=3))
    rows.append(rec("198.18.0.200", VICTIM, 53, 4444, at_s=60, rate=None))  # rate unknown
    public = ["8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "208.67.222.222"]
    rows += [rec(a, QUIET, 53, 40000 + i, at_s=i) for i, a in enumerate(public)]
    # the open reflector answers 25 outside hosts from port 53; the ISP's resolver 40
    rows += [rec(REFLECTOR, f"203.0.113.{i}", 53, 5000 + i, at_s=i) for i in range(25)]
    rows += [rec(RESOLVER, f"203.0.113.{i}", 53, 6000 + i, at_s=i) for i in range(40)]
    # TCP from port 53 is not reflection
    rows += [rec(f"198.18.1.{i}", QUIET, 53, 4000, proto=6, at_s=i) for i in range(1, 40)]
    gov.write("M1", "flows", table(rows), "collector")


@pytest.fixture
def rgov(tmp_path: Path) -> Iterator[Governance]:
    cfg = make_config(tmp_path / "store", network=NetworkConfig(resolvers=(f"{RESOLVER}/32",)))
    g = Governance(cfg)
    _flows(g)
    yield g
    g.close()


def test_victim_and_open_reflector(rgov: Governance) -> None:
    run = ReflectionDetector().run(rgov, Window(), actor="t")
    found = {(f["method"], f["ip"], f["port"]): f for f in run.findings.to_pylist()}
    assert set(found) == {("victim", VICTIM, None), ("open-reflector", REFLECTOR, 53)}
    v = json.loads(found[("victim", VICTIM, None)]["evidence"])
    assert v["sources"] == 31 and v["records"] == 31 and v["records_unknown_rate"] == 1
    assert v["est_pps"] == pytest.approx(90 * 1000 / 61, abs=0.1)  # unknown rate adds nothing
    assert v["source_ports"] == [53, 123]
    r = found[("open-reflector", REFLECTOR, 53)]
    assert json.loads(r["evidence"])["clients"] == 25
    assert r["kind"] == "reflection" and r["measure"] == "M13" and r["protocol"] == "udp"
    assert run.summary["resolvers_skipped"] == 1  # the ISP's resolver answered 40, not reported
    stored = rgov.open("M13", "findings", None, "t").arrow().to_pylist()
    assert sorted((f["kind"], f["measure"]) for f in stored) == [
        ("reflection", "M13"),
        ("reflection", "M13"),
        ("vulnerable", "M9"),
    ]
    # the open reflector's owner is alerted like a vulnerable device's (M9)
    [owner] = [f for f in stored if f["kind"] == "vulnerable"]
    assert owner["ip"] == REFLECTOR and owner["port"] == 53
    assert json.loads(owner["evidence"])["label"] == "open-reflector:dns"


def test_thresholds_are_parameters(rgov: Governance) -> None:
    strict = ReflectionDetector(ReflectionParams(victim_min_pps=1500), write=False)
    methods = [f["method"] for f in strict.run(rgov, Window(), actor="t").findings.to_pylist()]
    assert methods == ["open-reflector"]
    loose = build(
        "reflection",
        {"reflection": {"victim_min_sources": 5, "victim_min_pps": 0, "reflector_min_clients": 30}},
        write=False,
    )
    got = {
        (f["method"], f["ip"]) for f in loose.run(rgov, Window(), actor="t").findings.to_pylist()
    }
    assert got == {("victim", VICTIM), ("victim", QUIET)}  # TCP from port 53 never counted


def test_sampling_rate_scales_the_estimate(tmp_path: Path) -> None:
    with Governance(make_config(tmp_path / "s")) as gov:
        rows = [rec(f"198.18.0.{i + 1}", VICTIM, 53, 4444, at_s=2 * i, packets=2, rate=10)
                for i in range(30)]  # fmt: skip
        gov.write("M1", "flows", table(rows), "collector")
        # 60 sampled packets x 10 over the 59 s hit = 10.2 pps: under the 1,000 pps threshold
        assert ReflectionDetector(write=False).run(gov, Window(), actor="t").findings.num_rows == 0
        low = ReflectionDetector(ReflectionParams(victim_min_pps=10), write=False)
        [f] = low.run(gov, Window(), actor="t").findings.to_pylist()
        assert json.loads(f["evidence"])["est_pps"] == pytest.approx(600 / 59, abs=0.1)


def test_cli(rgov: Governance, tmp_path: Path) -> None:
    cfg = tmp_path / "mamori.toml"
    cfg.write_text(
        '[[address_plan]]\nname = "home"\nkind = "dynamic"\nprefixes = ["10.0.0.0/16"]\n'
        '[[address_plan]]\nname = "biz"\nkind = "static"\nprefixes = ["192.0.2.0/24"]\n'
        f'[network]\nresolvers = ["{RESOLVER}/32"]\n[detect.reflection]\nreflector_min_clients = 26\n'
    )
    r = CliRunner().invoke(
        app, ["--store", str(rgov.config.store), "--config", str(cfg), "detect", "reflection",
              "--dry-run"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert VICTIM in r.stdout and REFLECTOR not in r.stdout  # 25 clients < 26


VICTIM_OUT = "203.0.113.200"  # the spoofed source of the queries: the reflector's victim


@pytest.mark.parametrize(
    ("case", "answers", "answer_bytes", "queries", "query_bytes", "found"),
    [
        # abused: 60 sampled answers of 1,400 B in 60 s at 1/1,000 (1,000/s), queries of 64 B
        ("abused", 30, 1400, 20, 64, True),
        # an authoritative server answering one busy resolver: answers twice its queries
        ("ordinary server", 30, 200, 30, 100, False),
        # one sampled answer says nothing of a rate (and its query was not sampled)
        ("one sample", 1, 1400, 0, 64, False),
        # amplified but slow: 10 sampled answers over an hour at 1/10 (0.03/s)
        ("slow", 5, 1400, 1, 64, False),
    ],
)
def test_abused_reflector_answering_few_hosts(
    tmp_path: Path, case: str, answers: int, answer_bytes: int, queries: int, query_bytes: int,
    found: bool,
) -> None:  # fmt: skip
    host = "192.0.2.77"
    rate, span = (10, 3600.0) if case == "slow" else (1000, 60.0)
    rows = [rec(host, VICTIM_OUT, 53, 4444, at_s=span * i / max(answers, 1), packets=2,
                nbytes=answer_bytes, rate=rate) for i in range(answers)]  # fmt: skip
    rows += [rec(VICTIM_OUT, host, 4444, 53, at_s=span * i / max(queries, 1), nbytes=query_bytes,
                 rate=rate) for i in range(queries)]  # fmt: skip
    with Governance(make_config(tmp_path / "store")) as gov:
        gov.write("M1", "flows", table(rows), "collector")
        run = ReflectionDetector().run(gov, Window(), actor="t")
    got = [f for f in run.findings.to_pylist() if f["method"] == "open-reflector"]
    assert bool(got) == found, case
    if found:
        ev = json.loads(got[0]["evidence"])
        assert ev["clients"] == 1 and ev["abused_against"] == 1
        assert ev["amplification"] == pytest.approx(60 * 1400 / (20 * 64), rel=0.01)
