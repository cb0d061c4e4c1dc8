"""Juniper CGNAT port-block syslog → two-stage rows (public address + block → inside address)."""

from __future__ import annotations

from pathlib import Path

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


def _line(hhmmss: str, event: str, inside: str, block: str) -> str:
    epoch = int(at(hhmmss).timestamp())
    return (
        f"Nov  1 {hhmmss} cgn1 {{sp-1/0/0}}[jservices-nat]: JSERVICES_NAT_PORT_BLOCK_{event}: "
        f"{inside} -> 198.51.100.2:{block} 0x{epoch:x}\n"
    )


def test_lost_releases_do_not_merge_or_cut_sessions(tmp_path: Path) -> None:
    """A block given back to an inside address after another holder starts a new session (the
    releases in between were lost); a stray release names nobody's start and closes nothing."""
    log = tmp_path / "cgn.log"
    log.write_text(
        _line("09:00:00", "ALLOC", "100.64.0.44", "1024-1535")
        + _line("09:10:00", "ALLOC", "100.64.0.46", "1024-1535")
        + _line("09:20:00", "ALLOC", "100.64.0.44", "1024-1535")
        + _line("09:30:00", "RELEASE", "100.64.0.44", "1024-1535")
        + _line("09:00:00", "ALLOC", "100.64.0.48", "2048-2559")
        + _line("09:00:00", "RELEASE", "100.64.0.47", "2048-2559")
    )
    rows, report = read_allocations(log, "cgnat-syslog", timeout_s=3600)
    got = sorted(
        (r["port_start"], r["start"], r["end"], r["inside_addr"]) for r in rows.to_pylist()
    )
    assert got == [
        (1024, at("09:00"), at("09:10"), "100.64.0.44"),  # closed by the next holder
        (1024, at("09:10"), at("09:20"), "100.64.0.46"),
        (1024, at("09:20"), at("09:30"), "100.64.0.44"),  # released
        (2048, at("09:00"), at("10:00"), "100.64.0.48"),  # not cut by the stray release
    ]
    assert (report.skipped, report.overlaps) == (1, 0)
    assert report.examples["skipped"] == ["line 6: a release without its allocation (skipped)"]
