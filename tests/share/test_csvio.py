"""CSV: the header, the times, and bad lines counted with the rest kept."""

from __future__ import annotations

import pytest

from mamori.share.csvio import csv_to_list, list_to_csv
from mamori.share.stix import ParseReport
from tests.share.test_stix import CASES, _list


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip(case: str) -> None:
    table = _list(CASES[case])
    data = list_to_csv(table)
    assert data.splitlines()[0] == (
        b'"ip","port","protocol","first_seen","last_seen","confidence","method"'
    )
    report = ParseReport()
    assert csv_to_list(data, report).equals(table)
    assert report.skipped == 0


def test_times_are_iso_utc() -> None:
    line = list_to_csv(_list(CASES["v4 tcp"])).splitlines()[1]
    assert b'"2026-11-01T10:00:00.000Z","2026-11-01T11:00:00.000Z"' in line


@pytest.mark.parametrize(
    ("body", "kept", "skipped"),
    [
        (b"ip,port\n203.0.113.1,80\n", 1, 0),
        (b"ip,port\n203.0.113.1,80\n,81\n203.0.113.3,82\n", 2, 1),  # missing ip
        (b"ip,port,confidence\n203.0.113.1,80,2.5\n203.0.113.2,80,0.5\n", 1, 1),
        (b"ip,first_seen\n203.0.113.1,yesterday\n203.0.113.2,2026-11-01T00:00:00Z\n", 1, 1),
        (b"ip,port\n203.0.113.1,80,extra\n203.0.113.2,80\n", 1, 1),
        (b"", 0, 1),
    ],
)
def test_bad_lines(body: bytes, kept: int, skipped: int) -> None:
    report = ParseReport()
    assert csv_to_list(body, report).num_rows == kept
    assert report.skipped == skipped
