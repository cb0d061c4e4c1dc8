"""Plain CSV allocations."""

from __future__ import annotations

import pytest

from mamori.ingest.allocations import read_allocations
from tests.ingest.allocations.conftest import DATA, at


def test_rows_and_bad_lines() -> None:
    rows, report = read_allocations(DATA / "allocations.csv", "csv")
    got = [
        (r["addr"], r["port_start"], r["subscriber_id"], r["inside_addr"], r["start"], r["end"])
        for r in rows.to_pylist()
    ]
    assert got == [
        ("192.0.2.10", None, "S100", None, at("09:00"), at("10:00")),
        ("192.0.2.11", None, "S101", None, at("01:00"), None),  # +09:00; still held
        ("198.51.100.4", 1024, None, "100.64.0.60", at("09:00"), at("10:00")),  # epoch seconds
        ("198.51.100.4", 2048, "S102", None, at("09:00"), at("11:00")),  # no zone: UTC
    ]
    assert (report.records, report.sessions, report.malformed) == (10, 4, 6)
    assert report.examples["malformed"] == [  # in file order
        "line 6: start is not a time (ISO 8601 or epoch seconds)",
        "line 7: needs exactly one of subscriber_id and inside_addr",
        "line 8: addr is not an IP address",
        "line 9: port_start/port_end: both or neither, 0-65535",
        "line 10: end is before start",
        "line 11: wrong number of fields",
    ]


def test_header_naming_a_column_twice_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "a.csv"
    path.write_bytes(b"start,start,addr,subscriber_id\n1,1,192.0.2.1,S\n")
    with pytest.raises(ValueError, match="names 'start' twice"):
        read_allocations(path, "csv")


def test_carriage_return_inside_a_line_is_that_line_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "a.csv"
    path.write_bytes(
        b"start,addr,subscriber_id\r\n"
        b"1793523600,192.0.2.1,S1\r\n"
        b"1793523600,192.0.2.2\r,S2\r\n"
        b"1793523600,192.0.2.3,S3,extra\r\n"
        b"1793523600,192.0.2.4,S4\r\n"
    )
    rows, report = read_allocations(path, "csv")
    assert rows.column("subscriber_id").to_pylist() == ["S1", "S4"]
    assert report.examples["malformed"] == [
        "line 3: a carriage return inside the line",
        "line 4: wrong number of fields",
    ]


def test_a_quote_left_open_is_that_line_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "a.csv"
    path.write_bytes(
        b'start,addr,subscriber_id\n1793523600,192.0.2.1,"S1"\n1793523600,"192.0.2.2,S2\n'
        b'1793523600,192.0.2.3,"S,3"\n'
    )
    rows, report = read_allocations(path, "csv")
    assert rows.column("subscriber_id").to_pylist() == ["S1", "S,3"]
    assert report.examples["malformed"] == ["line 3: a quote left open"]
