"""sFlow v5 decoder: real datagrams (goflow2's tests, pmacct's sfprobe), built cases, bad input."""

from __future__ import annotations

import collections
import importlib.util
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamori.ingest import sflow
from mamori.ingest.ratelog import RateLimitedLog
from mamori.ingest.sflow import MAX_RECORDS, MAX_SAMPLES, decode_sflow
from mamori.schemas import FLOWS

DATA = Path(__file__).resolve().parents[1] / "data"
GOFLOW2 = DATA / "sflow"
T0 = 1_700_000_000.123  # received time used throughout
T0_DT = datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
MARKER = b"MAMORI-PAYLOAD-MARKER-7f3a"
FILLERS = {"198.51.100.1", "198.51.100.2"}  # see tests/data/make_pmacct_sfprobe.py


def decode_one(payload: bytes, source: str = "203.0.113.9") -> tuple[list[dict[str, Any]], Any]:
    table, counters = decode_sflow([(source, payload, T0)])
    assert table.schema == FLOWS.arrow
    return table.to_pylist(), counters


def read_frames(path: Path) -> list[bytes]:
    """[u16 big-endian length][payload] … → payloads."""
    raw, out, o = path.read_bytes(), [], 0
    while o < len(raw):
        (n,) = struct.unpack_from(">H", raw, o)
        out.append(raw[o + 2 : o + 2 + n])
        o += 2 + n
    return out


# --- an independent, tiny pcap reader and 5-tuple parser for the reference side ------------------


def pcap_frames(path: Path) -> Iterator[bytes]:
    raw = path.read_bytes()
    assert raw[:4] == b"\xd4\xc3\xb2\xa1", "little-endian microsecond pcap expected"
    (linktype,) = struct.unpack_from("<I", raw, 20)
    assert linktype == 1
    o = 24
    while o < len(raw):
        incl = struct.unpack_from("<I", raw, o + 8)[0]
        yield raw[o + 16 : o + 16 + incl]
        o += 16 + incl


