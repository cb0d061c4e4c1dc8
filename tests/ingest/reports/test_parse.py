"""Report parsing: every format, good records kept, bad ones reported with their line numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mamori.ingest.reports import ReportFormat, parse_report, parse_report_text

DATA = Path(__file__).parents[2] / "data" / "reports"


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


CASES = [
    (
        "event4_sinkhole.csv",
        "shadowserver",
        [
            ("10.16.0.120", 50329, "2026-11-02T00:18:19", "emotet"),
            ("10.16.0.94", 56485, "2026-11-02T00:03:11", "emotet"),
            ("10.64.0.2", 33301, "2026-11-02T01:25:17", "mirai"),
        ],
        [5, 6, 7],
    ),
    (
        "scan_dns.csv",
        "shadowserver",
        [
            ("10.48.0.10", 53, "2026-11-02T00:00:00", None),
            ("10.48.0.11", 53, "2026-11-02T00:00:01", None),
        ],
        [4],
    ),
    (
        "plain.json",
        "json",
        [
            ("10.16.0.7", 62890, "2026-11-02T00:00:41", "emotet"),
            ("10.16.0.94", 56485, "2026-11-02T00:03:11", None),
            ("2001:db8::5", 4444, "2026-11-02T00:00:00", None),
        ],
        [3, 4, 5],
    ),
    (
        "xarf.jsonl",
        "xarf",
        [
            ("10.16.0.120", 50329, "2026-11-02T00:18:19", "emotet"),
            ("10.16.0.51", None, "2026-11-02T00:22:09", "cve-2017-17215"),
        ],
        [3],
    ),
]


@pytest.mark.parametrize(("name", "fmt", "good", "bad_lines"), CASES)
def test_formats(
    name: str,
    fmt: str,
    good: list[tuple[str, int | None, str, str | None]],
    bad_lines: list[int],
) -> None:
    p = parse_report(DATA / name, fmt)
    got = [(r["ip"], r["port"], r["ts"], r["label"]) for r in p.table.to_pylist()]
    assert got == [(ip, port, _t(ts), label) for ip, port, ts, label in good]
    assert [b.line for b in p.bad] == bad_lines
    assert p.records == len(good) + len(bad_lines)
    assert all(b.reason for b in p.bad)


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("2026-11-02T00:00:41Z", "2026-11-02T00:00:41"),
        ("2026-11-02 00:00:41", "2026-11-02T00:00:41"),
        ("2026-11-02T09:00:41+09:00", "2026-11-02T00:00:41"),
        ("2026-11-02T00:00:41.25Z", "2026-11-02T00:00:41.250"),
        ("1793577600", "2026-11-02T00:00:00"),
    ],
)
def test_time_forms(text: str, ts: str) -> None:
    p = parse_report_text(f"ip,timestamp\n192.0.2.1,{text}\n", ReportFormat.CSV)
    assert p.bad == []
    assert p.table.column("ts").to_pylist() == [_t(ts)]


def test_bad_lines_do_not_lose_the_good_ones_around_them() -> None:
    rows = ["timestamp,ip,port"]
    for i in range(1, 201):
        rows.append(f"2026-11-02T00:00:{i % 60:02d}Z,10.0.{i // 256}.{i % 256},{1000 + i}")
        if i % 50 == 0:
            rows.append("garbage,999.1.1.1,-1")
    p = parse_report_text("\n".join(rows) + "\n", "csv")
    assert p.good == 200
    assert len(p.bad) == 4
    # line 1 is the header; the garbage follows every 50th record
    assert [b.line for b in p.bad] == [52, 103, 154, 205]


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("foo,bar\n1,2\n", "csv", "no address"),
        ("ip,bar\n1,2\n", "csv", "no time"),
        ("a,b\n1,2\n", "shadowserver", "not a Shadowserver report"),
    ],
)
def test_wrong_kind_of_file_is_a_clear_error(text: str, fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_report_text(text, fmt)


def test_a_row_the_csv_reader_cannot_read_is_bad_and_the_rest_kept() -> None:
    text = (
        "timestamp,ip\n"
        "2026-11-02T00:00:00Z,10.0.0.1\n"
        "2026-11-02T00:00:01Z,10.0.0.2\r,x\n"  # a carriage return inside the line
        "2026-11-02T00:00:02Z,10.0.0.3\n"
    )
    p = parse_report_text(text, "csv")
    assert p.table.column("line").to_pylist() == [2, 4]
    assert [b.line for b in p.bad] == [3] and "unreadable CSV" in p.bad[0].reason


def test_simulator_reports() -> None:
    text = (
        "timestamp,ip,port,issue\n"
        "2026-11-02T02:57:04Z,10.64.0.2,23,telnet-weak-password\n"
        "2026-11-02T00:22:09Z,10.16.0.51,23,telnet-weak-password\n"
    )
    p = parse_report_text(text, "csv")
    assert p.table.column("label").to_pylist() == ["telnet-weak-password"] * 2
    assert p.table.column("line").to_pylist() == [2, 3]
