"""Windows of days: per-day aggregates (flow_days) are built once under M2, read through a grant,
and hold the same host–endpoint evidence as the raw records they summarise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mamori.detect.c2 import C2Params, run_c2
from mamori.detect.flowdays import FlowDaysParams, aggregate_days, open_window
from mamori.detect.flowview import open_oriented
from mamori.governance import Governance
from tests.detect.conftest import T0, UNKNOWN_CC, load_reputation, synthetic_flows

DAYS = 4
SINCE = datetime(T0.year, T0.month, T0.day, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=DAYS)


def _load_days(gov: Governance) -> None:
    """The synthetic ISP's six busy hours, on each of ``DAYS`` days."""
    base = synthetic_flows(0)
    for d in range(DAYS):
        shift = pa.scalar(timedelta(days=d), pa.duration("ms"))
        t = base
        for col in ("time_start", "time_end"):
            i = t.column_names.index(col)
            t = t.set_column(i, col, pc.add(t.column(col), shift))
        gov.write("M1", "flows", t, "collector")
    load_reputation(gov)


def _pairs(gov: Governance, view_name: str, box: object) -> set[tuple[str, str, int, int]]:
    rows = gov_sql(box, f"SELECT DISTINCT host, ext, eport, proto FROM {view_name} WHERE est")
    return {(h, e, int(p), int(pr)) for h, e, p, pr in rows}


def gov_sql(box: object, q: str) -> list[tuple[Any, ...]]:
    return box.sql(q).fetchall()  # type: ignore[attr-defined, no-any-return]


def test_aggregates_built_once_and_keep_the_pairs(gov: Governance) -> None:
    _load_days(gov)
    written = aggregate_days(gov, "test", since=SINCE, until=UNTIL)
    assert [d.date() for d in written] == [(SINCE + timedelta(days=d)).date() for d in range(DAYS)]
    assert aggregate_days(gov, "test", since=SINCE, until=UNTIL) == []  # already there
    box = gov.sandbox(label="test")
    try:
        agg = open_window(gov, "test", since=SINCE, until=UNTIL, sandbox=box,
                          params=FlowDaysParams(raw_days=1, build_missing=False))  # fmt: skip
        assert agg.aggregated_days == DAYS - 1
        assert agg.raw_name is not None and agg.timing().name == agg.raw_name
        raw_rows = gov_sql(box, f"SELECT min(ts) FROM {agg.raw_name}")[0][0]
        assert raw_rows >= (UNTIL - timedelta(days=1)).timestamp()  # only the last day is raw
        raw = open_oriented(gov, "test", since=SINCE, until=UNTIL, sandbox=box)
        assert _pairs(gov, agg.name, box) == _pairs(gov, raw.name, box)
        n_agg = gov_sql(box, f"SELECT count(*) FROM {agg.name}")[0][0]
        n_raw = gov_sql(box, f"SELECT count(*) FROM {raw.name}")[0][0]
        assert n_agg < n_raw  # compact: the same evidence in fewer rows
    finally:
        box.close()
    entries = [e for e in gov.audit.entries() if e.dataset == "flow_days"]
    assert {e.event for e in entries} >= {"access", "write"}
    assert all(e.measure == "M2" for e in entries)


@pytest.mark.slow  # two C&C runs over four days
@pytest.mark.parametrize(
    ("min_window_days", "aggregated"),
    [(2.0, DAYS - 1), (30.0, 0)],  # a long window reads aggregates; a short one raw records
)
def test_c2_over_days_finds_the_unknown_cc(
    gov: Governance, min_window_days: float, aggregated: int
) -> None:
    _load_days(gov)
    # the test world's Internet is the documentation ranges (tests/detect/conftest.py)
    p = C2Params(days=FlowDaysParams(min_window_days=min_window_days), report_documentation=True)
    run = run_c2(gov, actor="test", since=SINCE, until=UNTIL, methods=("correlation",),
                 params=p, write=False)  # fmt: skip
    assert run.summary["aggregated_days"] == aggregated
    found = {(r["ip"], r["port"]) for r in run.findings.to_pylist()}
    assert UNKNOWN_CC in found
