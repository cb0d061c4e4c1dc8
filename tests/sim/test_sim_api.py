from __future__ import annotations

import ast
import json
from pathlib import Path

import mamori.sim
from mamori.sim import SCENARIOS, SimSummary, scenario_config


def test_public_surface_is_pinned() -> None:
    assert sorted(mamori.sim.__all__) == [
        "C2Score", "LeadTime", "RouterSpec", "RouterSummary", "SCENARIOS", "ScenarioConfig",
        "Score", "SimSummary", "lead_time", "load_findings", "read_pcap", "replay",
        "scenario_config", "score", "score_c2", "score_files", "simulate",
    ]  # fmt: skip


def test_scenarios_named_and_overridable() -> None:
    assert {"tiny", "small", "demo", "large"} <= set(SCENARIOS)
    cfg = scenario_config("demo", subscribers=5000, hours=None)
    assert cfg.subscribers == 5000 and cfg.hours == 6.0


def test_simulator_is_a_client_imports_nothing_else_from_mamori() -> None:
    root = Path(mamori.sim.__file__).parent
    for f in root.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if n.startswith("mamori"):
                    assert n.startswith("mamori.sim"), f"{f.name} imports {n}"


def test_summary_lists_existing_files(tiny: SimSummary) -> None:
    out = Path(tiny.out)
    for rel in tiny.files.values():
        assert (out / rel).is_file(), rel
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["counts"] == tiny.counts
    assert tiny.counts["flow_records"] > 0 and tiny.counts["sflow_samples"] > 0


def test_only_documentation_and_private_addresses(tiny: SimSummary) -> None:
    truth = json.loads((Path(tiny.out) / "truth.json").read_text())
    for e in truth["endpoints"]:
        assert e["ip"].startswith(("192.0.2.", "198.51.100.", "203.0.113.")), e
        assert e["domain"] is None or e["domain"].endswith(".invalid")
    subs = (Path(tiny.out) / tiny.files["subscribers"]).read_text()
    assert "@" in subs and all(
        line.split(",")[3].endswith(".example.jp") for line in subs.splitlines()[1:]
    )


def test_presets_survive_the_smallest_world(tmp_path: Path) -> None:
    from mamori.sim import simulate

    s = simulate("demo", tmp_path, subscribers=10, hours=0.25)
    assert s.subscribers == 10 and s.counts["flows_generated"] > 0
