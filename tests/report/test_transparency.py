"""The transparency report: counts per measure and month, from the store and the audit log."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mamori.act import base as act
from mamori.act.base import Action, ActionKind
from mamori.cli import app
from mamori.governance import Governance, LegalBasis, purge
from mamori.report.transparency import PeriodError, build_report, month_bounds, to_csv
from mamori.schemas import ACTIONS
from tests.web.conftest import PERIOD, T0, populate

runner = CliRunner()


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("2026-11", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_month_bounds(period: str, start: datetime, end: datetime) -> None:
    assert month_bounds(period) == (start, end)


@pytest.mark.parametrize("bad", ["2026-13", "2026-1", "26-11", "2026-11-01", "", "x"])
def test_bad_period(bad: str) -> None:
    with pytest.raises(PeriodError, match="YYYY-MM"):
        month_bounds(bad)


def test_alerts_blocks_per_measure(gov: Governance) -> None:
    populate(gov)
    r = build_report(gov, PERIOD, actor="test")
    by = {m.measure: m for m in r.measures}
    assert len(by) == 14
    assert (by["M5"].alerts_sent, by["M5"].alert_subscribers) == (3, 2)
    assert (by["M6"].alerts_sent, by["M6"].alerts_failed) == (0, 1)
    # the proposed RPZ action was never in force; the nft rule and the expired FlowSpec rule were
    assert (by["M7"].blocks, by["M13"].blocks, by["M10"].blocks) == (0, 1, 1)
    assert by["M13"].block_subscribers == 3
    assert sorted((b.measure, b.state) for b in r.blocks) == [
        ("M10", "expired"),
        ("M13", "applied"),
    ]
    # nothing of it in another month
    other = build_report(gov, "2026-10", actor="test")
    assert sum(m.alerts_sent + m.blocks for m in other.measures) == 0
    # read under M14, audited
    accesses = [e for e in gov.audit.entries() if e.event == "access" and e.actor == "test"]
    assert {(e.measure, e.dataset) for e in accesses} == {
        ("M14", "actions"),
        ("M14", "findings"),  # counted per kind (spoofing …), no targets
        *((m, "notifications") for m in ("M5", "M6", "M9", "M13")),
    }


def test_opt_outs_shares_and_purges_from_the_audit_log(gov: Governance) -> None:
    populate(gov)
    now = datetime.now(UTC)
    period = f"{now.year:04d}-{now.month:02d}"
    gov.consent.set("sub-0001", "M4", False, actor="subscriber:sub-0001", channel="web")
    gov.consent.set("sub-0002", "M4", False, actor="subscriber:sub-0002", channel="web")
    gov.consent.set("sub-0002", "M4", True, actor="subscriber:sub-0002", channel="web")
    gov.consent.set("sub-0003", "M8", False, actor="desk", channel="phone")
    gov.audit.append(
        actor="share", event="share", measure="M3", detail={"entries": 40, "partner": "isac"}
    )
    gov.audit.append(
        actor="share", event="taxii-read", measure="M3", detail={"objects": 12, "client": "peer-a"}
    )
    gov.audit.append(
        actor="share", event="share", measure="M3", detail={"entries": 5, "partner": "isac"}
    )
    gov.audit.append(actor="x", event="access", measure="M3", dataset="findings")  # not sharing
    purge(gov, actor="test", now=datetime(2027, 6, 1, tzinfo=UTC))  # flows older than 90 days
    r = build_report(gov, period, actor="test")
    by = {m.measure: m for m in r.measures}
    assert (by["M4"].opt_outs, by["M4"].opt_ins, by["M8"].opt_outs) == (2, 1, 1)
    assert (by["M3"].cc_entries_shared, by["M3"].share_partners) == (57, 2)
    flows = next(d for d in r.datasets if d.dataset == "flows")
    assert flows.rows_deleted == 24 and flows.purges == 1 and flows.partitions_held == 0


def test_csv_and_json_forms(gov: Governance) -> None:
    populate(gov)
    r = build_report(gov, PERIOD, actor="test")
    rows = list(csv.DictReader(io.StringIO(to_csv(r))))
    sent = [x for x in rows if x["key"] == "M5" and x["metric"] == "alerts_sent"]
    assert sent == [
        {"period": PERIOD, "section": "measure", "key": "M5", "metric": "alerts_sent", "value": "3"}
    ]
    assert {x["section"] for x in rows} == {"measure", "block", "dataset", "findings", "audit_head"}
    back = json.loads(r.model_dump_json())
    assert back["period"] == PERIOD and len(back["measures"]) == 14
    # aggregates only: no subscriber, no target of a block
    text = to_csv(r) + r.model_dump_json()
    for secret in ("sub-0001", "203.0.113.50", "cc.bad.example", "10.0.1.2"):
        assert secret not in text


def test_cli(gov: Governance, tmp_path: Path) -> None:
    populate(gov)
    store = ["--store", str(gov.config.store)]
    res = runner.invoke(app, [*store, "report", "transparency", "--period", PERIOD, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["measures"][4]["alerts_sent"] == 3
    out = tmp_path / "r.csv"
    res = runner.invoke(
        app, [*store, "report", "transparency", "--period", PERIOD, "--csv", "--out", str(out)]
    )
    assert res.exit_code == 0 and out.read_text().startswith("period,section,key,metric,value")
    res = runner.invoke(app, [*store, "report", "transparency", "--period", PERIOD])
    assert res.exit_code == 0 and "transparency report 2026-11" in res.output
    assert "M5" in res.output and "flows" in res.output
    res = runner.invoke(app, [*store, "report", "transparency", "--period", "2026/11"])
    assert res.exit_code == 2 and "YYYY-MM" in res.output


def _action_row(**kw: object) -> pa.Table:
    row = {"created": T0, "target": "x", "legal_basis": "justified-act", **kw}
    return pa.Table.from_pylist([row], schema=ACTIONS.arrow)


def test_alert_actions_are_not_blocks_and_legacy_rows_still_count(gov: Governance) -> None:
    populate(gov)
    # an alert's life cycle (applied, then ended) is counted as an alert, not a block
    alert = Action(
        action_id="alert-n-1",
        kind=ActionKind.ALERT,
        target="n-1",
        measure="M5",
        legal_basis=LegalBasis.CONSENT,
        created=T0,
        expires=T0 + timedelta(days=7),
    )
    now = T0 + timedelta(minutes=1)
    [a] = act.approve(gov, act.propose(gov, [alert], "test", now=now), "test", now=now)
    act.end(gov, act.apply(gov, [a], "test", now=now), "test", now=now)
    # a row written before the action contract: "active", kind "acl", the expiry kept in "end"
    gov.write(
        "M10",
        "actions",
        _action_row(
            action_id="old-1",
            kind="acl",
            measure="M10",
            state="active",
            start=T0,
            end=T0 + timedelta(days=1),
            subscribers_affected=5,
            expires=None,
        ),
        "test",
    )
    r = build_report(gov, PERIOD, actor="test")
    by = {m.measure: m for m in r.measures}
    assert (by["M5"].blocks, by["M10"].blocks, by["M10"].block_subscribers) == (0, 2, 5)
    old = next(b for b in r.blocks if b.subscribers_affected == 5)
    assert (old.kind, old.state, old.end) == ("nftables", "expired", T0 + timedelta(days=1))
