"""Reads made ahead of page views (:mod:`mamori.web.warm`): governed and audited as the console's
own, made again only when the audit log shows a change to their dataset, and each page view that
uses them still writes its own access entry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from mamori.governance import Governance
from mamori.governance.roles import FINDING_MEASURES
from mamori.schemas import FINDINGS
from mamori.web import data, grantcache, warm
from mamori.web.app import create_app
from tests.conftest import make_config
from tests.web.conftest import T0, _t, populate


@pytest.fixture
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Governance]:
    g = Governance(make_config(tmp_path_factory.mktemp("warm") / "store"))
    populate(g)
    yield g
    g.close()


def _accesses(gov: Governance, since: int) -> list[tuple[str, str | None, str | None, bool]]:
    return [
        (e.actor, e.measure, e.dataset, bool(json.loads(e.detail or "{}").get("cached")))
        for e in list(gov.audit.entries())[since:]
        if e.event in ("access", "refused")
    ]


def _n(gov: Governance) -> int:
    return sum(1 for _ in gov.audit.entries())


def test_reads_ahead_then_only_what_changed(gov: Governance) -> None:
    w = warm.Warmer(gov, interval_s=60)
    pairs = list(warm.pairs(gov))
    assert ("M2", "findings") in pairs and ("M5", "notifications") in pairs
    before = _n(gov)
    assert w.run_once() == len(pairs)
    made = _accesses(gov, before)
    # each read ahead is a governed access of the console's own, never served from a cache
    assert {(m, d) for a, m, d, c in made if a == warm.ACTOR and not c} == set(pairs)
    assert all(a == warm.ACTOR and not c for a, _, _, c in made)
    # nothing changed: nothing is read again, nothing is written to the log
    before = _n(gov)
    assert w.run_once() == 0 and _n(gov) == before
    # a page view uses the rows read ahead and writes its own access entry for each measure
    table = data.findings_table(gov, FINDING_MEASURES, "web:analyst1").table
    assert table.num_rows > 0
    viewed = _accesses(gov, before)
    assert viewed and all(a == "web:analyst1" and c for a, _, _, c in viewed)
    # a new finding: findings are read again ahead of the next page, nothing else
    finding = {"detected": T0 + timedelta(hours=1), "finding_id": "f-new", "kind": "c2"}
    gov.write("M2", "findings", _t([{**finding, "measure": "M2"}], FINDINGS.arrow), "test")
    before = _n(gov)
    again = w.run_once()
    assert again == sum(1 for _, d in pairs if d == "findings")
    assert {d for _, _, d, _ in _accesses(gov, before)} == {"findings"}
    before = _n(gov)
    t = data.findings_table(gov, FINDING_MEASURES, "web:analyst1").table
    assert "f-new" in t.column("finding_id").to_pylist()
    assert all(c for _, _, _, c in _accesses(gov, before))  # served from the reads made ahead


def test_served_console_reads_ahead_in_the_background(gov: Governance) -> None:
    app = create_app(gov, warm=True)
    w: warm.Warmer = app.state.warmer
    try:
        assert w.done.wait(timeout=120)
        assert all(grantcache.is_fresh(gov, m, d, None) for m, d in warm.pairs(gov))
    finally:
        w.stop()
    assert create_app(gov).state.warmer is None  # tests and tools: off unless asked for
