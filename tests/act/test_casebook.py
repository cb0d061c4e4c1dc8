"""Retention of the console's own files: the desk's case book keeps only the minimum of a case
governance no longer returns, and drops it past retention; analysts' verdicts go with their
findings' retention."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mamori.act import cases as cases_mod
from mamori.act.casebook import BookPrune, CaseBook
from mamori.detect.reviews import Reviews
from mamori.governance import Governance
from tests.conftest import make_config

T0 = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)


def _case(sub: str) -> cases_mod.Case:
    return cases_mod.Case(
        opened=T0,
        updated=T0,
        case_id=cases_mod.case_id(sub, "M5", "infected:mirai"),
        subscriber_id=sub,
        measure="M5",
        cause="infected:mirai",
        events=1,
        events_since_notice=0,
        notifications=1,
        last_event=T0,
        notification_id=f"n-{sub}",
        notification_state="sent",
        legal_basis="consent",
        subscriber_status="notified",
    )


@pytest.fixture
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Governance]:
    g = Governance(make_config(tmp_path_factory.mktemp("book") / "store"))
    stays, leaves = _case("sub-0001"), _case("sub-0002")
    g.write("M5", "cases", cases_mod.to_table([stays, leaves]), "test", basis="consent")
    book = CaseBook(g)
    for c in (stays, leaves):
        book.record(c.case_id, "M5", "web:desk", status="acknowledged", opened=T0)
        book.record(c.case_id, "M5", "web:desk", assignee="tanaka", note="phoned: router reset")
    yield g
    g.close()


def _steps(gov: Governance) -> dict[str, list[str]]:
    return {cid: [e.step for e in c.entries] for cid, c in CaseBook(gov).cases().items()}


def test_an_opted_out_case_keeps_number_dates_and_status_only(gov: Governance) -> None:
    stays, leaves = (cases_mod.case_id(s, "M5", "infected:mirai") for s in ("sub-0001", "sub-0002"))
    before = _steps(gov)
    assert CaseBook(gov).prune("test") == BookPrune(0, 0)  # everyone still in: nothing goes
    gov.consent.set("sub-0002", "M5", False, actor="subscriber:sub-0002", channel="web")
    assert CaseBook(gov).prune("test", dry_run=True) == BookPrune(2, 0)
    assert _steps(gov) == before
    assert CaseBook(gov).prune("test") == BookPrune(2, 0)
    after = _steps(gov)
    assert after[stays] == before[stays]
    assert after[leaves] == ["opened", "status"]
    kept = CaseBook(gov).get(leaves)
    assert kept is not None and kept.status == "acknowledged" and kept.opened == T0
    raw = (gov.state_dir("cases") / "book.jsonl").read_text()
    assert raw.count("router reset") == 1  # the other case's note only
    # past retention the minimum goes too; the readable case stays whole
    later = datetime.now(UTC) + timedelta(days=gov.config.retention.cases + 1)
    assert CaseBook(gov).prune("test", now=later) == BookPrune(0, 1)
    assert set(_steps(gov)) == {stays}
    purges = [json.loads(e.detail or "{}") for e in gov.audit.entries() if e.event == "purge"]
    assert [(p["store"], p["notes"], p["cases"]) for p in purges] == [
        ("case book", 0, 0),
        ("case book", 2, 0),
        ("case book", 0, 1),
    ]


def test_verdicts_go_after_the_findings_retention(gov: Governance) -> None:
    reviews = Reviews(gov)
    reviews.record("f-1", "M2", "confirmed", "web:analyst1")
    assert reviews.prune("test") == 0
    later = datetime.now(UTC) + timedelta(days=gov.config.retention.findings + 1)
    assert reviews.prune("test", now=later, dry_run=True) == 1
    assert set(Reviews(gov).latest()) == {"f-1"}
    assert reviews.prune("test", now=later) == 1
    assert Reviews(gov).latest() == {}
