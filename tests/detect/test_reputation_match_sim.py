"""M4 matching end to end on the simulated ISP (scenario ``tiny``), through the command line:
collect the routers' exports, load the resolver logs and the feeds, ``mamori detect infected
--json``, ``mamori eval infected``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config import load_config
from mamori.governance import Governance
from mamori.ingest.collector import Collector
from mamori.sim import score, simulate

pytestmark = pytest.mark.slow  # detection on a simulated ISP

runner = CliRunner()
_UNBOUND = re.compile(r"^\[(\d+)\] unbound\[[^\]]*\] info: (\S+) (\S+?)\.? (\S+) IN$")
_KIND = {"cgnat-public": "cgnat", "cgnat-inside": "dynamic"}


def _config(sim: Path, store: Path) -> Path:
    plan = json.loads((sim / "world" / "address_plan.json").read_text())
    lines = [f'store = "{store}"', ""]
    for p in plan["pools"]:
        lines += [
            "[[address_plan]]",
            f'name = "{p["name"]}"',
            f'kind = "{_KIND.get(p["kind"], p["kind"])}"',
            f'prefixes = ["{p["prefix"]}"]',
            "",
        ]
    # no allocation logs are loaded here (another stage), so unattributed addresses are kept
    lines += ["[governance]", 'unattributed = "include"', ""]
    lines += ["[detect.infected]", f"cgnat_port_block = {plan['cgnat_block_size']}", ""]
    path = store.parent / "mamori.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def isp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("m4sim")
    sim = base / "sim"
    simulate("tiny", sim, seed=7)
    cfg_file = _config(sim, base / "store")
    with Governance(load_config(cfg_file)) as gov:
        Collector(gov).replay_pcap(sim / "flows" / "exports.pcap")
        rows = []
        for log in sorted((sim / "dns").glob("unbound-*.log")):
            for line in log.read_text().splitlines():
                m = _UNBOUND.match(line)
                assert m, line
                rows.append(
                    {
                        "ts": datetime.fromtimestamp(int(m.group(1)), UTC),
                        "client_addr": m.group(2),
                        "qname": m.group(3).lower(),
                    }
                )
        gov.write("M7", "dns_queries", pa.Table.from_pylist(rows), "test")
    for name in ("feodo-ipblocklist.csv", "urlhaus.csv", "threatfox.csv", "stix-bundle.json"):
        result = runner.invoke(
            app, ["--config", str(cfg_file), "ingest", "reputation", str(sim / "feeds" / name)]
        )
        assert result.exit_code == 0, result.output
    return sim, cfg_file


def test_detect_infected_cli_and_eval(isp: tuple[Path, Path], tmp_path: Path) -> None:
    sim, cfg_file = isp
    result = runner.invoke(app, ["--config", str(cfg_file), "detect", "infected", "--json"])
    assert result.exit_code == 0, result.output
    findings = [json.loads(line) for line in result.stdout.splitlines()]
    assert findings
    for f in findings:
        assert {"ip", "port", "proto", "score", "method", "first_seen", "last_seen"} <= set(f)
        assert (f["method"], f["measure"], f["kind"]) == ("reputation", "M4", "infected")
    truth = json.loads((sim / "truth.json").read_text())
    s = score("infected", findings, truth)
    # Infected subscribers whose C&C server a feed lists (and lists by the end of the window)
    # must be found; what the feeds never list cannot be.
    listed_cc = {
        (e["ip"], e["port"])
        for e in truth["endpoints"]
        if e["role"] == "cc"
        and (e["ip"], e["port"]) not in {(u["ip"], u["port"]) for u in truth["feeds"]["unlisted"]}
    }
    assert listed_cc
    assert s.recall >= 0.5, s
    # every false positive rests only on an entry the feeds list by mistake (a benign service)
    wrong = {f"{w['ip']}:{w['port']}" for w in truth["feeds"]["wrong_entries"]}
    wrong |= {w["domain"] for w in truth["feeds"]["wrong_entries"] if w.get("domain")}
    by_key = {f"{f['ip']}:{f['port']}": f for f in findings}
    for key in s.spurious:
        assert set(by_key[key]["evidence"]["indicators"]) <= wrong, by_key[key]
    # the eval command reads the same output
    out = tmp_path / "findings.jsonl"
    out.write_text(result.stdout)
    ev = runner.invoke(
        app, ["eval", "infected", "--findings", str(out), "--truth", str(sim / "truth.json")]
    )
    assert ev.exit_code == 0 and "precision" in ev.output
    # the table for people; --dry-run stores nothing
    table = runner.invoke(app, ["--config", str(cfg_file), "detect", "infected", "--dry-run"])
    assert table.exit_code == 0, table.output
    assert f"{len(findings)} findings from" in table.output
