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
        # when the alerts' events were seen (M13: the senders of an outbound attack)
        *((m, "cases") for m in ("M5", "M6", "M9", "M13")),
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


# ---------------------------------------------------------------- figures that add up


def _alert_versions(nid: str, created: datetime, states: list[tuple[int, str]]) -> pa.Table:
    from mamori.schemas import NOTIFICATIONS

    rows = [
        {
            "created": created,
            "updated": created + timedelta(minutes=m),
            "notification_id": nid,
            "subscriber_id": "sub-0500",
            "measure": "M5",
            "legal_basis": "consent",
            "case_id": "C-x",
            "state": state,
            "sent": created + timedelta(minutes=m) if state == "sent" else None,
        }
        for m, state in states
    ]
    return pa.Table.from_pylist(
        [{f.name: r.get(f.name) for f in NOTIFICATIONS.arrow} for r in rows],
        schema=NOTIFICATIONS.arrow,
    )


def test_alerts_are_filed_under_the_period_of_their_events(gov: Governance) -> None:
    from mamori.act import cases as cases_mod

    # events seen in November; the alert made and sent in December, after a failed try
    seen = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
    made = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    case = cases_mod.Case(
        opened=made,
        updated=made,
        case_id="C-x",
        subscriber_id="sub-0500",
        measure="M5",
        cause="infected:mirai",
        events=4,
        last_event=seen,
        notification_id="N-late",
        notification_state="queued",
    )
    gov.write("M5", "cases", cases_mod.to_table([case]), "test", basis="consent")
    gov.write(
        "M5",
        "notifications",
        _alert_versions("N-late", made, [(0, "queued"), (5, "failed"), (65, "sent")]),
        "test",
        basis="consent",
    )
    nov = {m.measure: m for m in build_report(gov, "2026-11", actor="test").measures}
    dec = {m.measure: m for m in build_report(gov, "2026-12", actor="test").measures}
    assert (nov["M5"].alerts_sent, nov["M5"].alerts_failed) == (1, 0)  # once, in its state now
    assert (dec["M5"].alerts_sent, dec["M5"].alerts_failed) == (0, 0)


def test_blocks_count_subscribers_affected_once_per_zone(gov: Governance) -> None:
    def block(aid: str, kind: str, measure: str, basis: str, n: int, target: str) -> Action:
        return Action(
            action_id=aid,
            kind=ActionKind(kind),
            target=target,
            measure=measure,
            legal_basis=LegalBasis(basis),
            created=T0,
            expires=T0 + timedelta(days=7),
            subscribers_affected=n,
        )

    now = T0 + timedelta(minutes=1)
    zones = [
        block("rpz-M7-1", "rpz", "M7", "consent", 40, "c2.rpz.mamori"),
        block("rpz-M7-2", "rpz", "M7", "consent", 42, "c2.rpz.mamori"),
    ]
    rules = [
        block("nft-a", "nftables", "M13", "self-defence", 3, "203.0.113.1/32"),
        block("nft-b", "nftables", "M13", "self-defence", 5, "203.0.113.2/32"),
    ]
    for group in (zones, rules):
        done = act.apply(
            gov, act.approve(gov, act.propose(gov, group, "t", now=now), "t", now=now), "t", now=now
        )
        assert len(done) == 2
    by = {m.measure: m for m in build_report(gov, PERIOD, actor="test").measures}
    # the zone's second version protects the same subscribers: 42, not 82
    assert (by["M7"].blocks, by["M7"].block_subscribers) == (2, 42)
    assert (by["M13"].blocks, by["M13"].block_subscribers) == (2, 8)


def test_rpz_zones_record_the_subscribers_they_protect(gov: Governance, tmp_path: Path) -> None:
    from mamori.act.rpz import generate_rpz
    from tests.conftest import table

    gov.write_registry(
        "allocations",
        table(
            [
                {"start": T0, "end": None, "addr": f"10.0.0.{i}", "subscriber_id": f"s{i}"}
                for i in range(1, 6)
            ]
        ),
        "test",
        source="test",
    )
    gov.consent.set("s1", "M7", False, actor="subscriber:s1", channel="web")
    generate_rpz(gov, "test", out_dir=tmp_path)
    now = datetime.now(UTC)
    r = build_report(gov, f"{now.year:04d}-{now.month:02d}", actor="test")
    by = {m.measure: m for m in r.measures}
    assert (by["M7"].block_subscribers, by["M8"].block_subscribers) == (4, 5)
    assert {b.subscribers_affected for b in r.blocks if b.measure == "M7"} == {4}


