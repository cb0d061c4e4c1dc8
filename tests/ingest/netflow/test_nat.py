"""IPFIX NAT event records (RFC 8158) in the decoder: templates with natEvent give NAT rows, never
flows, on the vectorised and the per-datagram path alike."""

from __future__ import annotations

import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from mamori.ingest.netflow import Datagram, FlowDecoder
from tests.ingest.netflow import packets as pk
from tests.ingest.netflow.packets import NAT_ALLOC, NAT_BLOCK_FIELDS, NAT_DEALLOC, nat_block
from tests.ingest.reference_tools import require

MS = 1_790_000_000_000
EXPORT = 1_790_000_100
FLOW_FIELDS = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (152, 8), (153, 8))


def _flow(src: str, dst: str) -> bytes:
    return struct.pack("!4s4sHHBIIQQ", pk.ip4(src), pk.ip4(dst), 40000, 443, 6, 1, 60, MS, MS + 10)


def _decode(*messages: bytes) -> list[tuple[pa.Table, pa.Table, dict[str, int]]]:
    """Each message's flows, NAT rows and counters, by both decoding paths."""
    out = []
    for path in ("decode", "decode_reference"):
        decoder = FlowDecoder()
        for m in messages:
            r = getattr(decoder, path)([Datagram("192.0.2.9", m, EXPORT)])
        out.append((r.flows, r.nat, dict(r.counters)))
    return out


# (name, template fields, record bytes, expected NAT row subset, expected counters)
CASES = [
    (
        "allocation",
        NAT_BLOCK_FIELDS,
        nat_block(MS, "100.64.0.5", "198.51.100.1", 1024, 2047, NAT_ALLOC),
        {
            "ts": MS,
            "event": 16,
            "inside": "100.64.0.5",
            "outside": "198.51.100.1",
            "port_start": 1024,
            "port_end": 2047,
            "port_count": None,
        },
        {"nat.records": 1},
    ),
    (
        "number of ports, pool and instance, no end",
        ((323, 8), (8, 4), (225, 4), (361, 2), (364, 2), (363, 2), (283, 4), (463, 4), (230, 1)),
        struct.pack(
            "!Q4s4sHHHIIB", MS, pk.ip4("100.64.0.5"), pk.ip4("198.51.100.1"), 4096, 512, 1, 7, 3, 17
        ),
        {
            "event": 17,
            "port_start": 4096,
            "port_end": None,
            "port_count": 512,
            "port_step": 1,
            "pool_id": 7,
            "instance_id": 3,
        },
        {"nat.records": 1},
    ),
    (
        "DS-Lite: an IPv6 inside address (sourceIPv6Address)",
        ((323, 8), (27, 16), (225, 4), (361, 2), (362, 2), (230, 1)),
        struct.pack(
            "!Q16s4sHHB",
            MS,
            bytes.fromhex("20010db8" + "00" * 11 + "01"),
            pk.ip4("198.51.100.1"),
            1024,
            2047,
            16,
        ),
        {"inside": "2001:db8::1", "outside": "198.51.100.1"},
        {"nat.records": 1},
    ),
    (
        "no observation time: the export time",
        ((8, 4), (225, 4), (361, 2), (362, 2), (230, 1)),
        struct.pack("!4s4sHHB", pk.ip4("100.64.0.5"), pk.ip4("198.51.100.1"), 1024, 2047, 16),
        {"ts": 1_700_000_000 * 1000},
        {"nat.records": 1, "nat.time_from_export": 1},
    ),
    (
        "observationTimeSeconds",
        ((322, 4), (8, 4), (225, 4), (361, 2), (362, 2), (230, 1)),
        struct.pack(
            "!I4s4sHHB", MS // 1000, pk.ip4("100.64.0.5"), pk.ip4("198.51.100.1"), 1024, 2047, 16
        ),
        {"ts": MS},
        {"nat.records": 1},
    ),
    (
        "variable-length natPoolName is walked and skipped",
        ((323, 8), (284, 0xFFFF), (8, 4), (225, 4), (361, 2), (362, 2), (230, 1)),
        struct.pack("!Q", MS)
        + b"\x04pool"
        + struct.pack("!4s4sHHB", pk.ip4("100.64.0.5"), pk.ip4("198.51.100.1"), 1024, 2047, 16),
        {"ts": MS, "inside": "100.64.0.5", "port_end": 2047},
        {"nat.records": 1, "records.varlen_walk": 1},
    ),
]


