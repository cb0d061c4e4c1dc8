"""`mamori notify notice`: existing subscribers told about the consent-based measures and how to
opt out, in both languages, within the hourly limit, each once, audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mamori.act.notice import send_notice
from mamori.cli import app
from mamori.config import SmtpConfig
from mamori.governance import Governance
from mamori.web.maildir import read_mailbox
from tests.conftest import make_config

pytest.importorskip("aiosmtpd")


@pytest.fixture
def told(tmp_path: Path) -> Iterator[tuple[Governance, Path]]:
    from mamori.sim.mailsink import MailSink

    with MailSink(tmp_path / "mail") as sink:
        cfg = make_config(tmp_path / "store")
        cfg = cfg.model_copy(
            update={
                "smtp": SmtpConfig(host=sink.host, port=sink.port),
                "alerts": cfg.alerts.model_copy(update={"rate_limit_per_hour": 2}),
            }
        )
        gov = Governance(cfg)
        gov.write_registry(
            "subscribers",
            pa.table(
                {
                    "updated": pa.array(
                        [datetime(2026, 11, 1, tzinfo=UTC)] * 3, pa.timestamp("ms", "UTC")
                    ),
                    "subscriber_id": ["s1", "s2", "s3"],
                    "contract": ["home"] * 3,
                    "email": ["s1@mail.example.jp", "s2@mail.example.jp", "s3@mail.example.jp"],
                    "language": ["ja", "en", None],
                }
            ),
            "test",
            source="test",
        )
        yield gov, sink.directory
        gov.close()


def test_everyone_once_within_the_hourly_limit(told: tuple[Governance, Path]) -> None:
    gov, mail = told
    first = send_notice(gov, "test")
    assert (first.subscribers, first.sent, first.waiting) == (3, 2, 1)
    second = send_notice(gov, "test")
    assert (second.sent, second.waiting) == (0, 1)  # the hour's two are spent
    later = send_notice(gov, "test", now=datetime.now(UTC).replace(year=2099))
    assert (later.sent, later.waiting, later.already) == (1, 0, 2)
    again = send_notice(gov, "test", now=datetime.now(UTC).replace(year=2099))
    assert again.sent == 0  # nobody twice
    mails = {m.recipients[0]: m for m in read_mailbox(mail)}
    assert set(mails) == {"s1@mail.example.jp", "s2@mail.example.jp", "s3@mail.example.jp"}
    ja, en = mails["s1@mail.example.jp"].body, mails["s2@mail.example.jp"].body
    assert ja.index("お客さまへ") < ja.index("To our subscribers")  # Japanese first
    assert en.index("To our subscribers") < en.index("お客さまへ")
    for body in (ja, en):
        for m in gov.catalogue.consent_based():
            assert f"({m.id})" in body or f"（{m.id}）" in body
        assert "/consent/" in body and "switch it off" in body
    notices = [json.loads(e.detail or "{}") for e in gov.audit.entries() if e.event == "notice"]
    assert [n["rows"] for n in notices] == [2, 0, 1, 0]
    assert all("@" not in json.dumps(n) for n in notices)  # counts, no addresses


def test_cli(told: tuple[Governance, Path]) -> None:
    gov, _ = told
    store = ["--store", str(gov.config.store)]
    runner = CliRunner()
    res = runner.invoke(app, [*store, "notify", "notice", "--all", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["waiting"] == 3
    assert runner.invoke(app, [*store, "notify", "notice"]).exit_code == 2
