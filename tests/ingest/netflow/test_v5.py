from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from mamori.ingest.netflow import Datagram, FlowDecoder
from tests.ingest.netflow.packets import v5, v5_record

EXP = "192.0.2.1"


def decode(payload: bytes, **kw: object) -> tuple[list[dict[str, object]], dict[str, int]]:
    r = FlowDecoder(**kw).decode([Datagram(EXP, payload, 1.7e9)])  # type: ignore[arg-type]
    return r.flows.to_pylist(), dict(r.counters)


def test_fields_and_times() -> None:
    rec = v5_record(
        "10.0.0.1",
        "203.0.113.9",
        40000,
        443,
        packets=7,
        octets=900,
        first=90_000,
        last=99_000,
        flags=0x1B,
        tos=0x20,
        input_if=3,
        output_if=4,
    )
    rows, counters = decode(v5([rec], uptime=100_000, secs=1_700_000_000, nsecs=250_000_000))
    assert counters["records.v5"] == 1
    (row,) = rows
    # export time 1_700_000_000.250 s; boot = export - 100 s; first = boot + 90 s
    assert row["time_start"] == datetime.fromtimestamp(1_699_999_990.250, UTC)
    assert row["time_end"] == datetime.fromtimestamp(1_699_999_999.250, UTC)
    assert (row["src_addr"], row["dst_addr"], row["src_port"], row["dst_port"]) == (
        "10.0.0.1",
        "203.0.113.9",
        40000,
        443,
    )
    assert (row["protocol"], row["tcp_flags"], row["tos"]) == (6, 0x1B, 0x20)
    assert (row["packets"], row["bytes"], row["input_if"], row["output_if"]) == (7, 900, 3, 4)
    assert row["exporter"] == EXP and row["observation_domain"] is None


def test_uptime_wrap() -> None:
    # The flow started just before sysUpTime wrapped past 2**32 ms.
    rec = v5_record("10.0.0.1", "10.0.0.2", 1, 2, first=0xFFFF_FC18, last=500)
    (row,), _ = decode(v5([rec], uptime=1_000, secs=1_700_000_000))
    assert row["time_start"] == datetime.fromtimestamp(1_700_000_000 - 2.0, UTC)
    assert row["time_end"] == datetime.fromtimestamp(1_700_000_000 - 0.5, UTC)


@pytest.mark.parametrize(
    ("header", "rate"),
    [
        (0, None),  # no sampling announced: unknown, never 1
        (0x4000 | 100, 100),  # mode 1, interval 100
        (0x8000 | 0x3FFF, 0x3FFF),  # mode 2, the largest interval
        (0x4000, None),  # a mode but interval 0: unknown
    ],
)
def test_sampling_is_what_the_header_says(header: int, rate: int | None) -> None:
    # Overrides and defaults are not the decoder's business (tests/ingest/test_sampling.py).
    rec = v5_record("10.0.0.1", "10.0.0.2", 1, 2)
    (row,), _ = decode(v5([rec], sampling=header))
    assert row["sampling_rate"] == rate


def test_truncated_packet_keeps_complete_records() -> None:
    recs = [v5_record("10.0.0.1", "10.0.0.2", 1, i) for i in range(3)]
    payload = v5(recs)[:-10]  # third record cut short, count still says 3
    rows, counters = decode(payload)
    assert [r["dst_port"] for r in rows] == [0, 1]
    assert counters["errors.truncated"] == 1
    _, counters = decode(payload[:20])
    assert counters["errors.truncated"] == 1


def test_random_bytes_behind_a_5_are_refused_not_decoded() -> None:
    """A count beyond what v5 allows (30) in a length that does not fit it either: 1.4 KB of
    random bytes would otherwise give 28 garbage records."""
    payload = struct.pack("!HH", 5, 40_000) + bytes(range(256)) * 5 + bytes(116)
    assert len(payload) == 1400
    rows, counters = decode(payload)
    assert rows == [] and counters["errors.bad_count"] == 1
    # A count beyond 30 that the length agrees with is an exporter ignoring the limit: decoded.
    recs = [v5_record("10.0.0.1", "10.0.0.2", 1, i) for i in range(31)]
    rows, counters = decode(v5(recs))
    assert len(rows) == 31 and counters["errors.bad_count"] == 1
