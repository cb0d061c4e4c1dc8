"""`mamori status` reports what the store and the stages' records say, and exits 1 exactly when
something needs a person: a failed or overdue stage, a configured collector that is not running,
data past its retention (purge overdue), a broken audit chain."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config import load_config
from mamori.governance import Governance
from mamori.runs import STAGES
from tests.conftest import flow, table

runner = CliRunner()

TOML = """
store = "{store}"
[[address_plan]]
name = "home"
kind = "dynamic"
prefixes = ["10.0.0.0/16"]
[retention]
flows = 7
{extra}
"""


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "mamori.toml"
    path.write_text(TOML.format(store=tmp_path / "store", extra=extra))
    return path


def _status(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    r = runner.invoke(app, ["--config", str(config), "status", "--json", *args])
    assert r.exit_code in (0, 1), r.output
    assert r.stdout, r.output
    return r.exit_code, json.loads(r.stdout)


def _write_flows(config: Path, at: datetime) -> None:
    with Governance(load_config(config)) as gov:
        at = at.replace(microsecond=0)  # flows keep milliseconds
        gov.write("M1", "flows", table([flow("10.0.0.1", "203.0.113.1", at)]), "test")


def test_fresh_store_shows_every_stage_and_needs_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path)
    code, st = _status(config)
    assert code == 0 and st["needs_attention"] is False and st["attention"] == []
    assert [s["stage"] for s in st["stages"]] == list(STAGES)
    assert {d["dataset"] for d in st["datasets"]} >= {"flows", "allocations", "findings"}
    assert st["audit"]["ok"] is True
    # the table form shows the same
    r = runner.invoke(app, ["--config", str(config), "status"])
    assert r.exit_code == 0, r.output
    assert "nothing needs attention" in r.output
    for stage in STAGES:
        assert stage in r.output


def test_data_past_retention_is_purge_overdue_until_purged(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _write_flows(config, datetime.now(UTC) - timedelta(days=1))
    code, st = _status(config)
    assert code == 0
    flows = next(d for d in st["datasets"] if d["dataset"] == "flows")
    assert flows["partitions"] == 1 and flows["bytes"] > 0 and not flows["overdue"]

    _write_flows(config, datetime.now(UTC) - timedelta(days=9))  # retention is 7 days
    code, st = _status(config)
    assert code == 1
    assert any(a.startswith("purge overdue: flows") for a in st["attention"]), st["attention"]

    r = runner.invoke(app, ["--config", str(config), "purge"])
    assert r.exit_code == 0, r.output
    code, st = _status(config)
    assert code == 0, st["attention"]
    purge = next(s for s in st["stages"] if s["stage"] == "purge")
    assert purge["state"] == "ok" and purge["last_outcome"] == "ok"
    assert purge["counts"] == {"partitions_deleted": 1, "rows_deleted": 1}


def test_a_purge_not_run_for_longer_than_its_schedule_allows_is_overdue(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert runner.invoke(app, ["--config", str(config), "purge"]).exit_code == 0
    code, _ = _status(config)
    assert code == 0
    # default [schedule.purge] overdue_after_hours = 36
    code, st = _status(config, "--now", (datetime.now(UTC) + timedelta(hours=37)).isoformat())
    assert code == 1
    assert any(a.startswith("purge: OVERDUE") for a in st["attention"]), st["attention"]
    code, _ = _status(config, "--now", (datetime.now(UTC) + timedelta(hours=30)).isoformat())
    assert code == 0


def test_a_failed_run_needs_attention_until_one_succeeds(tmp_path: Path) -> None:
    config = _config(tmp_path)
    r = runner.invoke(
        app, ["--config", str(config), "report", "transparency", "--period", "2026-13"]
    )
    assert r.exit_code == 2
    code, st = _status(config)
    assert code == 1
    tr = next(s for s in st["stages"] if s["stage"] == "transparency")
    assert tr["state"] == "attention" and tr["last_outcome"] == "failed"
    assert any("transparency: last run FAILED" in a for a in st["attention"])

    out = tmp_path / "reports" / "transparency-{period}.json"
    r = runner.invoke(
        app,
        [
            *("--config", str(config), "report", "transparency"),
            *("--period", "previous", "--json", "--out", str(out)),
        ],
    )
    assert r.exit_code == 0, r.output
    first = datetime.now(UTC).replace(day=1)
    written = tmp_path / "reports" / f"transparency-{first - timedelta(days=1):%Y-%m}.json"
    assert json.loads(written.read_text())["period"] == f"{first - timedelta(days=1):%Y-%m}"
    code, st = _status(config)
    assert code == 0, st["attention"]


def test_dry_runs_are_not_runs(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert runner.invoke(app, ["--config", str(config), "purge", "--dry-run"]).exit_code == 0
    assert runner.invoke(app, ["--config", str(config), "purge", "--status"]).exit_code == 0
    _, st = _status(config)
    assert next(s for s in st["stages"] if s["stage"] == "purge")["last_run"] is None


def test_a_configured_collector_that_never_ran_needs_attention(tmp_path: Path) -> None:
    config = _config(tmp_path, '[collector.groups.edge]\nlisten = ["udp://127.0.0.1:0"]')
    code, st = _status(config)
    assert code == 1
    assert st["collectors"][0]["group"] == "edge"
    assert any(
        a.startswith("collector edge: configured but has never run") for a in st["attention"]
    )


def test_a_broken_audit_chain_needs_attention(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _write_flows(config, datetime.now(UTC))
    code, _ = _status(config)
    assert code == 0
    log = tmp_path / "store" / "audit" / "audit.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[1:]))  # the first entry deleted
    code, st = _status(config)
    assert code == 1 and st["audit"]["ok"] is False
    assert any(a.startswith("audit: audit log BROKEN") for a in st["attention"])


@pytest.mark.parametrize("when", ["-15m", "-2h", "-7d"])
def test_relative_times_for_the_timers(when: str) -> None:
    from mamori.cli.common import parse_time

    got = parse_time(when)
    assert got is not None
    n, unit = int(when[1:-1]), when[-1]
    want = datetime.now(UTC) - timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: n})
    assert abs((got - want).total_seconds()) < 60


def test_each_listener_group_keeps_its_own_counters(tmp_path: Path) -> None:
    from mamori.ingest.collector import Collector, replaying

    pcap = Path(__file__).parent / "data" / "netflow" / "100-IPFIXv10-CISCO__traffic-00.pcap"
    config = _config(tmp_path, '[collector.groups.edge]\nlisten = ["udp://127.0.0.1:0"]')
    with Governance(load_config(config)) as gov:
        # an old capture: its export times are far from ours (the clock checks widened)
        collector = Collector(gov, replaying(gov.config.collector), group="edge")
        stats = collector.replay_pcap(pcap)
        collector.close()
    assert stats.rows_written > 0
    assert (tmp_path / "store" / "_state" / "collector_edge" / "stats.json").exists()
    assert not (tmp_path / "store" / "_state" / "collector" / "stats.json").exists()
    _, st = _status(config)
    # the capture is from 2023: its flows are past retention, the collector itself is fine
    assert not [a for a in st["attention"] if "collector" in a], st["attention"]
    (edge,) = st["collectors"]
    assert edge["state"] == "ok" and edge["configured"] is True
    assert edge["group"] == "edge" and edge["records_stored"] == stats.rows_written
    r = runner.invoke(
        app, ["--config", str(config), "collect", "stats", "--group", "edge", "--json"]
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["rows_written"] == stats.rows_written
    r = runner.invoke(app, ["--config", str(config), "collect", "--group", "core"])
    assert r.exit_code == 2 and "no listener group 'core'" in r.output
