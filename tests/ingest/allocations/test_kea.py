"""Kea DHCPv4 memfile leases → sessions."""

from __future__ import annotations

from mamori.ingest.allocations import SubscriberMap, read_allocations
from tests.ingest.allocations.conftest import DATA, at


def test_sessions_and_report() -> None:
    rows, report = read_allocations(DATA / "kea-leases4.csv", "kea")
    got = sorted((r["addr"], r["subscriber_id"], r["start"], r["end"]) for r in rows.to_pylist())
    assert got == [
        # allocated 09:00, renewed 10:00, released 11:30
        ("10.32.0.10", "02:5a:00:00:00:0a", at("09:00"), at("11:30")),
        # the address's next client; the lease runs out at 14:30
        ("10.32.0.10", "02:5a:00:00:00:0b", at("12:30"), at("14:30")),
        ("10.32.0.11", "02:5a:00:00:00:0c", at("09:00"), at("10:00")),  # expired
        ("10.32.0.11", "02:5a:00:00:00:0d", at("12:00"), at("13:00")),
    ]
    assert (report.records, report.sessions, report.malformed, report.skipped) == (10, 4, 2, 2)
    assert (report.closed_by_stop, report.closed_by_timeout, report.open_at_end) == (1, 3, 2)
    assert report.examples["malformed"] == [  # in file order
        "line 9: valid_lifetime or expire is not a number",
        "line 10: wrong number of fields",
    ]
    assert report.examples["skipped"] == ["line 11: a release without its allocation (skipped)"]


def test_hostname_as_subscriber_key() -> None:
    rows, _ = read_allocations(
        DATA / "kea-leases4.csv",
        "kea",
        kea_key="hostname",
        subscribers=SubscriberMap(pattern=r"^host-0*(?P<id>\d+)$"),
    )
    assert sorted(rows.column("subscriber_id").to_pylist()) == ["10", "11", "12", "13"]


def test_not_a_lease_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    try:
        read_allocations(path, "kea")
    except ValueError as exc:
        assert "not a Kea lease file" in str(exc)
    else:
        raise AssertionError("expected a clear error")
