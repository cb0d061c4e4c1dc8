"""Retention: `purge` removes exactly the partitions older than the retention, and match records
once their alert was sent plus the grace period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config import RetentionConfig
from mamori.governance import Governance, purge
from tests.conftest import flow, make_config, table

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


def _hours_present(gov: Governance, dataset: str) -> list[datetime]:
    return [p.start for p in gov._engine.partitions(dataset)]


@pytest.mark.parametrize("days", [1, 7, 30])
def test_purge_removes_exactly_partitions_older_than_n_days(
    tmp_path: Path, days: int, request: pytest.FixtureRequest
) -> None:
    cfg = make_config(tmp_path / "s", retention=RetentionConfig(flows=days))
    gov = Governance(cfg)
    request.addfinalizer(gov.close)
    cutoff = NOW - timedelta(days=days)
    # Hours around the cutoff: the hour that ends exactly at the cutoff is old; the one that
    # contains it is not (part of it is younger).
    hours = [cutoff.replace(minute=0) + timedelta(hours=h) for h in range(-3, 4)]
    hours += [NOW - timedelta(days=days * 3), NOW - timedelta(hours=1)]
    gov.write(
        "M1",
        "flows",
        table([flow("10.0.0.1", "203.0.113.1", h + timedelta(minutes=1)) for h in hours]),
        "collector",
    )
    before = _hours_present(gov, "flows")
    expected_gone = {p for p in before if p + timedelta(hours=1) <= cutoff}
    assert expected_gone and expected_gone != set(before)

    report = purge(gov, actor="ops", now=NOW)

    after = set(_hours_present(gov, "flows"))
    assert after == set(before) - expected_gone
    assert report.partitions_deleted == len(expected_gone)
    assert report.rows_deleted == len(expected_gone)
    last = list(gov.audit.entries())[-1]
    assert last.event == "purge" and last.dataset == "flows"
    assert gov.audit.verify().ok


def test_dry_run_deletes_nothing(gov: Governance) -> None:
    gov.write(
        "M1", "flows", table([flow("10.0.0.1", "203.0.113.1", NOW - timedelta(days=400))]), "c"
    )
    report = purge(gov, actor="ops", now=NOW, dry_run=True)
    assert report.partitions_deleted == 1
    assert len(_hours_present(gov, "flows")) == 1


def test_matches_deleted_after_alert_sent_plus_grace(gov: Governance) -> None:
    t = NOW - timedelta(days=3)
    gov.write(
        "M5",
        "matches",
        table(
            [
                {"ts": t, "ip": "203.0.113.9", "port": 1, "notification_id": "n-sent-long-ago"},
                {"ts": t, "ip": "203.0.113.9", "port": 2, "notification_id": "n-sent-yesterday"},
                {"ts": t, "ip": "203.0.113.9", "port": 3, "notification_id": "n-pending"},
            ]
        ),
        "desk",
        basis="justified-act",
        justification="test",
    )
    gov.write(
        "M5",
        "notifications",
        table(
            [
                {
                    "created": t,
                    "notification_id": "n-sent-long-ago",
                    "subscriber_id": "S",
                    "measure": "M5",
                    "legal_basis": "consent",
                    "state": "sent",
                    "sent": NOW - timedelta(days=8),
                },
                {
                    "created": t,
                    "notification_id": "n-sent-yesterday",
                    "subscriber_id": "S",
                    "measure": "M5",
                    "legal_basis": "consent",
                    "state": "sent",
                    "sent": NOW - timedelta(days=1),
                },
                {
                    "created": t,
                    "notification_id": "n-pending",
                    "subscriber_id": "S",
                    "measure": "M5",
                    "legal_basis": "consent",
                    "state": "pending",
                },
            ]
        ),
        "desk",
        basis="justified-act",
        justification="test",
    )
    report = purge(gov, actor="ops", now=NOW)
    assert report.matches_after_alert == 1
    files = list((gov.config.store / "matches").rglob("*.parquet"))
    ports = sorted(p for f in files for p in pq.read_table(f).column("port").to_pylist())
    assert ports == [2, 3]


def test_purge_command(tmp_path: Path) -> None:
    store = tmp_path / "store"
    gov = Governance(make_config(store))
    gov.write(
        "M1", "flows", table([flow("10.0.0.1", "203.0.113.1", NOW - timedelta(days=100))]), "c"
    )
    gov.close()
    result = CliRunner().invoke(app, ["--store", str(store), "purge", "--now", NOW.isoformat()])
    assert result.exit_code == 0, result.output
    assert "flows: deleted 1 partition(s), 1 row(s) older than 90 days" in result.output
    assert not list((store / "flows").rglob("*.parquet"))


def test_purge_removes_observed_partitions_dated_in_the_future(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Garbage taken for flows was dated up to 2105: no retention rule ever reaches it. Past the
    tolerance, future partitions of observed events go, audited like every purge; other datasets
    (a planned allocation) and hours within the tolerance (a fast exporter clock) stay."""
    cfg = make_config(tmp_path / "s", retention=RetentionConfig(future_tolerance_hours=48))
    gov = Governance(cfg)
    request.addfinalizer(gov.close)
    hours = {
        "now": NOW,
        "within the tolerance": NOW + timedelta(hours=47),
        "past it": NOW + timedelta(hours=49),
        "2105": datetime(2105, 3, 1, 7, tzinfo=UTC),
    }
    gov.write(
        "M1",
        "flows",
        table([flow("10.0.0.1", "203.0.113.1", at) for at in hours.values()]),
        "collector",
    )
    planned = NOW + timedelta(days=30)
    gov.write_registry(
        "allocations",
        table([{"start": planned, "addr": "10.0.0.7", "subscriber_id": "S1"}]),
        "ops",
        source="static",
    )

    report = purge(gov, actor="ops", now=NOW)

    def hour(t: datetime) -> datetime:
        return t.replace(minute=0, second=0, microsecond=0)

    assert set(_hours_present(gov, "flows")) == {
        hour(hours["now"]),
        hour(hours["within the tolerance"]),
    }
    assert _hours_present(gov, "allocations") == [hour(planned)]
    assert report.partitions_deleted == 2 and report.rows_deleted == 2
    (entry,) = [e for e in gov.audit.entries() if e.event == "purge"]
    assert entry.dataset == "flows" and entry.detail and "dated in the future" in entry.detail
    assert gov.audit.verify().ok
