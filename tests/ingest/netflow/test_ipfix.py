from __future__ import annotations

import ipaddress
import struct
from datetime import UTC, datetime
from typing import Any

import pytest

from mamori.ingest.netflow import Datagram, FlowDecoder
from tests.ingest.netflow.packets import (
    Field,
    ip4,
    ipfix,
    ipfix_options_template,
    ipfix_template,
    set_,
)

EXP = "2001:db8::1"
T0 = 1_700_000_000
NTP = 2_208_988_800
ADDR4 = [(8, 4), (12, 4)]
A4 = ip4("10.0.0.1") + ip4("10.0.0.2")


def decode(
    *payloads: bytes, dec: FlowDecoder | None = None, **kw: Any
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    dec = dec or FlowDecoder(**kw)
    r = dec.decode([Datagram(EXP, p, T0 + i) for i, p in enumerate(payloads)])
    return r.flows.to_pylist(), dict(r.counters)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.mark.parametrize(
    ("fields", "values", "start", "end"),
    [
        ([(150, 4), (151, 4)], struct.pack("!II", T0 - 10, T0 - 5), T0 - 10, T0 - 5),
        (
            [(152, 8), (153, 8)],
            struct.pack("!QQ", (T0 - 10) * 1000 + 123, T0 * 1000),
            T0 - 9.877,
            T0,
        ),
        # dateTimeMicroseconds / Nanoseconds: NTP seconds and a 2**-32 fraction (0.5 s)
        (
            [(154, 8), (155, 8)],
            struct.pack("!IIII", T0 - 10 + NTP, 1 << 31, T0 + NTP, 0),
            T0 - 9.5,
            T0,
        ),
        (
            [(156, 8), (157, 8)],
            struct.pack("!IIII", T0 - 10 + NTP, 0, T0 - 1 + NTP, 1 << 30),
            T0 - 10,
            T0 - 0.75,
        ),
        # flowStart/EndSysUpTime with systemInitTimeMilliseconds in the record
        (
            [(22, 4), (21, 4), (160, 8)],
            struct.pack("!IIQ", 5_000, 8_000, (T0 - 100) * 1000),
            T0 - 95,
            T0 - 92,
        ),
        # flowStart/EndDeltaMicroseconds, before the export time
        ([(158, 4), (159, 4)], struct.pack("!II", 3_000_000, 1_000_000), T0 - 3, T0 - 1),
        # only an end time: the start is taken to be the same
        ([(153, 8)], struct.pack("!Q", (T0 - 2) * 1000), T0 - 2, T0 - 2),
    ],
)
def test_time_fields(
    fields: list[tuple[int, int]], values: bytes, start: float, end: float
) -> None:
    pkt = ipfix([ipfix_template(300, ADDR4 + fields), set_(300, A4 + values)], export=T0)
    (row,), counters = decode(pkt)
    assert (row["time_start"], row["time_end"]) == (at(start), at(end))
    assert "records.time_fallback" not in counters


def test_uptime_from_options_system_init_time() -> None:
    opts = ipfix_options_template(400, [(149, 4)], [(160, 8)])
    pkt = ipfix(
        [
            opts,
            set_(400, struct.pack("!IQ", 0, (T0 - 100) * 1000)),
            ipfix_template(300, [*ADDR4, (22, 4), (21, 4)]),
            set_(300, A4 + struct.pack("!II", 10_000, 20_000)),
        ],
        export=T0,
    )
    (row,), _ = decode(pkt)
    assert (row["time_start"], row["time_end"]) == (at(T0 - 90), at(T0 - 80))


def test_uptime_without_init_time_falls_back_to_export_time() -> None:
    pkt = ipfix(
        [
            ipfix_template(300, [*ADDR4, (22, 4), (21, 4)]),
            set_(300, A4 + struct.pack("!II", 10_000, 20_000)),
        ],
        export=T0,
    )
    (row,), counters = decode(pkt)
    assert row["time_start"] == at(T0) and counters["records.time_fallback"] == 1


def test_ipv6_enterprise_and_variable_length_fields() -> None:
    fields: list[Field] = [
        (27, 16),
        (28, 16),
        (7, 2),
        (11, 2),
        (4, 1),
        (1000, 4, 2011),  # enterprise field, fixed
        (82, 0xFFFF),  # interfaceName, variable
        (1001, 0xFFFF, 2011),  # enterprise, variable
        (2, 8),
        (1, 8),
    ]
    src, dst = ipaddress.IPv6Address("2001:db8::10"), ipaddress.IPv6Address("2001:db8::20")

    def rec(name: bytes, long: bytes, packets: int) -> bytes:
        head = src.packed + dst.packed + struct.pack("!HHB", 5353, 443, 17) + b"\xff" * 4
        var = bytes([len(name)]) + name + b"\xff" + struct.pack("!H", len(long)) + long
        return head + var + struct.pack("!QQ", packets, packets * 100)

    pkt = ipfix(
        [ipfix_template(300, fields), set_(300, rec(b"eth0", b"x" * 300, 3) + rec(b"", b"", 4))]
    )
    rows, counters = decode(pkt)
    assert counters["records.varlen_walk"] == 2
    assert [(r["src_addr"], r["dst_addr"], r["packets"], r["bytes"]) for r in rows] == [
        ("2001:db8::10", "2001:db8::20", 3, 300),
        ("2001:db8::10", "2001:db8::20", 4, 400),
    ]


@pytest.mark.parametrize(
    ("scope", "options", "values", "rate"),
    [
        ([(302, 8)], [(305, 4), (306, 4)], struct.pack("!QII", 7, 1, 99), 100),
        ([(302, 8)], [(305, 4)], struct.pack("!QI", 7, 512), 512),  # Cisco: interval only
        ([(302, 8)], [(305, 4), (309, 4), (310, 4)], struct.pack("!QIII", 7, 1, 1, 256), 256),
        ([(48, 2)], [(49, 1), (50, 4)], struct.pack("!HBI", 7, 2, 2048), 2048),
        ([(149, 4)], [(34, 4)], struct.pack("!II", 0, 10), 10),  # no sampler id: default
    ],
)
def test_sampling_options(
    scope: list[tuple[int, int]], options: list[tuple[int, int]], values: bytes, rate: int
) -> None:
    pkt = ipfix(
        [
            ipfix_options_template(400, scope, options),
            set_(400, values),
            ipfix_template(300, [*ADDR4, (302, 8)]),
            set_(300, A4 + struct.pack("!Q", 7)),
        ]
    )
    (row,), _ = decode(pkt)
    assert row["sampling_rate"] == rate


def test_rate_in_the_data_record_itself() -> None:
    pkt = ipfix(
        [
            ipfix_template(300, [*ADDR4, (34, 4)]),
            set_(300, A4 + struct.pack("!I", 333) + A4 + struct.pack("!I", 0)),
        ]
    )
    rows, _ = decode(pkt)
    assert [r["sampling_rate"] for r in rows] == [333, None]


def test_template_withdrawal() -> None:
    dec = FlowDecoder()
    decode(ipfix([ipfix_template(300, ADDR4)]), dec=dec)
    _, counters = decode(ipfix([set_(2, struct.pack("!HH", 300, 0))]), dec=dec)
    assert counters["templates.withdrawn"] == 1
    rows, counters = decode(ipfix([set_(300, A4)]), dec=dec)
    assert rows == [] and counters["templates.unknown"] == 1


def test_template_expiry() -> None:
    dec = FlowDecoder(template_timeout_s=60)
    dec.decode([Datagram(EXP, ipfix([ipfix_template(300, ADDR4)]), T0)])
    r = dec.decode([Datagram(EXP, ipfix([set_(300, A4)]), T0 + 30)])
    assert r.flows.num_rows == 1
    r = dec.decode([Datagram(EXP, ipfix([set_(300, A4)]), T0 + 200)])
    assert r.flows.num_rows == 0 and r.counters["templates.expired"] == 1


@pytest.mark.parametrize(
    ("payload", "counter", "rows"),
    [
        (ipfix([ipfix_template(300, ADDR4), set_(300, A4)]) + b"junk", "errors.trailing", 1),
        (ipfix([ipfix_template(300, ADDR4), set_(300, A4 + A4)])[:-4], "errors.truncated", 1),
        (struct.pack("!HHIII", 10, 8, 0, 0, 0), "errors.bad_length", 0),
        (ipfix([set_(3, struct.pack("!HHH", 400, 2, 0) + b"\0" * 8)]), "errors.bad_template", 0),
        (ipfix([set_(2, struct.pack("!HH", 300, 3) + b"\0" * 4)]), "errors.truncated", 0),
    ],
)
def test_bad_input_is_counted(payload: bytes, counter: str, rows: int) -> None:
    got, counters = decode(payload)
    assert counters[counter] == 1 and len(got) == rows