def test_figures_add_up_against_the_audit_log(gov: Governance, tmp_path: Path) -> None:
    """Each figure of the report rebuilt from the audit log alone."""
    from mamori.detect.reviews import Reviews
    from mamori.schemas import FINDINGS
    from mamori.share import export, publish

    # one C&C finding to share (no action rows written around the action contract)
    finding = {
        "detected": datetime.now(UTC),
        "finding_id": "f-c2-1",
        "kind": "c2",
        "method": "correlation",
        "ip": "203.0.113.50",
        "port": 443,
        "protocol": "tcp",
        "score": 0.97,
        "measure": "M2",
    }
    gov.write(
        "M2",
        "findings",
        pa.Table.from_pylist(
            [{f.name: finding.get(f.name) for f in FINDINGS.arrow}], schema=FINDINGS.arrow
        ),
        "test",
    )
    now = datetime.now(UTC)
    period = f"{now.year:04d}-{now.month:02d}"
    lo, hi = month_bounds(period)
    # a month of work: blocks applied, C&C shared, opt-outs, refusals, findings rejected
    rule = Action(
        action_id="nft-now",
        kind=ActionKind.NFTABLES,
        target="203.0.113.9/32",
        measure="M13",
        legal_basis=LegalBasis.SELF_DEFENCE,
        created=now,
        expires=now + timedelta(days=1),
        subscribers_affected=7,
    )
    act.apply(gov, act.approve(gov, act.propose(gov, [rule], "t"), "t"), "t")
    export(gov, "stix", "test", include_candidates=True)
    published = publish(gov, "test", include_candidates=True)
    assert published.objects_added > 0
    gov.consent.set("sub-0001", "M7", False, actor="subscriber:sub-0001", channel="web")
    gov.consent.set("sub-0002", "M8", False, actor="desk", channel="phone")
    import contextlib

    with contextlib.suppress(PermissionError):
        gov.open("M7", "flows", ["src_addr"], "nosy")
    Reviews(gov).record("f-c2-1", "M2", "rejected", "web:analyst1")
    Reviews(gov).record("f-inf-1", "M4", "false-positive", "web:analyst1")
    Reviews(gov).record("f-inf-1", "M4", "confirmed", "web:analyst1")

    r = build_report(gov, period, actor="test")
    by = {m.measure: m for m in r.measures}
    entries = [e for e in gov.audit.entries() if lo <= datetime.fromisoformat(e.ts) < hi]

    def detail(e: object) -> dict[str, object]:
        return json.loads(getattr(e, "detail", None) or "{}")

    applied: dict[str, set[str]] = {}
    for e in entries:
        d = detail(e)
        blocks = "alert" not in d.get("kinds", [])  # type: ignore[operator]
        if e.event == "write" and e.dataset == "actions" and d.get("step") == "applied" and blocks:
            applied.setdefault(str(e.measure), set()).update(d["action_ids"])  # type: ignore[arg-type]
    shared = sum(
        int(detail(e).get("objects_added", detail(e).get("endpoints", 0)))
        for e in entries
        if e.event in ("share-publish", "share-export")
    )
    for m in by.values():
        assert m.blocks == len(applied.get(m.measure, set())), m.measure
        assert m.opt_outs == sum(
            1
            for e in entries
            if e.event == "consent" and e.measure == m.measure and detail(e)["state"] == "out"
        ), m.measure
        assert m.refusals == sum(
            1 for e in entries if e.event == "refused" and e.measure == m.measure
        ), m.measure
        assert m.findings_rejected == sum(
            1
            for e in entries
            if e.event == "review"
            and e.measure == m.measure
            and detail(e)["decision"] in ("rejected", "false-positive")
        ), m.measure
    assert by["M3"].cc_entries_shared == shared > 0
    assert (by["M7"].opt_outs, by["M8"].opt_outs, by["M7"].refusals) == (1, 1, 1)
    assert (by["M2"].findings_rejected, by["M4"].findings_rejected) == (1, 1)
    assert by["M13"].blocks == 1 and by["M13"].block_subscribers == 7
