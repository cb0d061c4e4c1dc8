"""Loading mail logs through governance: whole files, a live log followed through rotation, queue
samples, and `mamori ingest mail`."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.governance import AccessRefused, Governance
from mamori.ingest.mail import (
    MailFollower,
    QueueError,
    ingest_mail_file,
    queue_counts,
    sample_queue,
)
from tests.conftest import make_config
from tests.ingest.mail.test_parse import SIM

REF = datetime(2026, 11, 30, tzinfo=UTC)


def _rows(gov: Governance, measure: str = "M11") -> list[dict[str, object]]:
    g = gov.open(measure, "auth_events", None, "test")
    return g.arrow().sort_by("ts").to_pylist()


def test_a_file_is_stored_under_m11_with_the_four_fields(gov: Governance, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(SIM)
    r = ingest_mail_file(gov, log, "postfix", actor="test", reference=REF, server="mx1")
    assert (r.lines, r.failures, r.successes, r.rows_stored, r.measure) == (9, 1, 1, 2, "M11")
    rows = _rows(gov)
    assert [(x["client_addr"], x["auth_id"], x["sender"], x["recipients"], x["server"])
            for x in rows] == [
        ("203.0.113.9", "admin@isp.example.jp", None, None, "mx1"),
        ("10.16.0.5", "u1@isp.example.jp", "u1@isp.example.jp", 3, "mx1"),
    ]  # fmt: skip
    # the load is audited under M11
    (entry,) = [e for e in gov.audit.entries() if e.event == "write"]
    assert (entry.measure, entry.dataset) == ("M11", "auth_events")


def test_with_m11_off_only_m12s_columns_are_stored(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path / "store", measures={**{f"M{i}": True for i in range(1, 15)}, "M11": False}
    )
    log = tmp_path / "mail.log"
    log.write_text(SIM)
    with Governance(cfg) as gov:
        r = ingest_mail_file(gov, log, "postfix", actor="test", reference=REF)
        assert r.measure == "M12"
        g = gov.open("M12", "auth_events", None, "test")
        assert set(g.columns) == {"ts", "client_addr", "auth_id", "success", "service", "attempts"}
        assert g.arrow().num_rows == 2
        with pytest.raises(AccessRefused):  # sender and recipient counts were never written
            gov.open("M12", "auth_events", ["sender"], "test")


def test_dry_run_stores_nothing(gov: Governance, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(SIM)
    r = ingest_mail_file(gov, log, "dovecot", actor="test", reference=REF, dry_run=True)
    assert (r.failures, r.successes, r.rows_stored) == (1, 1, 0)
    assert _rows(gov) == []


def test_a_file_read_in_small_blocks_gives_the_same_events(gov: Governance, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(SIM * 3)
    r = ingest_mail_file(gov, log, "postfix", actor="test", reference=REF, block_bytes=100)
    assert (r.lines, r.failures, r.successes, r.malformed) == (27, 3, 3, 0)
    assert [x["recipients"] for x in _rows(gov) if x["success"]] == [3, 3, 3]


def test_following_a_live_log_through_rotation(gov: Governance, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    lines = SIM.splitlines(keepends=True)
    log.write_text(lines[0])  # what was there before is not read
    f = MailFollower(gov, log, "postfix", actor="test")
    assert f.poll().events.num_rows == 0
    with log.open("a") as fh:
        fh.write(lines[1])
        fh.write(lines[2][:40])  # half a line: kept for the next poll
    b = f.poll()
    assert (b.lines, b.stored) == (1, 1)
    with log.open("a") as fh:
        fh.write("".join([lines[2][40:], *lines[3:5]]))
    b = f.poll()
    assert [r["recipients"] for r in b.events.to_pylist()] == [3]
    # logrotate: renamed away, a new file under the name
    log.rename(tmp_path / "mail.log.1")
    log.write_text(lines[1])
    b = f.poll()
    assert b.rotated and b.stored == 1
    f.close()
    assert len(_rows(gov)) == 3


POSTQUEUE_J = b"""\
{"queue_name": "deferred", "queue_id": "4A1B", "sender": "u1@isp.example.jp", "recipients": [{"address": "a@example.com", "delay_reason": "x"}, {"address": "b@example.com"}]}
{"queue_name": "active", "queue_id": "4A1C", "sender": "u2@isp.example.jp", "recipients": [{"address": "c@example.com"}]}
"""


def test_queue_counts_from_postqueue_json() -> None:
    assert queue_counts(POSTQUEUE_J) == (2, 3, 1)
    assert queue_counts(b"") == (0, 0, 0)
    with pytest.raises(QueueError):
        queue_counts(b"mail queue is empty\n-- 0 Kbytes\n")


def _fake_postqueue(tmp_path: Path) -> Path:
    out = tmp_path / "postqueue.out"
    out.write_bytes(POSTQUEUE_J)
    cmd = tmp_path / "postqueue"
    cmd.write_text(f"#!/bin/sh\ncat {out}\n")
    cmd.chmod(cmd.stat().st_mode | stat.S_IEXEC)
    return cmd


def test_a_queue_sample_is_stored_under_m11(gov: Governance, tmp_path: Path) -> None:
    s = sample_queue(gov, actor="test", command=[str(_fake_postqueue(tmp_path))], server="mx1")
    assert (s.messages, s.recipients, s.deferred) == (2, 3, 1)
    (row,) = gov.open("M11", "mail_queue", None, "test").arrow().to_pylist()
    assert (row["messages"], row["recipients"], row["deferred"], row["server"]) == (2, 3, 1, "mx1")
    with pytest.raises(QueueError, match="exited"):
        sample_queue(gov, actor="test", command=["false"])


def _cli(tmp_path: Path, *args: str) -> object:
    env = {"MAMORI_ACTOR": "cli-test"}
    return CliRunner().invoke(app, ["--store", str(tmp_path / "store"), *args], env=env)


def test_cli_loads_a_log_and_reports(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(
        SIM + "Nov  2 09:01:00 mail postfix/smtpd[9]: warning: SASL PLAIN authentication failed:\n"
    )
    r = _cli(
        tmp_path, "ingest", "mail", "--format", "postfix", "--year", "2026", "--json", str(log)
    )
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    report = json.loads(r.stdout.splitlines()[0])  # type: ignore[attr-defined]
    assert (report["failures"], report["malformed"], report["rows_stored"]) == (1, 1, 2)
    assert report["examples"]["malformed"] == ["line 10: not a Postfix SASL failure line"]
    r = _cli(tmp_path, "ingest", "mail", str(log))
    assert r.exit_code == 2 and "--format" in r.output  # type: ignore[attr-defined]
    r = _cli(tmp_path, "ingest", "mail", "--format", "exim", "--follow", str(log), str(log))
    assert r.exit_code == 2  # type: ignore[attr-defined]


def test_cli_samples_the_queue(tmp_path: Path) -> None:
    cmd = _fake_postqueue(tmp_path)
    os.environ["MAMORI_MAIL__QUEUE_COMMAND"] = json.dumps([str(cmd)])
    try:
        r = _cli(tmp_path, "ingest", "mail", "--queue", "--json")
    finally:
        del os.environ["MAMORI_MAIL__QUEUE_COMMAND"]
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert json.loads(r.stdout)["messages"] == 2  # type: ignore[attr-defined]
