"""``mamori ingest report`` and ``mamori notify`` from the command line, against aiosmtpd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config import load_config
from mamori.governance import Governance
from tests.act.conftest import SmtpServer
from tests.act.test_notify import _setup

pytestmark = pytest.mark.slow  # the whole report-then-notify path from the command line

runner = CliRunner()


def test_report_then_notify(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg_file = tmp_path / "mamori.toml"
    cfg_file.write_text(
        f'store = "{tmp_path / "store"}"\n'
        '[smtp]\nhost = "127.0.0.1"\n'
        f"port = {smtp_server.port}\n"
        '[web]\nbase_url = "https://portal.isp.example"\n'
        '[[address_plan]]\nname = "dyn"\nkind = "dynamic"\nprefixes = ["10.16.0.0/12"]\n'
        '[[address_plan]]\nname = "cgn"\nkind = "cgnat"\nprefixes = ["10.64.0.0/16"]\n',
        encoding="utf-8",
    )
    with Governance(load_config(cfg_file)) as gov:
        _setup(gov)
    report = tmp_path / "infected.csv"
    report.write_text(
        "timestamp,ip,port,infection\n"
        "2026-11-02T00:30:00Z,10.16.0.5,40001,mirai\n"
        "2026-11-02T00:30:00Z,10.16.0.500,40001,mirai\n"
        "2026-11-02T01:30:00Z,10.16.0.5,40002,mirai\n",
        encoding="utf-8",
    )
    base = ["--config", str(cfg_file)]
    r = runner.invoke(
        app,
        [*base, "ingest", "report", "--kind", "infected", "--format", "csv", str(report), "--json"],
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert (got["records"], got["stored"], got["measure"]) == (3, 2, "M5")
    assert got["bad"][0]["line"] == 3 and "10.16.0.500" in got["bad"][0]["reason"]

    r = runner.invoke(app, [*base, "notify", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    m5 = next(q for q in json.loads(r.output)["queued"] if q["measure"] == "M5")
    assert m5["alerts_queued"] == 2 and m5["legal_basis"] == "consent"
    assert smtp_server.messages == []

    smtp_server.stop()
    r = runner.invoke(app, [*base, "notify", "--send"])
    assert r.exit_code == 75, r.output  # EX_TEMPFAIL: the alerts stay queued
    r = runner.invoke(app, [*base, "notify", "status", "--json"])
    assert json.loads(r.output)["M5"]["notifications"] == {"failed": 1, "queued": 1}

    smtp_server.start()
    # a second run: nothing new to queue; the still-queued alert goes, the failed one waits for
    # alerts.retry_after_s
    r = runner.invoke(app, [*base, "notify", "--send", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["sent"]["states"] == {"sent": 1}
    assert len(smtp_server.messages) == 1

    r = runner.invoke(app, [*base, "notify", "status"])
    assert r.exit_code == 0 and "M5" in r.output
