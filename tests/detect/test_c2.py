"""detect_c2: stored findings name endpoints only, never our own addresses, known ones apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.detect.c2 import C2Params, detect_c2, never_reported, run_c2
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
    # `mamori review` rejects one: the next run leaves it out and says so on stderr
    fid = next(x["finding_id"] for x in lines if (x["ip"], x["port"]) == UNKNOWN_CC)
    base = ["--config", str(conf), "--store", str(store)]
    for args, code in ((["review", fid, "--verdict", "rejected"], 0),
                       (["review", "c2-000000000000000000000000", "--verdict", "rejected"], 1),
                       (["review", "nonsense", "--verdict", "confirmed"], 1)):  # fmt: skip
        res = runner.invoke(app, [*base, *args])
        assert res.exit_code == code, res.output
    res = runner.invoke(app, [*base, "detect", "c2", "--json", "--method", "correlation",
                              "--method", "beacon"])  # fmt: skip
    again = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert {x["finding_id"] for x in again} == {x["finding_id"] for x in lines} - {fid}
    summary = _strict([x for x in res.stderr.splitlines() if x.startswith("{")][-1])
    assert (summary["rejected_suppressed"], summary["rejected_suppressed_ids"]) == (1, [fid])


def _strict(line: str) -> Any:
    def refuse(const: str) -> None:
        raise ValueError(f"not JSON: {const}")

    return json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize(
    "extra",
    [
        ["--json"],
        [],  # the table: the summary still goes to stderr, as JSON
        ["--json", "--since", "2026-11-01T10:00:00Z", "--until", "2026-11-01T16:00:00Z"],
        ["--json", "--train", "--since", "2026-11-01T10:00:00Z"],
        ["--json", "--since", "2030-01-01T00:00:00Z"],  # an empty window
    ],
)
def test_cli_summary_is_strict_json(tmp_path: Path, extra: list[str]) -> None:
    from mamori.config import load_config
    from tests.conftest import PLAN

    store = tmp_path / "store"
    cfg = load_config(overrides={"store": store}).model_copy(update={"address_plan": PLAN})
    with Governance(cfg) as gov:
        load_world(gov)
    res = CliRunner().invoke(app, ["--store", str(store), "detect", "c2", *extra])
    assert res.exit_code in (0, 1), res.output
    lines = [x for x in res.stderr.splitlines() if x.startswith("{")]
    if res.exit_code == 0:
        summary = _strict(lines[-1])
        assert set(summary) >= {"window", "findings", "methods", "special_dropped"}


def test_summary_json_has_no_nan() -> None:
    from datetime import UTC, datetime

    from mamori.cli.detect import summary_json

    text = summary_json({"rate": float("nan"), "at": datetime(2026, 1, 1, tzinfo=UTC),
                         "n": np.int64(3), "x": [float("inf"), 1.5]})  # fmt: skip
    assert _strict(text) == {"rate": None, "at": "2026-01-01T00:00:00+00:00", "n": 3,
                             "x": [None, 1.5]}  # fmt: skip


@pytest.mark.parametrize(
    ("ip", "documentation_allowed", "never"),
    [
        ("239.255.255.250", False, True),  # SSDP multicast (was reported on a home capture)
        ("224.0.0.252", True, True),  # LLMNR
        ("255.255.255.255", False, True),  # limited broadcast
        ("169.254.10.1", False, True),  # link-local
        ("240.1.2.3", False, True),  # reserved
        ("0.1.2.3", False, True),
        ("10.1.2.3", False, True),
        ("100.64.1.1", False, True),  # shared (CGNAT) space
        ("ff02::fb", False, True),
        ("fe80::1", False, True),
        ("203.0.113.200", False, True),  # documentation
        ("2001:db8::1", False, True),
        ("203.0.113.200", True, False),  # … unless a test world uses it as its Internet
        ("23.253.126.58", False, False),
        ("2a00:1450:4001::1", False, False),
        ("not-an-ip", False, False),
    ],
)
def test_never_reported(ip: str, documentation_allowed: bool, never: bool) -> None:
    assert never_reported(ip, C2Params(report_documentation=documentation_allowed)) is never


def test_documentation_ranges_dropped_by_default(tmp_path: Path) -> None:
    """Without ``report_documentation`` this world's C&C (in 203.0.113.0/24) are dropped and
    counted, never reported."""
    from tests.conftest import make_config

    with Governance(make_config(tmp_path / "store")) as gov:
        load_world(gov)
        run = run_c2(gov, actor="test", methods=("correlation", "beacon"), write=False)
    assert run.findings.num_rows == 0
    assert run.summary["special_dropped"] >= 2


@pytest.mark.parametrize(
    ("verdict", "honour", "suppressed"),
    [
        ("rejected", True, True),
        ("false-positive", True, True),
        ("confirmed", True, False),
        ("rejected", False, False),
    ],
)
def test_rejected_endpoints_are_left_out_of_later_runs(
    gov: Governance, verdict: str, honour: bool, suppressed: bool
) -> None:
    """An analyst's rejection is an allowlist entry for C&C discovery: the endpoint is left out
    of the next run, counted and named (by finding id) in the summary, and audited."""
    from mamori.detect.reviews import Reviews

    load_world(gov)
    first = run_c2(gov, actor="test", methods=("correlation", "beacon"), write=False)
    fid = next(r["finding_id"] for r in first.findings.to_pylist()
               if (r["ip"], r["port"]) == UNKNOWN_CC)  # fmt: skip
    Reviews(gov).record(fid, "M2", verdict, "analyst")
    params = C2Params.model_validate({**gov.config.detect.get("c2", {}),
                                      "honour_rejections": honour})  # fmt: skip
    again = run_c2(gov, actor="test", methods=("correlation", "beacon"), params=params)
    ids = set(again.findings.column("finding_id").to_pylist())
    assert (fid not in ids) is suppressed
    assert ids | {fid} == set(first.findings.column("finding_id").to_pylist())
    assert again.summary["rejected_suppressed"] == int(suppressed)
    assert again.summary["rejected_suppressed_ids"] == ([fid] if suppressed else [])
    audited = [json.loads(e.detail or "{}") for e in gov.audit.entries()
               if e.event == "suppressed"]  # fmt: skip
    assert audited == ([{"finding_ids": [fid], "findings": 1, "reason": "rejected by people"}]
                       if suppressed else [])  # fmt: skip
