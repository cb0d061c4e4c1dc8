"""SMTP AUTH detection on the simulated ISP, scored against its truth as `mamori eval smtp` does:
thresholds chosen on training seeds, precision and recall measured on other seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.demo_smtp import evaluate_seeds
from mamori.sim import simulate


def test_ingest_detect_and_eval_from_the_command_line(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    simulate("tiny", sim, seed=7)
    # the tiny world (one hour, 30 spam messages) is below the default hourly volume and has
    # less queue history than a spike is normally judged against: its own thresholds
    toml = tmp_path / "mamori.toml"
    toml.write_text(
        "[detect.smtp-compromised]\nmin_recipients_per_hour = 20\nspike_history_min = 2\n"
    )
    base = ["--store", str(tmp_path / "store"), "--config", str(toml)]
    run = CliRunner().invoke
    for fmt in ("postfix", "dovecot"):
        r = run(app, [*base, "ingest", "mail", "--format", fmt, str(sim / "mail" / "mail.log")])
        assert r.exit_code == 0, r.output
    r = run(app, [*base, "detect", "smtp", "--json"])
    assert r.exit_code == 0, r.output
    findings = tmp_path / "findings.jsonl"
    findings.write_text(r.stdout)
    kinds = {json.loads(x)["kind"] for x in r.stdout.splitlines()}
    assert kinds == {"smtp-brute-force", "smtp-compromised"}
    r = run(app, ["eval", "smtp", "--json", "--findings", str(findings),
                  "--truth", str(sim / "truth.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    score = json.loads(r.stdout)
    assert (score["precision"], score["recall"]) == (1.0, 1.0), score


@pytest.mark.slow
def test_precision_and_recall_on_unseen_seeds(tmp_path: Path) -> None:
    result = evaluate_seeds("small", [0, 1, 2, 3, 4], [10, 11, 12, 13, 14], tmp_path)
    s = result.summary("test")
    print(result.params, s, [(x.seed, x.precision, x.recall) for x in result.test])
    assert s["precision_mean"] >= 0.95 and s["recall_mean"] >= 0.95
    assert s["precision_worst"] >= 0.95 and s["recall_worst"] >= 0.95
