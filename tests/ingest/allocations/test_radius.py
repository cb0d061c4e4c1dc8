"""FreeRADIUS detail files → sessions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mamori.ingest.allocations import SubscriberMap, read_allocations
from tests.ingest.allocations.conftest import DATA, at

TIMEOUT = 3600.0


def _rows() -> tuple[dict[str, tuple[object, ...]], object]:
    rows, report = read_allocations(
        DATA / "radius-detail",
        "radius",
        subscribers=SubscriberMap(pattern=r"^u0*(\d+)@"),
        timeout_s=TIMEOUT,
    )
    by_sub = {
        r["subscriber_id"]: (r["addr"], r["start"], r["end"], r["session_id"])
        for r in rows.to_pylist()
    }
    return by_sub, report


def test_sessions() -> None:
    by_sub, _ = _rows()
    hour = timedelta(seconds=TIMEOUT)
    assert by_sub == {
        # Start, Interim, Stop (event time from Event-Timestamp; the Stop came 5 s late)
        "1": ("10.16.0.5", at("09:00"), at("10:30"), "9f1c2a7b3e01"),
        # no Stop: closed when the address was given to subscriber 3
        "2": ("10.16.0.5", at("10:31"), at("11:00"), "9f1c2a7b3e02"),
        "3": ("10.16.0.5", at("11:00"), at("11:00") + hour, "9f1c2a7b3e03"),
        # only an Interim-Update: its Acct-Session-Time says when the session began
        "4": ("10.16.0.9", at("09:05"), at("11:05") + hour, "10.0.9.2/0000B001"),
        # the NAS's clock (Event-Timestamp) is used
        "5": ("10.16.0.20", at("11:19"), at("11:19") + hour, "10.0.9.2/0000C001"),
        # the Stop arrived after the next holder's Start: both kept, overlap reported
        "7": ("10.16.0.30", at("11:40"), at("11:52"), "10.0.9.2/0000D001"),
        "8": ("10.16.0.30", at("11:50"), at("11:50") + hour, "10.0.9.2/0000D002"),
    }


def test_report_counts_every_problem_with_line_numbers() -> None:
    _, report = _rows()
    # the Accounting-On (line 79) is used, not skipped: its NAS has no open session to end
    assert (report.records, report.skipped, report.sessions) == (12, 0, 7)
    assert report.closed_by_nas_restart == 0
    assert (report.closed_by_stop, report.closed_by_next, report.closed_by_timeout) == (2, 1, 4)
    assert report.open_at_end == 4  # subscribers 3, 4, 5 and 8: within the timeout at 11:52
    assert (report.malformed, report.clock_skew, report.overlaps) == (2, 1, 1)
    assert report.examples["malformed"] == [  # in file order
        "line 95: accounting record without Framed-IP-Address",
        "line 100: not an 'Attribute = value' line",
    ]
    assert report.examples["clock_skew"] == [
        "line 85: Event-Timestamp differs from the server's time by 60 s"
    ]
    assert "10.16.0.30" in report.examples["overlaps"][0]
    assert "120 s" in report.examples["overlaps"][0]


def test_subscriber_map_from_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    directory = DATA / "subscribers.csv"
    rows, report = read_allocations(
        DATA / "radius-detail",
        "radius",
        subscribers=SubscriberMap.from_csv(directory, "user_name"),
    )
    # the directory knows subscribers 1-3; the other sessions' users map to nobody
    assert sorted(rows.column("subscriber_id").to_pylist()) == ["1", "2", "3"]
    assert report.unmapped == 4
    assert report.examples["unmapped"][0].endswith("maps to no subscriber id")


def test_without_mapping_the_user_name_is_the_id() -> None:
    rows, _ = read_allocations(DATA / "radius-detail", "radius")
    assert "u0000001@isp.example.jp" in rows.column("subscriber_id").to_pylist()


def test_garbage_file_is_reported_not_raised(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "detail"
    path.write_bytes(b"\tUser-Name = orphan\n\xff\xfe binary junk\n\n")
    rows, report = read_allocations(path, "radius")
    assert rows.num_rows == 0
    assert report.malformed >= 1 and report.examples["malformed"][0].startswith("line 1:")


def _packet(status: str, hhmm: str, nas: str | None, sid: str = "", user: str = "") -> str:
    t = at(hhmm)
    attrs = [f"Acct-Status-Type = {status}"]
    if sid:
        attrs += [f'Acct-Session-Id = "{sid}"', f'User-Name = "{user}"']
        attrs.append(f"Framed-IP-Address = 10.16.1.{int(sid[-2:])}")
    if nas:
        attrs.append(f"NAS-IP-Address = {nas}")
    attrs.append(f"Timestamp = {int(t.timestamp())}")
    return t.strftime("%a %b %d %H:%M:%S %Y") + "\n" + "".join(f"\t{a}\n" for a in attrs) + "\n"


NAS1, NAS2 = "10.0.9.1", "10.0.9.2"
# (what it shows, packets in file order, the session's end for user "u", closed how)
RESTART_CASES = [
    (
        "Accounting-On ends the open session of its NAS",
        [("Start", "09:00", NAS1, "s01"), ("Accounting-On", "09:30", NAS1)],
        "09:30",
        "closed_by_nas_restart",
    ),
    (
        "Accounting-Off after an Interim-Update ends it too",
        [
            ("Start", "09:00", NAS1, "s02"),
            ("Interim-Update", "09:20", NAS1, "s02"),
            ("Accounting-Off", "09:30", NAS1),
        ],
        "09:30",
        "closed_by_nas_restart",
    ),
    (
        "another NAS's restart leaves the session to its timeout",
        [("Start", "09:00", NAS2, "s03"), ("Accounting-On", "09:30", NAS1)],
        "10:00",
        "closed_by_timeout",
    ),
    (
        "a real Stop before the restart stands",
        [
            ("Start", "09:00", NAS1, "s04"),
            ("Stop", "09:10", NAS1, "s04"),
            ("Accounting-On", "09:30", NAS1),
        ],
        "09:10",
        "closed_by_stop",
    ),
    (
        "a session that had timed out before the restart keeps its timeout",
        [("Start", "08:00", NAS1, "s05"), ("Accounting-On", "09:30", NAS1)],
        "09:00",
        "closed_by_timeout",
    ),
    (
        "a session started after the restart is not ended by it",
        [("Accounting-On", "09:30", NAS1), ("Start", "09:40", NAS1, "s06")],
        "10:40",
        "closed_by_timeout",
    ),
    (
        "the first restart after the session's last record is the one that ends it",
        [
            ("Accounting-On", "08:50", NAS1),
            ("Start", "09:00", NAS1, "s07"),
            ("Accounting-Off", "09:15", NAS1),
            ("Accounting-On", "09:20", NAS1),
        ],
        "09:15",
        "closed_by_nas_restart",
    ),
]


@pytest.mark.parametrize(
    ("packets", "end", "closed"), [c[1:] for c in RESTART_CASES], ids=[c[0] for c in RESTART_CASES]
)
def test_nas_restart_ends_open_sessions(
    tmp_path: Path, packets: list[tuple[str, ...]], end: str, closed: str
) -> None:
    path = tmp_path / "detail"
    path.write_text(
        "".join(_packet(p[0], p[1], p[2], *(p[3:] and (p[3], "u")) or ()) for p in packets)
    )
    rows, report = read_allocations(path, "radius", timeout_s=TIMEOUT)
    assert rows.column("end").to_pylist() == [at(end)]
    assert getattr(report, closed) == 1
    assert report.skipped == report.malformed == 0
    assert (
        report.closed_by_stop
        + report.closed_by_next
        + report.closed_by_timeout
        + report.closed_by_nas_restart
    ) == 1


def test_restart_without_nas_address_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "detail"
    path.write_text(
        _packet("Start", "09:00", NAS1, "s01", "u") + _packet("Accounting-On", "09:30", None)
    )
    rows, report = read_allocations(path, "radius", timeout_s=TIMEOUT)
    assert rows.column("end").to_pylist() == [at("10:00")]  # the session itself is kept
    assert report.malformed == 1
    assert report.examples["malformed"] == [
        "line 9: Accounting-On/Off without NAS-IP-Address: which sessions ended is unknown"
    ]