@pytest.mark.parametrize(
    ("fields", "record", "expected", "counts"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_nat_records_become_nat_rows_not_flows(
    fields: tuple[pk.Field, ...],
    record: bytes,
    expected: dict[str, object],
    counts: dict[str, int],
) -> None:
    m = pk.ipfix([pk.ipfix_template(300, fields), pk.set_(300, record)])
    for flows, nat, counters in _decode(m):
        assert flows.num_rows == 0 and counters["records.out"] == 0
        (row,) = nat.to_pylist()
        assert {k: row[k] for k in expected} == expected
        assert row["exporter"] == "192.0.2.9" and row["domain"] == 0
        for key, n in counts.items():
            assert counters.get(key) == n, key


def test_mixed_message_keeps_flows_and_nat_records_apart() -> None:
    m = pk.ipfix(
        [
            pk.ipfix_template(300, NAT_BLOCK_FIELDS),
            pk.ipfix_template(301, FLOW_FIELDS),
            pk.set_(301, _flow("100.64.0.5", "203.0.113.9") + _flow("100.64.0.6", "203.0.113.9")),
            pk.set_(300, nat_block(MS, "100.64.0.5", "198.51.100.1", 1024, 2047, NAT_ALLOC)),
        ]
    )
    for flows, nat, counters in _decode(m):
        assert flows.column("src_addr").to_pylist() == ["100.64.0.5", "100.64.0.6"]
        assert nat.column("inside").to_pylist() == ["100.64.0.5"]
        assert counters["records.ipfix"] == 3 and counters["nat.records"] == 1


def test_netflow_v9_field_230_stays_a_flow() -> None:
    """NetFlow v9 exporters (Cisco ASA NSEL) use 230 for their own event field: only IPFIX
    templates are taken as RFC 8158 NAT logs, so v9 flows are decoded as before."""
    fields = (*FLOW_FIELDS, (230, 1))
    m = pk.v9([pk.v9_template(300, fields), pk.set_(300, _flow("10.0.0.1", "10.0.0.2") + b"\x01")])
    decoder = FlowDecoder()
    r = decoder.decode([Datagram("192.0.2.9", m, EXPORT)])
    assert r.flows.num_rows == 1 and r.nat.num_rows == 0


def test_unreadable_nat_event_is_counted_not_a_flow() -> None:
    fields = ((323, 8), (8, 4), (225, 4), (361, 2), (362, 2), (230, 9))  # 9 bytes: no unsigned8
    record = nat_block(MS, "100.64.0.5", "198.51.100.1", 1024, 2047, 0) + b"\x00" * 8
    m = pk.ipfix([pk.ipfix_template(300, fields), pk.set_(300, record)])
    for flows, nat, counters in _decode(m):
        assert flows.num_rows == 0 and nat.num_rows == 0
        assert counters["nat.errors.bad_field"] == 1


def test_template_withdrawal_ends_nat_decoding_of_that_id() -> None:
    withdraw = pk.set_(2, struct.pack("!HH", 300, 0))
    first = pk.ipfix(
        [
            pk.ipfix_template(300, NAT_BLOCK_FIELDS),
            pk.set_(300, nat_block(MS, "100.64.0.5", "198.51.100.1", 1024, 2047, NAT_ALLOC)),
            withdraw,
        ]
    )
    again = pk.ipfix(
        [pk.ipfix_template(300, FLOW_FIELDS), pk.set_(300, _flow("10.0.0.1", "10.0.0.2"))]
    )
    for path in ("decode", "decode_reference"):
        decoder = FlowDecoder()
        r1 = getattr(decoder, path)([Datagram("192.0.2.9", first, EXPORT)])
        assert r1.nat.num_rows == 1 and r1.counters["templates.withdrawn"] == 1
        r2 = getattr(decoder, path)([Datagram("192.0.2.9", again, EXPORT)])
        assert r2.nat.num_rows == 0 and r2.flows.num_rows == 1


def _pcap(payload: bytes, path: Path) -> None:
    """One UDP datagram to the IPFIX port (4739) in a classic pcap file (Ethernet, IPv4)."""
    udp = struct.pack("!HHHH", 40000, 4739, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        pk.ip4("192.0.2.9"),
        pk.ip4("192.0.2.1"),
    )
    frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    path.write_bytes(head + struct.pack("<IIII", EXPORT, 0, len(frame), len(frame)) + frame)


def test_hand_built_nat_message_reads_the_same_in_tshark(tmp_path: Path) -> None:
    """An independent dissector (Wireshark's, tshark 4.0) reads our RFC 7011/8158 bytes as the
    same NAT events our decoder does."""
    require("tshark")
    records = [
        (MS, "100.64.0.5", "198.51.100.1", 1024, 2047, NAT_ALLOC),
        (MS + 5, "100.64.0.6", "198.51.100.2", 2048, 3071, NAT_DEALLOC),
    ]
    m = pk.ipfix(
        [
            pk.ipfix_template(300, NAT_BLOCK_FIELDS),
            pk.set_(300, b"".join(nat_block(*r) for r in records)),
        ]
    )
    _pcap(m, tmp_path / "nat.pcap")
    names = [
        "nat_event",
        "srcaddr",
        "post_natsource_ipv4_address",
        "port_range_start",
        "port_range_end",
        "observation_time_milliseconds",
    ]
    out = (
        subprocess.run(
            [
                "tshark",
                "-r",
                str(tmp_path / "nat.pcap"),
                "-T",
                "fields",
                "-E",
                "occurrence=a",
                "-E",
                "aggregator=|",
                *(x for n in names for x in ("-e", f"cflow.{n}")),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.rstrip("\n")
        .split("\t")
    )
    cols = [c.split("|") for c in out]
    times = [
        int(
            datetime.strptime(t[:-7], "%b %d, %Y %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
            * 1000
        )
        for t in cols[5]  # "Sep 21, 2026 14:13:20.005000000 UTC": nanoseconds cut to micro
    ]
    theirs = [
        (t, ins, out_, int(lo), int(hi), int(ev))
        for t, ins, out_, lo, hi, ev in zip(
            times, cols[1], cols[2], cols[3], cols[4], cols[0], strict=True
        )
    ]
    (flows, nat, _), _ = _decode(m)
    assert flows.num_rows == 0
    ours = [
        (r["ts"], r["inside"], r["outside"], r["port_start"], r["port_end"], r["event"])
        for r in nat.to_pylist()
    ]
    assert theirs == ours == records
