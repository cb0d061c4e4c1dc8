"""detect_c2: stored findings name endpoints only, never our own addresses, known ones apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.detect.c2 import detect_c2, run_c2
from mamori.governance import Governance
from tests.detect.conftest import BEACON_EP, HOSTS, KNOWN_CC, OWN_SERVER, UNKNOWN_CC, load_world

pytestmark = pytest.mark.slow  # detection on a simulated ISP


def test_findings_stored_under_m2(gov: Governance) -> None:
    load_world(gov)
    t = detect_c2(gov, actor="test", methods=("correlation", "beacon"))
    found = {(r["ip"], r["port"]) for r in t.to_pylist()}
    assert {UNKNOWN_CC, BEACON_EP} <= found
    stored = gov.open("M2", "findings", None, "test").arrow().to_pylist()
    assert {(r["ip"], r["port"]) for r in stored} == found
    assert all(r["kind"] == "c2" and r["measure"] == "M2" for r in stored)
    assert all(r["score"] is not None and 0 <= r["score"] <= 1 for r in stored)


@pytest.mark.parametrize("include_known", [False, True])
def test_findings_never_name_internal_hosts(gov: Governance, include_known: bool) -> None:
    load_world(gov)
    run = run_c2(gov, actor="test", methods=("correlation", "beacon"),
                 include_known=include_known, write=False)  # fmt: skip
    text = json.dumps(run.findings.to_pylist(), default=str)
    assert not any(f'"{h}"' in text for h in HOSTS)
    assert OWN_SERVER[0] not in text


def test_known_endpoints_left_out_or_marked(gov: Governance) -> None:
    load_world(gov)
    plain = run_c2(gov, actor="test", methods=("correlation",), write=False)
    assert not {(r["ip"], r["port"]) for r in plain.findings.to_pylist()} & set(KNOWN_CC)
    assert plain.summary["known_endpoints_seen"] == len(KNOWN_CC)
    marked = run_c2(gov, actor="test", methods=("correlation",), include_known=True, write=False)
    known = [r for r in marked.findings.to_pylist() if (r["ip"], r["port"]) in set(KNOWN_CC)]
    assert len(known) == len(KNOWN_CC)
    assert all(json.loads(r["evidence"])["known"] is True for r in known)


def test_unknown_method_refused(gov: Governance) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        run_c2(gov, actor="test", methods=("magic",))


def test_cli_json_lines(tmp_path: Path) -> None:
    from mamori.config import load_config
    from tests.conftest import PLAN

    store = tmp_path / "store"
    cfg = load_config(overrides={"store": store}).model_copy(update={"address_plan": PLAN})
    with Governance(cfg) as gov:
        load_world(gov)
    conf = tmp_path / "mamori.toml"
    conf.write_text(
        "".join(
            f'[[address_plan]]\nname = "{p.name}"\nkind = "{p.kind}"\n'
            f"prefixes = [{', '.join(repr(str(n)) for n in p.prefixes)}]\n"
            for p in PLAN
        ).replace("'", '"')
        + "[detect.c2]\nreport_documentation = true\n"
    )
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["--config", str(conf), "--store", str(store), "detect", "c2", "--json",
         "--method", "correlation", "--method", "beacon"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert {(x["ip"], x["port"]) for x in lines} >= {UNKNOWN_CC, BEACON_EP}
    assert all(x["kind"] == "c2" and x["measure"] == "M2" for x in lines)
    assert all(isinstance(x["evidence"], dict) for x in lines)
    res = runner.invoke(app, ["--config", str(conf), "--store", str(store), "detect", "c2",
                              "--method", "learned"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "no model" in res.stdout
