"""`mamori demo` end to end on the `small` simulated ISP: every stage runs, the collector loses
nothing, alerts arrive in the subscribers' mailboxes over SMTP, and the console the demo leaves
behind is reachable and populated for each role."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config import load_config
from mamori.governance import Governance
from mamori.web.maildir import read_mailbox
from tests.web.conftest import login
from tests.web.server import running

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("demo") / "out"
    r = runner.invoke(app, ["demo", "--out", str(out), "--scenario", "small", "--no-serve"])
    assert r.exit_code == 0, r.output
    assert "audit log intact" in r.output
    (out / "demo-output.txt").write_text(r.output, encoding="utf-8")
    yield out


@pytest.mark.slow
def test_every_stage_ran_and_the_collector_lost_nothing(demo_out: Path) -> None:
    text = (demo_out / "demo-output.txt").read_text(encoding="utf-8")
    for stage in (
        "simulate the ISP",
        "subscriber records",
        "collect flows over UDP (M1)",
        "feeds and resolver logs",
        "third-party reports",
        "detect C&C servers (M2)",
        "detect infected hosts (M4)",
        "block and warn: RPZ (M7, M8)",
        "SMTP AUTH abuse: refuse and suspend (M11, M12)",
        "share the C&C list (M3)",
        "alert subscribers by e-mail (M5, M6, M9)",
        "transparency report",
        "score against the ground truth",
        "console accounts and audit",
    ):
        assert f"✓ {stage}" in text, stage
    summary = json.loads((demo_out / "sim" / "summary.json").read_text())
    exported = sum(x["records"] + x["samples"] for x in summary["routers"])
    stats = json.loads((demo_out / "store" / "_state" / "collector" / "stats.json").read_text())
    assert stats["rows_written"] == exported > 0
    assert (demo_out / "share" / "c2-list.stix.json").stat().st_size > 0
    # nothing leaves unreviewed: only confirmed or corroborated C&C (nobody has reviewed yet)
    shared = re.search(r"(\d+) confirmed or corroborated\s+endpoints\s+exported.*?(\d+)\s+"
                       r"candidates\s+await\s+review", text, re.S)  # fmt: skip
    assert shared, text
    bundle = json.loads((demo_out / "share" / "c2-list.stix.json").read_text())
    indicators = [o for o in bundle.get("objects", []) if o["type"] == "indicator"]
    assert len(indicators) == int(shared.group(1))
    assert list((demo_out / "store" / "_state" / "rpz").glob("*.rpz*")) or list(
        (demo_out / "store" / "_state" / "rpz").iterdir()
    )
    mails = read_mailbox(demo_out / "mailboxes")
    assert mails, "no alert reached the mailboxes"
    # subscribers' alerts link their consent page; a suspended account's owner is told how to
    # restore sending instead (M11 does not rest on consent)
    owners = [m for m in mails if "SMTP" in m.subject]
    assert owners and all("/consent/" in m.body for m in mails if m not in owners)
    refused = (demo_out / "mail" / "client_access").read_text().splitlines()
    assert [line for line in refused if line and not line.startswith("#")]
    assert (demo_out / "mail" / "dovecot-deny.smtp").read_text().strip()


@pytest.mark.slow
def test_console_left_behind_is_populated(demo_out: Path) -> None:
    from mamori.web.app import create_full_app

    logins = {
        line.split("\t")[0]: line.split("\t")[2]
        for line in (demo_out / "logins.txt").read_text().splitlines()
    }
    assert set(logins) == {"admin", "analyst", "desk", "operator", "auditor"}
    gov = Governance(load_config(demo_out / "mamori.toml"))
    try:
        with (
            running(create_full_app(gov)) as url,
            httpx.Client(base_url=url, timeout=30) as desk,
            httpx.Client(base_url=url, timeout=30) as analyst,
        ):
            login(desk, "desk", logins["desk"])
            alerts = desk.get("/alerts")
            assert alerts.status_code == 200 and "sent" in alerts.text
            # the zones and the alerts sent, each through the action life cycle
            acts = desk.get("/actions", params={"per": 200}).text
            rows = re.findall(r'<tr data-action="([^"]+)" data-status="([^"]+)"', acts)
            status = {}
            for action_id, state in rows:
                status.setdefault(
                    action_id.split("-")[0] + "-" + action_id.split("-")[1], set()
                ).add(state)
            assert "applied" in status["rpz-M7"] and "applied" in status["rpz-M8"]
            assert "ended" in status["alert-N"]
            box = desk.get("/mailbox")
            assert box.status_code == 200 and "/consent/" in box.text
            login(analyst, "analyst", logins["analyst"])
            findings = analyst.get("/findings")
            assert findings.status_code == 200 and "c2" in findings.text
            traffic = analyst.get("/traffic")
            assert traffic.status_code == 200 and "<svg" in traffic.text
            public = analyst.get("/transparency")
            assert public.status_code == 200
    finally:
        gov.close()


@pytest.mark.slow
def test_status_on_the_demo_store_shows_every_stage(demo_out: Path) -> None:
    """`mamori status` on what the demo left, judged on the simulated day (the simulator's
    clock is fixed; today, its data would be past some retentions): every stage with its run,
    the collector, the store, nothing that needs attention. Then purge is made overdue (flows
    kept one day, judged three days later) and it exits 1. Read-only: the other tests share
    this store."""
    from datetime import datetime, timedelta

    from mamori.runs import STAGES

    config = str(demo_out / "mamori.toml")
    summary = json.loads((demo_out / "sim" / "summary.json").read_text())
    sim_end = datetime.fromisoformat(summary["end"])
    r = runner.invoke(
        app, ["--config", config, "status", "--json", "--now", f"{sim_end + timedelta(hours=1)}"]
    )
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    stages = {s["stage"]: s for s in st["stages"]}
    assert list(stages) == list(STAGES)
    for ran in ("collect", "detect-c2", "detect-infected", "rpz", "notify", "transparency"):
        assert stages[ran]["last_outcome"] == "ok" and stages[ran]["state"] == "ok", ran
    assert stages["detect-infected"]["counts"]["findings"] > 0
    exported = sum(x["records"] + x["samples"] for x in summary["routers"])
    assert st["collectors"][0]["records_stored"] == exported
    flows = next(d for d in st["datasets"] if d["dataset"] == "flows")
    assert flows["bytes"] > 0 and flows["oldest"] and not flows["overdue"]
    assert st["audit"]["ok"] and st["alerts"].get("sent", 0) > 0

    later = f"{sim_end + timedelta(days=3)}"
    r = runner.invoke(app, ["--config", config, "status", "--json", "--now", later])
    assert r.exit_code == 0, r.output
    overdue = {"MAMORI_RETENTION__FLOWS": "1"}
    r = runner.invoke(app, ["--config", config, "status", "--json", "--now", later], env=overdue)
    assert r.exit_code == 1
    attention = json.loads(r.stdout)["attention"]
    assert [a for a in attention if a.startswith("purge overdue")] == [
        f"purge overdue: flows holds data from {flows['oldest']}, past its 1-day retention"
    ], attention
    table = runner.invoke(app, ["--config", config, "status", "--now", later], env=overdue)
    assert table.exit_code == 1 and "OVERDUE" in table.output


def test_demo_never_deletes_a_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    r = runner.invoke(app, ["demo", "--out", str(out), "--scenario", "tiny", "--no-serve"])
    assert r.exit_code == 2
    assert "not a previous demo's output" in r.output
    assert (out / "thesis.tex").read_text() == "do not delete"
