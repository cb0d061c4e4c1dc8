"""Juniper CGNAT port-block syslog → two-stage rows (public address + block → inside address)."""

from __future__ import annotations

from mamori.ingest.allocations import read_allocations
from tests.ingest.allocations.conftest import DATA, at


def test_port_blocks() -> None:
    rows, report = read_allocations(DATA / "cgnat.log", "cgnat-syslog", timeout_s=7200)
    got = sorted(
        (r["addr"], r["port_start"], r["port_end"], r["inside_addr"], r["start"], r["end"])
        for r in rows.to_pylist()
    )
    assert got == [
        ("198.51.100.2", 28160, 28671, "100.64.0.44", at("09:00"), at("10:00")),  # released
        ("198.51.100.2", 28160, 28671, "100.64.0.46", at("10:00:10"), at("12:00:10")),
        ("198.51.100.2", 28672, 29183, "100.64.0.45", at("09:00:03"), at("11:00:03")),
        # the CGN's own time (the hex field), not the collector's syslog header
        ("198.51.100.3", 1024, 1535, "100.64.0.48", at("10:20"), at("12:20")),
    ]
    assert rows.column("subscriber_id").null_count == rows.num_rows  # named at lookup
    assert (report.records, report.sessions, report.skipped) == (8, 4, 1)
    assert (report.malformed, report.clock_skew) == (2, 1)
    assert report.examples["malformed"][0].startswith("line 7: not a port-block line")
    assert report.examples["malformed"][1].startswith("line 9:")
    assert report.examples["clock_skew"] == [
        "line 8: syslog time and the CGN's time differ by 90 s"
    ]
    assert (report.closed_by_stop, report.closed_by_timeout) == (1, 3)
