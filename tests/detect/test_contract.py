"""The detector contract: every detector is found by name, takes its thresholds from
``[detect.NAME]``, reads only through governance (each entry point leaves its audit entry), and
its parameters change what it finds."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.detect.base import DetectorParams, DetectorRun, Window
from mamori.detect.c2 import run_c2
from mamori.detect.flowview import open_oriented
from mamori.detect.registry import DETECTORS, DetectorConfigError, all_params, build, params_for
from mamori.detect.reputation_match import match_reputation
from mamori.detect.seeds import open_seeds
from mamori.governance import Governance
from mamori.ingest.reputation import current_reputation_grant
from tests.conftest import HOUR, T0, flow, table
from tests.detect.test_reputation_match import _rep

MIN = timedelta(minutes=1)
CDN = "203.0.113.80"
CC = "203.0.113.66"
SUBS = [f"10.0.1.{i}" for i in range(1, 7)]
PLAN_TOML = """
[[address_plan]]
name = "home-dynamic"
kind = "dynamic"
prefixes = ["10.0.0.0/16"]
"""


def _world(gov: Governance) -> None:
    """Six subscribers all reach a listed CDN (a feed's mistake); one also reaches a C&C."""
    gov.write_registry(
        "allocations",
        table(
            [
                {"start": T0 - HOUR, "end": None, "addr": a, "subscriber_id": f"S{i}"}
                for i, a in enumerate(SUBS)
            ]
        ),
        "test",
        source="csv",
    )
    gov.write_registry(
        "reputation", table([_rep(CDN, port=443), _rep(CC, port=443)]), "test", source="t"
    )
    rows = [flow(a, CDN, T0 + i * MIN, sport=40000 + i) for i, a in enumerate(SUBS)]
    rows += [flow(SUBS[0], CC, T0 + i * 10 * MIN, sport=41000 + i) for i in range(12)]
    gov.write("M1", "flows", table(rows), "collector")


def _accesses(gov: Governance, after: int) -> list[tuple[str | None, str | None]]:
    return [
        (e.measure, e.dataset) for e in gov.audit.entries() if e.seq > after and e.event == "access"
    ]


def _last_seq(gov: Governance) -> int:
    return max((e.seq for e in gov.audit.entries()), default=0)


def test_every_detector_declares_the_contract() -> None:
    assert {"c2", "infected"} <= set(DETECTORS)
    for name, cls in DETECTORS.items():
        assert cls.name == name
        assert cls.measure in {f"M{i}" for i in range(1, 15)}
        assert issubclass(cls.Params, DetectorParams)
        # defaults exist for every parameter: a bare section is valid
        assert isinstance(params_for({}, name), cls.Params)


# (entry point, measure it must read under, datasets it must have opened)
ENTRY_POINTS: list[tuple[str, Callable[[Governance], Any], str, set[str]]] = [
    (
        "C2Detector.run",
        lambda g: build("c2", {}, write=False).run(g, Window(), actor="t"),
        "M2",
        {"flows", "reputation"},
    ),
    (
        "InfectedDetector.run",
        lambda g: build("infected", {}, write=False).run(g, Window(), actor="t"),
        "M4",
        {"flows", "dns_queries", "reputation"},
    ),
    (
        "DdosDetector.run",
        lambda g: build("ddos", {}, write=False).run(g, Window(), actor="t"),
        "M13",
        {"flows"},
    ),
    (
        "ReflectionDetector.run",
        lambda g: build("reflection", {}, write=False).run(g, Window(), actor="t"),
        "M13",
        {"flows"},
    ),
    (
        "SpoofingDetector.run",
        lambda g: build("spoofing", {}, write=False).run(g, Window(), actor="t"),
        "M13",
        {"flows"},
    ),
    (
        "BruteForceDetector.run",
        lambda g: build("smtp-brute-force", {}, write=False).run(g, Window(), actor="t"),
        "M12",
        {"auth_events"},
    ),
    (
        "CompromisedDetector.run",
        lambda g: build("smtp-compromised", {}, write=False).run(g, Window(), actor="t"),
        "M11",
        {"auth_events", "mail_queue"},
    ),
    ("run_c2", lambda g: run_c2(g, actor="t", write=False), "M2", {"flows", "reputation"}),
    (
        "match_reputation",
        lambda g: match_reputation(g, actor="t", write=False),
        "M4",
        {"flows", "dns_queries", "reputation"},
    ),
    ("open_oriented", lambda g: open_oriented(g, "t"), "M2", {"flows"}),
    ("open_seeds", lambda g: open_seeds(g, "t", g.sandbox()), "M2", {"reputation"}),
    (
        "current_reputation_grant",
        lambda g: current_reputation_grant(g, "M4", "t"),
        "M4",
        {"reputation"},
    ),
]


@pytest.mark.parametrize(
    ("entry", "call", "measure", "datasets"), ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS]
)
def test_each_entry_point_reads_through_governance_and_is_audited(
    gov: Governance,
    entry: str,
    call: Callable[[Governance], Any],
    measure: str,
    datasets: set[str],
) -> None:
    _world(gov)
    seq = _last_seq(gov)
    result = call(gov)
    if isinstance(result, DetectorRun):
        assert result.findings.schema.names[:2] == ["detected", "finding_id"]
    seen = _accesses(gov, seq)
    assert {d for m, d in seen if m == measure} == datasets, f"{entry}: {seen}"
    # nothing read under another measure
    assert {m for m, _ in seen} == {measure}


