"""The warning page's counts reach the audit log as daily tallies, and the transparency report's
"warnings shown" is rebuilt from those tallies alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from mamori.act.warning_tally import TALLY_EVENT, WarningCounts
from mamori.governance import Governance
from mamori.report.transparency import build_report


def _tallies(gov: Governance) -> list[dict[str, dict[str, dict[str, int]]]]:
    return [
        json.loads(e.detail or "{}")["counts"]
        for e in gov.audit.entries()
        if e.event == TALLY_EVENT
    ]


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


@pytest.mark.parametrize(
    ("views", "seals", "want"),
    [
        # nothing shown: nothing to seal, no entry
        ([], 1, []),
        # two categories, one seal
        (
            [("phishing", "shown"), ("phishing", "shown"), ("malware-site", "continued")],
            1,
            [{"phishing": {"shown": 2}, "malware-site": {"continued": 1}}],
        ),
        # a second seal with nothing new writes nothing
        ([("phishing", "shown")], 2, [{"phishing": {"shown": 1}}]),
    ],
)
def test_seal_audits_what_the_counts_hold_beyond_the_last_seal(
    gov: Governance,
    views: list[tuple[str, str]],
    seals: int,
    want: list[dict[str, dict[str, int]]],
) -> None:
    counts = WarningCounts(gov.state_dir("warning"))
    for category, event in views:
        counts.add(category, event)
    for _ in range(seals):
        counts.seal(gov.audit, actor="t")
    assert _tallies(gov) == [{_today(): w} for w in want]
    assert all(e.measure == "M8" for e in gov.audit.entries() if e.event == TALLY_EVENT)


def test_a_later_seal_holds_only_the_increase(gov: Governance) -> None:
    counts = WarningCounts(gov.state_dir("warning"))
    counts.add("phishing", "shown")
    counts.seal(gov.audit, actor="t")
    counts.add("phishing", "shown")
    counts.add("phishing", "shown")
    counts.seal(gov.audit, actor="t")
    day = _today()
    assert _tallies(gov) == [{day: {"phishing": {"shown": 1}}}, {day: {"phishing": {"shown": 2}}}]
    assert counts.read()[day]["phishing"]["shown"] == 3


def test_the_first_view_of_a_day_seals_the_days_before_it(gov: Governance) -> None:
    counts = WarningCounts(gov.state_dir("warning"), gov.audit)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    counts.path.write_text(json.dumps({yesterday: {"phishing": {"shown": 4}}}), encoding="utf-8")
    counts.add("phishing", "shown")  # today's first view closes yesterday
    assert _tallies(gov) == [{yesterday: {"phishing": {"shown": 4}}}]
    counts.add("phishing", "shown")  # not a new day: nothing more is sealed
    assert len(_tallies(gov)) == 1
    assert gov.audit.verify().ok


def test_the_report_counts_warnings_shown_from_the_log(gov: Governance) -> None:
    counts = WarningCounts(gov.state_dir("warning"), gov.audit)
    for _ in range(3):
        counts.add("phishing", "shown")
    counts.add("phishing", "continued")
    now = datetime.now(UTC)
    report = build_report(gov, f"{now:%Y-%m}", actor="auditor:t", now=now)
    assert report.warnings_shown == {"phishing": 3}
    # the report sealed the counts first: the log alone gives the same figure
    from_log = sum(c.get("shown", 0) for t in _tallies(gov) for d in t.values() for c in d.values())
    assert from_log == 3
    # a count file changed behind the log's back does not change the report: the log is what
    # the report reads (a tampered or lost counts file cannot inflate or erase the figure)
    counts.path.write_text("{}", encoding="utf-8")
    again = build_report(gov, f"{now:%Y-%m}", actor="auditor:t", now=now)
    assert again.warnings_shown == {"phishing": 3}


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", "\x00\x01"])
def test_a_damaged_counts_file_does_not_stop_the_page_or_the_seal(
    gov: Governance, text: str
) -> None:
    counts = WarningCounts(gov.state_dir("warning"), gov.audit)
    counts.path.parent.mkdir(parents=True, exist_ok=True)
    counts.path.write_text(text, encoding="utf-8")
    counts.add("phishing", "shown")  # counting goes on from what can be read
    assert counts.read() == {_today(): {"phishing": {"shown": 1}}}
    counts.seal(gov.audit, actor="t")
    assert _tallies(gov) == [{_today(): {"phishing": {"shown": 1}}}]
    assert gov.audit.verify().ok