def five_tuple(frame: bytes) -> tuple[str, str, int, int, int] | None:
    ethertype, q = struct.unpack_from(">H", frame, 12)[0], 14
    if ethertype == 0x0800:
        proto, l4 = frame[q + 9], q + (frame[q] & 15) * 4
        src = socket.inet_ntop(socket.AF_INET, frame[q + 12 : q + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[q + 16 : q + 20])
    elif ethertype == 0x86DD:
        proto, l4 = frame[q + 6], q + 40
        src = socket.inet_ntop(socket.AF_INET6, frame[q + 8 : q + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[q + 24 : q + 40])
        while proto in (0, 43, 60):  # hop-by-hop (MLD reports), routing, destination options
            proto, l4 = frame[l4], l4 + (frame[l4 + 1] + 1) * 8
    else:
        return None
    sport = dport = 0
    if proto in (6, 17):
        sport, dport = struct.unpack_from(">HH", frame, l4)
    elif proto in (1, 58):
        dport = frame[l4] * 256 + frame[l4 + 1]
    return src, dst, sport, dport, proto


def flow_tuples(table: pa.Table) -> collections.Counter[tuple[Any, ...]]:
    cols = ("src_addr", "dst_addr", "src_port", "dst_port", "protocol")
    return collections.Counter(zip(*(table.column(c).to_pylist() for c in cols), strict=True))


# --- builders for hand-made datagrams ------------------------------------------------------------


def xdr(*words: int) -> bytes:
    return struct.pack(f">{len(words)}I", *words)


def pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def datagram(
    samples: list[bytes], agent: bytes = bytes([192, 0, 2, 1]), n: int | None = None
) -> bytes:
    atype = {0: 0, 4: 1, 16: 2}[len(agent)]
    count = len(samples) if n is None else n
    return xdr(5, atype) + agent + xdr(0, 1, 1000, count) + b"".join(samples)


def sample(fmt: int, body: bytes) -> bytes:
    return xdr(fmt, len(body)) + body


def record(fmt: int, body: bytes) -> bytes:
    return xdr(fmt, len(body)) + body


def flow_sample(
    records: list[bytes],
    rate: int = 100,
    source_id: int = 7,
    inp: int = 3,
    out: int = 4,
    expanded: bool = False,
) -> bytes:
    if expanded:
        head = xdr(1, 0, source_id, rate, 1000, 0, 0, inp, 0, out, len(records))
        return sample(3, head + b"".join(records))
    return sample(1, xdr(1, source_id, rate, 1000, 0, inp, out, len(records)) + b"".join(records))


def raw_header(header: bytes, proto: int = 1, frame_length: int = 1000) -> bytes:
    return record(1, xdr(proto, frame_length, 4, len(header)) + pad(header))


def ether(l3: bytes, ethertype: int = 0x0800, tags: tuple[int, ...] = ()) -> bytes:
    out = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02"
    for tpid in tags:
        out += struct.pack(">HH", tpid, 10)
    return out + struct.pack(">H", ethertype) + l3


def ipv4(
    proto: int, l4: bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2", tos: int = 0, frag: int = 0
) -> bytes:
    return (
        struct.pack(
            ">BBHHHBBH4s4s",
            0x45,
            tos,
            20 + len(l4),
            0,
            frag,
            64,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + l4
    )


def ipv6(
    nh: int, l4: bytes, src: str = "2001:db8::1", dst: str = "2001:db8::2", tc: int = 0
) -> bytes:
    first = (6 << 28) | (tc << 20)
    return (
        struct.pack(
            ">IHBB16s16s",
            first,
            len(l4),
            nh,
            64,
            socket.inet_pton(socket.AF_INET6, src),
            socket.inet_pton(socket.AF_INET6, dst),
        )
        + l4
    )


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 0, 0, 0) + MARKER


def udp(sport: int, dport: int) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(MARKER), 0) + MARKER


def sampled_ipv4(
    src: str,
    dst: str,
    proto: int,
    sport: int,
    dport: int,
    flags: int = 0,
    tos: int = 0,
    length: int = 500,
) -> bytes:
    body = xdr(length, proto) + socket.inet_aton(src) + socket.inet_aton(dst)
    return record(3, body + xdr(sport, dport, flags, tos))


def sampled_ipv6(
    src: str, dst: str, proto: int, sport: int, dport: int, length: int = 600
) -> bytes:
    body = xdr(length, proto) + socket.inet_pton(socket.AF_INET6, src)
    body += socket.inet_pton(socket.AF_INET6, dst)
    return record(4, body + xdr(sport, dport, 0, 5))


def counter_sample(expanded: bool = False) -> bytes:
    if expanded:
        return sample(4, xdr(9, 0, 7, 1) + record(1, xdr(*range(22))))
    return sample(2, xdr(9, 7, 1) + record(1, xdr(*range(22))))


TCP_ETH = raw_header(ether(ipv4(6, tcp(40000, 443, 0x12), tos=0x28)))


# --- real datagrams from goflow2's decoder tests -------------------------------------------------

EXPANDED = [
    # src, dst, sport, dport, bytes, tos, input_if, output_if, observation_domain
    ("185.59.220.147", "88.238.78.19", 443, 53206, 1514, 0, 1000100, 1000018, 1000100),
    ("195.181.175.38", "5.146.198.158", 80, 4019, 1482, 0, 1000100, 1000011, 1000100),
    ("137.74.204.213", "89.187.169.85", 1935, 44508, 1522, 0x18, 1000104, 1000100, 1000104),
    ("185.102.219.67", "103.194.169.32", 25461, 22446, 1522, 0, 1000100, 1000011, 1000100),
    ("51.91.116.108", "195.181.174.135", 8000, 32872, 1522, 0, 1000100, 1000101, 1000100),
]
GOFLOW2_CASES = [
    pytest.param(
        "TestSFlowDecode",
        # 802.1Q-tagged ICMP echo request, 1-in-2048, source_id 0:1043, agent 172.16.0.17
        [
            dict(
                src_addr="172.16.32.254",
                dst_addr="172.16.32.241",
                src_port=0,
                dst_port=8 * 256 + 0,
                protocol=1,
                tcp_flags=0,
                tos=0,
                packets=1,
                bytes=82,
                exporter="172.16.0.17",
                input_if=1194,
                output_if=1043,
                sampling_rate=2048,
                observation_domain=1043,
                time_start=T0_DT,
                time_end=T0_DT,
            )
        ],
        {
            "datagrams": 1,
            "datagrams.sflow5": 1,
            "samples.flow": 1,
            "records.raw_header": 1,
            "flows": 1,
        },
        id="flow-sample-icmp-vlan",
    ),
    pytest.param(
        "TestExpandedSFlowDecode",
        [
            dict(
                src_addr=s,
                dst_addr=d,
                src_port=sp,
                dst_port=dp,
                protocol=6,
                tcp_flags=0x10,
                tos=tos,
                packets=1,
                bytes=b,
                exporter="1.2.3.4",
                input_if=i,
                output_if=o,
                sampling_rate=16383,
                observation_domain=od,
            )
            for s, d, sp, dp, b, tos, i, o, od in EXPANDED
        ],
        # 5 expanded samples, each an extended switch record + a raw header; the 1500-byte
        # buffer carries 332 bytes after the last sample.
        {
            "datagrams": 1,
            "datagrams.sflow5": 1,
            "samples.expanded_flow": 5,
            "records.raw_header": 5,
            "records.extended": 5,
            "flows": 5,
            "datagrams.trailing_bytes": 1,
        },
        id="expanded-flow-samples",
    ),
    *[
        pytest.param(
            name,
            [],
            {"datagrams": 1, "datagrams.sflow5": 1, "samples.drop": 1, "skipped.drop_sample": 1},
            id=name,
        )
        for name in (
            "TestSFlowDecodeDropEgressQueue",
            "TestSFlowDecodeDropExtendedACL",
            "TestSFlowDecodeDropExtendedFunction",
        )
    ],
]


@pytest.mark.parametrize(("name", "rows", "counters"), GOFLOW2_CASES)
def test_goflow2_datagrams(name: str, rows: list[dict[str, Any]], counters: dict[str, int]) -> None:
    path = GOFLOW2 / f"decoders_sflow_sflow_test__{name}_data_0.bin"
    got, got_counters = decode_one(path.read_bytes(), source="127.0.0.1")
    assert [{k: row[k] for k in want} for row, want in zip(got, rows, strict=True)] == rows
    assert dict(got_counters) == counters


# --- hand-made datagrams, one feature each -------------------------------------------------------

BUILT_CASES = [
    pytest.param(
        datagram([flow_sample([TCP_ETH])]),
        [
            dict(
                src_addr="10.0.0.1",
                dst_addr="10.0.0.2",
                src_port=40000,
                dst_port=443,
                protocol=6,
                tcp_flags=0x12,
                tos=0x28,
                bytes=1000,
                sampling_rate=100,
                observation_domain=7,
                input_if=3,
                output_if=4,
                exporter="192.0.2.1",
            )
        ],
        {"flows": 1},
        id="tcp-ipv4-ethernet",
    ),
    pytest.param(
        datagram(
            [flow_sample([raw_header(ether(ipv4(17, udp(53, 5353)), tags=(0x88A8, 0x8100)))])]
        ),
        [dict(src_port=53, dst_port=5353, protocol=17)],
        {"flows": 1},
        id="qinq-udp",
    ),
    pytest.param(
        datagram(
            [
                flow_sample(
                    [
                        raw_header(
                            ether(
                                struct.pack(">I", (100 << 12) | 0x1FF) + ipv4(6, tcp(1, 2, 0x02)),
                                ethertype=0x8847,
                            )
                        )
                    ]
                )
            ]
        ),
        [dict(src_port=1, dst_port=2, tcp_flags=0x02)],
        {"flows": 1},
        id="mpls",
    ),
    pytest.param(
        datagram([flow_sample([raw_header(ipv4(1, bytes([3, 3, 0, 0]) + MARKER), proto=11)])]),
        [dict(protocol=1, src_port=0, dst_port=3 * 256 + 3)],
        {"flows": 1},
        id="ipv4-header-protocol-icmp-unreachable",
    ),
    pytest.param(
        datagram([flow_sample([raw_header(ether(ipv4(17, udp(1, 2), frag=0x00B9)))])]),
        [dict(protocol=17, src_port=0, dst_port=0)],
        {"flows": 1},
        id="ipv4-non-first-fragment",
    ),
    pytest.param(
        datagram(
            [
                flow_sample(
                    [raw_header(ether(ipv6(6, tcp(2000, 80, 0x18), tc=0xB8), ethertype=0x86DD))]
                )
            ]
        ),
        [
            dict(
                src_addr="2001:db8::1",
                dst_addr="2001:db8::2",
                protocol=6,
                src_port=2000,
                dst_port=80,
                tcp_flags=0x18,
                tos=0xB8,
            )
        ],
        {"flows": 1},
        id="ipv6-tcp",
    ),
    pytest.param(
        datagram(
            [
                flow_sample(
                    [
                        raw_header(
                            ipv6(
                                0, bytes([58, 0]) + b"\0" * 6 + bytes([128, 0, 0, 0]), dst="ff02::1"
                            ),
                            proto=12,
                        )
                    ]
                )
            ]
        ),
        [dict(protocol=58, dst_addr="ff02::1", dst_port=128 * 256)],
        {"flows": 1},
        id="ipv6-hop-by-hop-icmpv6",
    ),
    pytest.param(
        datagram(
            [
                flow_sample(
                    [raw_header(ipv6(44, bytes([17, 0, 0, 8]) + b"\0" * 4 + udp(1, 2)), proto=12)]
                )
            ]
        ),
        [dict(protocol=17, src_port=0, dst_port=0)],
        {"flows": 1},
        id="ipv6-non-first-fragment",
    ),
    pytest.param(
        datagram(
            [
                flow_sample(
                    [sampled_ipv4("192.0.2.7", "198.51.100.8", 6, 25, 1025, 0x11, 4)],
                    expanded=True,
                    rate=0,
                    inp=0x3FFFFFFF,
                    out=9,
                )
            ]
        ),
        [
            dict(
                src_addr="192.0.2.7",
                dst_addr="198.51.100.8",
                protocol=6,
                src_port=25,
                dst_port=1025,
                tcp_flags=0x11,
                tos=4,
                bytes=500,
                sampling_rate=None,
                input_if=None,
                output_if=9,
            )
        ],
        {"flows": 1, "flows.sampling_rate_unknown": 1, "records.sampled_ipv4": 1},
        id="sampled-ipv4-rate-unknown",
    ),
    pytest.param(
        datagram(
            [flow_sample([sampled_ipv6("2001:db8::a", "2001:db8::b", 17, 4500, 500)])],
            agent=socket.inet_pton(socket.AF_INET6, "2001:db8::99"),
        ),
        [
            dict(
                src_addr="2001:db8::a",
                dst_addr="2001:db8::b",
                protocol=17,
                src_port=4500,
                dst_port=500,
                bytes=600,
                exporter="2001:db8::99",
                tos=5,
            )
        ],
        {"flows": 1, "records.sampled_ipv6": 1},
        id="sampled-ipv6-ipv6-agent",
    ),
    pytest.param(
        datagram(
            [flow_sample([sampled_ipv6("::ffff:192.0.2.5", "2001:db8:0:0:1:0:0:1", 6, 1, 2)])]
        ),
        # same text as the NetFlow decoders: Python's ipaddress, compressed
        [
            dict(
                src_addr=ipaddress.IPv6Address("::ffff:192.0.2.5").compressed,
                dst_addr="2001:db8::1:0:0:1",
            )
        ],
        {"flows": 1},
        id="ipv6-text-form",
    ),
    pytest.param(
        datagram([flow_sample([TCP_ETH])], agent=b""),
        [dict(exporter="203.0.113.9")],
        {"flows": 1},
        id="unknown-agent-uses-udp-source",
    ),
    pytest.param(
        # source_id type 1 (ifIndex) index 5; output interface format 2 (multiple) → null
        datagram([flow_sample([TCP_ETH], source_id=(1 << 24) | 5, out=(2 << 30) | 3)]),
        [dict(observation_domain=5, output_if=None, input_if=3)],
        {"flows": 1},
        id="source-id-type-and-multiple-output",
    ),
    pytest.param(
        datagram(
            [
                flow_sample(
                    [
                        record(1001, xdr(1, 2, 3, 4)),
                        TCP_ETH,
                        sampled_ipv4("1.1.1.1", "2.2.2.2", 17, 1, 1),
                    ]
                )
            ]
        ),
        [dict(src_addr="10.0.0.1")],
        {"flows": 1, "records.extended": 1, "records.raw_header": 1, "records.sampled_ipv4": 1},
        id="raw-header-preferred-over-sampled-ipv4",
    ),
    pytest.param(
        datagram(
            [
                counter_sample(),
                counter_sample(expanded=True),
                flow_sample([TCP_ETH]),
                sample((4413 << 12) | 1, b"vendor-thing"),
                sample(77, xdr(1, 2)),
            ]
        ),
        [dict(src_port=40000)],
        {"samples.counter": 1, "samples.expanded_counter": 1, "samples.unknown": 2, "flows": 1},
        id="counter-and-unknown-samples-skipped",
    ),
    pytest.param(
        datagram(
            [
                flow_sample([raw_header(ether(b"\0" * 28, ethertype=0x0806))]),
                flow_sample([record(2, xdr(1500) + b"\0" * 16 + xdr(0x0800))]),
                flow_sample([raw_header(b"\0" * 40, proto=7)]),
            ]
        ),
        [],
        {
            "skipped.raw_header_not_ip": 1,
            "skipped.raw_header_unsupported_protocol": 1,
            "skipped.flow_sample_without_ip": 3,
            "records.unknown": 1,
            "samples.flow": 3,
        },
        id="no-ip-header",
    ),
    pytest.param(
        datagram(
            [
                flow_sample([raw_header(ether(ipv4(6, tcp(1, 2, 2))[:18]))]),
                flow_sample([raw_header(ether(b"\x60" + b"\0" * 20, ethertype=0x0800))]),
            ]
        ),
        [],
        {"skipped.raw_header_ip_truncated": 1, "skipped.raw_header_bad_ip_version": 1},
        id="truncated-and-wrong-version-ip",
    ),
    pytest.param(
        datagram([flow_sample([raw_header(ether(ipv4(6, tcp(7, 8, 2))[:22]))])]),
        [dict(protocol=6, src_port=0, dst_port=0, tcp_flags=0)],
        {"flows": 1},
        id="ports-not-captured",
    ),
    pytest.param(
        datagram([flow_sample([raw_header(ether(ipv4(6, tcp(7, 8, 2))[:24]))])]),
        [dict(protocol=6, src_port=7, dst_port=8, tcp_flags=0)],
        {"flows": 1},
        id="ports-captured-flags-not",
    ),
]


@pytest.mark.parametrize(("payload", "rows", "counters"), BUILT_CASES)
def test_built_datagrams(
    payload: bytes, rows: list[dict[str, Any]], counters: dict[str, int]
) -> None:
    got, got_counters = decode_one(payload)
    assert [{k: row[k] for k in want} for row, want in zip(got, rows, strict=True)] == rows
    assert {k: got_counters[k] for k in counters} == counters
    assert not [k for k in got_counters if k.startswith("errors.")]
    assert all(row["packets"] == 1 and row["time_start"] == T0_DT for row in got)


# --- bad input: counted by kind, the good parts kept ---------------------------------------------

GOOD = flow_sample([TCP_ETH])
BAD_CASES = [
    pytest.param(b"", 0, "errors.truncated", id="empty"),
    pytest.param(xdr(5), 0, "errors.truncated", id="version-only"),
    pytest.param(xdr(4, 1) + b"\0" * 40, 0, "errors.bad_version", id="version-4"),
    pytest.param(xdr(5, 9) + b"\0" * 40, 0, "errors.bad_agent_address_type", id="agent-type-9"),
    pytest.param(datagram([])[:20], 0, "errors.truncated", id="header-cut"),
    pytest.param(datagram([GOOD, GOOD], n=3), 2, "errors.truncated", id="fewer-samples-than-said"),
    pytest.param(datagram([GOOD, GOOD[:-1]]), 1, "errors.truncated", id="last-sample-cut"),
    pytest.param(
        datagram([GOOD, xdr(1, 0xFFFFFFF0) + GOOD]), 1, "errors.truncated", id="huge-sample-length"
    ),
    pytest.param(
        datagram([GOOD, sample(1, xdr(1, 2, 3)), GOOD]),
        2,
        "errors.bad_sample_length",
        id="short-flow-sample-between-good",
    ),
    pytest.param(
        datagram([GOOD, sample(3, xdr(1, 2, 3)), GOOD]),
        2,
        "errors.bad_sample_length",
        id="short-expanded-sample-between-good",
    ),
    pytest.param(
        datagram([GOOD, sample(1, xdr(1, 7, 10, 0, 0, 1, 2, 5)), GOOD]),
        2,
        "errors.bad_record_length",
        id="more-records-than-present",
    ),
    pytest.param(
        datagram([GOOD, sample(1, xdr(1, 7, 10, 0, 0, 1, 2, 1) + xdr(1, 999)), GOOD]),
        2,
        "errors.bad_record_length",
        id="record-past-sample",
    ),
    pytest.param(
        datagram([GOOD, sample(1, xdr(1, 7, 10, 0, 0, 1, 2, 1) + record(1, xdr(1, 2))), GOOD]),
        2,
        "errors.bad_record_length",
        id="raw-header-record-short",
    ),
    pytest.param(
        datagram(
            [
                GOOD,
                sample(
                    1, xdr(1, 7, 10, 0, 0, 1, 2, 1) + record(1, xdr(1, 100, 4, 200) + b"\0" * 8)
                ),
                GOOD,
            ]
        ),
        2,
        "errors.bad_record_length",
        id="header-length-past-record",
    ),
    pytest.param(
        datagram([GOOD, sample(1, xdr(1, 7, 10, 0, 0, 1, 2, 1) + record(3, xdr(1))), GOOD]),
        2,
        "errors.bad_record_length",
        id="sampled-ipv4-short",
    ),
    pytest.param(
        datagram([GOOD, sample(1, xdr(1, 7, 10, 0, 0, 1, 2, 1) + record(4, xdr(1))), GOOD]),
        2,
        "errors.bad_record_length",
        id="sampled-ipv6-short",
    ),
    pytest.param(
        datagram([GOOD, GOOD, *[sample(77, b"")] * (MAX_SAMPLES + 10)]),
        2,
        "errors.too_many_samples",
        id="too-many-samples",
    ),
    pytest.param(
        datagram([GOOD, flow_sample([record(1001, b"")] * MAX_RECORDS + [TCP_ETH]), GOOD]),
        2,
        "errors.too_many_records",
        id="too-many-records",
    ),
]


@pytest.mark.parametrize(("payload", "flows", "error"), BAD_CASES)
def test_bad_input_counted(payload: bytes, flows: int, error: str) -> None:
    good = datagram([GOOD])
    table, counters = decode_sflow(
        [("192.0.2.9", good, T0), ("192.0.2.9", payload, T0), ("192.0.2.9", good, T0)]
    )
    assert table.num_rows == flows + 2
    assert counters[error] == 1
    assert sum(v for k, v in counters.items() if k.startswith("errors.")) == 1
    assert counters["datagrams"] == 3


def test_errors_logged_rate_limited(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sflow, "_ratelog", RateLimitedLog(sflow._log, 60.0))
    bad = [("192.0.2.9", xdr(4, 1) + b"\0" * 40, T0)] * 5
    with caplog.at_level("WARNING", logger="mamori.ingest.sflow"):
        for _ in range(3):
            _, counters = decode_sflow(bad)
            assert counters["errors.bad_version"] == 5
    assert len(caplog.records) == 1
    assert "bad_version" in caplog.records[0].getMessage()


def test_a_decoder_bug_loses_only_the_datagram_that_triggers_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = sflow._datagram_headers

    def buggy(bt: Any, starts: Any, stops: Any) -> Any:
        if b"BOOM" in bt.b.tobytes():
            raise RuntimeError("simulated decoder bug")
        return real(bt, starts, stops)

    monkeypatch.setattr(sflow, "_datagram_headers", buggy)
    good = datagram([GOOD])
    batch = [("192.0.2.9", good, T0), ("192.0.2.9", b"BOOM" + good, T0), ("192.0.2.9", good, T0)]
    table, counters = decode_sflow(batch)
    assert table.schema == FLOWS.arrow
    assert table.num_rows == 2
    assert counters["errors.internal"] == 1
    assert counters["datagrams"] == 3
    assert counters["flows"] == 2


@pytest.mark.slow
def test_every_truncation_of_a_real_datagram() -> None:
    payload = GOFLOW2 / "decoders_sflow_sflow_test__TestExpandedSFlowDecode_data_0.bin"
    data = payload.read_bytes()[:1168]  # the 5 samples, without the trailing bytes
    for cut in range(len(data) + 1):
        table, counters = decode_sflow([("127.0.0.1", data[:cut], T0)])
        whole = (cut - 28) // 228 if cut >= 28 else 0  # 28-byte header, 228-byte samples
        assert table.num_rows == whole, cut
        assert sum(v for k, v in counters.items() if k.startswith("errors.")) == (cut < 1168)


def test_empty_batch() -> None:
    table, counters = decode_sflow([])
    assert table.schema == FLOWS.arrow
    assert table.num_rows == 0
    assert not counters


# --- a real exporter: pmacctd's sfprobe plugin -------------------------------------------------


def check_against_pcap(pcap: Path, datagrams: list[bytes]) -> pa.Table:
    table, counters = decode_sflow([("127.0.0.1", d, T0) for d in datagrams])
    expected = collections.Counter(t for t in map(five_tuple, pcap_frames(pcap)) if t)
    got = flow_tuples(table)
    fillers = [t for t in expected if t[0] in FILLERS]
    for t in fillers:  # pmacctd keeps the last few packets of a savefile; they are the fillers
        assert got[t] <= expected[t]
        del expected[t], got[t]
    assert got == expected
    assert not [k for k in counters if k.startswith(("errors.", "skipped."))]
    assert set(table.column("exporter").to_pylist()) == {"192.0.2.1"}
    assert set(table.column("sampling_rate").to_pylist()) == {1}
    assert counters["flows"] == table.num_rows == counters["samples.flow"]
    return table


def test_pmacct_sfprobe_fixture_matches_source_pcap() -> None:
    table = check_against_pcap(
        DATA / "pmacct_sfprobe_marked.pcap", read_frames(DATA / "pmacct_sfprobe_marked.bin")
    )
    assert table.num_rows > 350
    families = {6 if ":" in a else 4 for a in table.column("src_addr").to_pylist()}
    assert families == {4, 6}


def test_marker_in_payload_never_decoded() -> None:
    datagrams = read_frames(DATA / "pmacct_sfprobe_marked.bin")
    assert sum(d.count(MARKER) for d in datagrams) > 100  # it did reach the decoder
    table, _ = decode_sflow([("127.0.0.1", d, T0) for d in datagrams])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert MARKER not in sink.getvalue().to_pybytes()
    assert MARKER.decode() not in repr(table.to_pylist())
    assert not [f for f in table.schema if pa.types.is_binary(f.type)]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pmacctd") is None, reason="pmacct (Debian) not installed")
def test_pmacct_sfprobe_live(tmp_path: Path) -> None:
    source = DATA / "captures" / "test7-malicious.pcap"
    subprocess.run(
        [sys.executable, str(DATA / "make_pmacct_sfprobe.py"), str(source), str(tmp_path)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    check_against_pcap(
        tmp_path / "pmacct_sfprobe_marked.pcap", read_frames(tmp_path / "pmacct_sfprobe_marked.bin")
    )


# --- fuzz ---------------------------------------------------------------------------------------

VALID = datagram(
    [
        counter_sample(),
        GOOD,
        flow_sample([raw_header(ether(ipv6(17, udp(5, 6)), ethertype=0x86DD))], expanded=True),
        flow_sample([sampled_ipv4("192.0.2.1", "192.0.2.2", 17, 53, 53)]),
    ]
)
VALID_ROWS = decode_sflow([("192.0.2.9", VALID, T0)])[0].to_pylist()
FUZZ = settings(
    max_examples=int(os.environ.get("SFLOW_FUZZ_EXAMPLES", "300")),  # raise it for a long run
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.slow
@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    for payload in (data, xdr(5, 1) + data, VALID[:28] + data):
        table, _ = decode_sflow([("192.0.2.9", payload, T0)])
        assert table.schema == FLOWS.arrow


@pytest.mark.slow
@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(VALID)),
)
def test_mutated_datagrams_never_raise(flips: list[tuple[int, int]], cut: int) -> None:
    mutated = bytearray(VALID)
    for pos, value in flips:
        mutated[pos] = value
    for payload in (bytes(mutated), bytes(mutated[:cut])):
        table, counters = decode_sflow([("192.0.2.9", payload, T0)])
        assert table.schema == FLOWS.arrow
        assert counters["datagrams"] == 1


@pytest.mark.slow
@FUZZ
@given(
    st.lists(st.binary(max_size=300).filter(lambda b: not b.startswith(xdr(5))), max_size=6),
    st.lists(st.binary(max_size=120), max_size=4),
)
def test_valid_datagrams_interleaved_with_garbage_all_decoded(
    garbage: list[bytes], garbage_samples: list[bytes]
) -> None:
    batch = [("192.0.2.9", VALID, T0)]
    for g in garbage:
        batch += [("192.0.2.9", g, T0), ("192.0.2.9", VALID, T0)]
    table, counters = decode_sflow(batch)
    assert table.to_pylist() == VALID_ROWS * (len(garbage) + 1)
    assert counters["datagrams.sflow5"] == len(garbage) + 1
    # garbage *inside* a datagram: samples of a format nobody knows, between the good ones
    junk = [sample((9999 << 12) | 7, g) for g in garbage_samples]
    mixed = datagram(
        [*junk, counter_sample(), *junk, GOOD, *junk]
        + [
            s
            for s in (
                flow_sample(
                    [raw_header(ether(ipv6(17, udp(5, 6)), ethertype=0x86DD))], expanded=True
                ),
                flow_sample([sampled_ipv4("192.0.2.1", "192.0.2.2", 17, 53, 53)]),
            )
        ]
    )
    mixed_table, mixed_counters = decode_sflow([("192.0.2.9", mixed, T0)])
    assert mixed_table.to_pylist() == VALID_ROWS
    assert mixed_counters["samples.unknown"] == 3 * len(junk)


# --- differential: the vectorised walk against a plain per-sample walk ----------------------------


def _seeds() -> list[bytes]:
    seeds = [VALID, *(p.values[0] for p in BUILT_CASES), *(p.values[0] for p in BAD_CASES)]
    seeds += read_frames(DATA / "pmacct_sfprobe_marked.bin")[:8]
    if GOFLOW2.exists():
        seeds += [p.read_bytes() for p in sorted(GOFLOW2.glob("decoders_sflow_*.bin"))]
    return seeds


SEEDS = _seeds()
WORDS = st.sampled_from([0, 1, 2, 3, 4, 5, 11, 12, 16, 32, 44, 1001, 0x3FFFFFFF, 0xFFFFFFFF])


def _load_reference() -> Any:
    path = Path(__file__).with_name("sflow_reference.py")
    spec = importlib.util.spec_from_file_location("sflow_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference_decode_sflow = _load_reference().decode_sflow


def assert_same(batch: list[tuple[str, bytes, float]]) -> None:
    table, counters = decode_sflow(batch)
    ref_table, ref_counters = reference_decode_sflow(batch)
    assert table.schema == FLOWS.arrow
    assert table.to_pylist() == ref_table.to_pylist()
    assert counters == ref_counters


def test_reference_agrees_on_every_seed() -> None:
    assert_same([("192.0.2.9", s, T0 + i) for i, s in enumerate(SEEDS)])
    for i, s in enumerate(SEEDS):
        assert_same([("192.0.2.9", s, T0 + i)])


@pytest.mark.slow
@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(SEEDS) - 1),
            st.lists(st.tuples(st.integers(0, 2000), WORDS), max_size=4),
            st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
            st.integers(0, 2000) | st.none(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_vectorised_equals_reference_on_mutations(
    plan: list[tuple[int, list[tuple[int, int]], list[tuple[int, int]], int | None]],
) -> None:
    batch = []
    for seed, words, flips, cut in plan:
        data = bytearray(SEEDS[seed])
        for pos, word in words:
            if len(data) >= 4:
                at = (pos % (len(data) // 4)) * 4  # XDR words are 4-byte aligned
                data[at : at + 4] = struct.pack(">I", word)
        for pos, value in flips:
            if data:
                data[pos % len(data)] = value
        if cut is not None:
            data = data[:cut]
        batch.append(("192.0.2.9", bytes(data), T0))
    assert_same(batch)