def test_every_registered_detector_is_walked() -> None:
    walked = {e[0].split(".")[0] for e in ENTRY_POINTS}
    assert {cls.__name__ for cls in DETECTORS.values()} <= walked


def _cli(tmp_path: Path, toml: str, *args: str) -> Any:
    cfg = tmp_path / "mamori.toml"
    cfg.write_text(toml + PLAN_TOML)
    return CliRunner().invoke(
        app, ["--store", str(tmp_path / "store"), "--config", str(cfg), *args]
    )


def test_config_check_prints_every_detectors_parameters(tmp_path: Path) -> None:
    r = _cli(tmp_path, "[detect.c2]\nbeacon_min_hosts = 7\n[detect.c2.beacon]\nthreshold = 0.9\n",
             "config", "check", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert set(data["detect"]) == set(DETECTORS)
    c2 = data["detect"]["c2"]
    assert c2["measure"] == "M2"
    assert c2["params"]["beacon_min_hosts"] == 7
    assert c2["params"]["beacon"]["threshold"] == 0.9
    assert c2["params"]["beacon"]["min_connections"] == 6  # default shown
    assert data["detect"]["infected"]["params"]["popular_share"] == 0.1
    # the table form names them too
    r = _cli(tmp_path, "", "config", "check")
    assert "detect.infected.params.popular_min_addresses = 20" in r.stdout


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[detect.c2]\nbeacon_min_host = 7\n", "detect.c2.beacon_min_host"),
        ("[detect.c2.beacon]\nthreshold = 'high'\n", "detect.c2.beacon.threshold"),
        ("[detect.infected]\npopular_share = 2\n", "detect.infected.popular_share"),
        ("[detect.c3]\nx = 1\n", "no such detector"),
    ],
)
def test_invalid_detector_section_is_refused_clearly(
    tmp_path: Path, toml: str, message: str
) -> None:
    r = _cli(tmp_path, toml, "config", "check")
    assert r.exit_code == 2
    assert message in r.output
    with pytest.raises(DetectorConfigError, match=message.split(".")[-1]):
        all_params(_parse(toml)["detect"])


def _parse(toml: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(toml)


def test_a_parameter_in_mamori_toml_changes_what_the_detector_finds(tmp_path: Path) -> None:
    from tests.conftest import make_config

    with Governance(make_config(tmp_path / "store")) as gov:
        _world(gov)
    base = ["detect", "infected", "--json", "--dry-run"]
    # defaults: the guard needs 20 addresses, so all six CDN visitors are findings
    r = _cli(tmp_path, "", *base)
    assert r.exit_code == 0, r.output
    assert len([json.loads(line) for line in r.stdout.splitlines() if line]) == 6
    # [detect.infected] lowers the guard: the CDN entry is held back, the C&C still found
    r = _cli(tmp_path, "[detect.infected]\npopular_min_addresses = 3\npopular_share = 0.5\n", *base)
    assert r.exit_code == 0, r.output
    found = [json.loads(line) for line in r.stdout.splitlines() if line]
    assert [(f["ip"], f["evidence"]["indicators"]) for f in found] == [(SUBS[0], [f"{CC}:443"])]


def test_c2_summary_is_valid_json(tmp_path: Path) -> None:
    from tests.conftest import make_config

    with Governance(make_config(tmp_path / "store")) as gov:
        _world(gov)
    r = _cli(tmp_path, "", "detect", "c2", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert summary["window"] == [None, None]
    assert summary["methods"] == ["correlation", "learned", "beacon"]
    assert "records_unknown_rate" in summary


def test_spark_engine_is_shown_by_config_check(tmp_path: Path) -> None:
    # no longer refused: config check says what will scan the store (tests/engines has the rest)
    r = _cli(tmp_path, 'engine = "spark"\n[spark]\nmaster = "local[2]"\n', "config", "check")
    assert r.exit_code == 0, r.output
    assert "Apache Spark, master local[2]" in r.output
