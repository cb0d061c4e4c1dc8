from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

import pytest

from mamori.ingest.netflow import Datagram, FlowDecoder
from tests.ingest.netflow.packets import ip4, set_, v9, v9_options_template, v9_template

EXP = "192.0.2.1"
T0 = 1_700_000_000
DATA_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (22, 4), (21, 4), (48, 1)]


def record(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    proto: int = 17,
    packets: int = 1,
    octets: int = 100,
    first: int = 95_000,
    last: int = 99_000,
    sampler: int = 1,
) -> bytes:
    return struct.pack(
        "!4s4sHHBIIIIB",
        ip4(src),
        ip4(dst),
        sport,
        dport,
        proto,
        packets,
        octets,
        first,
        last,
        sampler,
    )


def data(*records: bytes, tid: int = 300) -> bytes:
    return set_(tid, b"".join(records))


def decode(
    *payloads: bytes, dec: FlowDecoder | None = None, **kw: Any
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    dec = dec or FlowDecoder(**kw)
    r = dec.decode([Datagram(EXP, p, T0 + i) for i, p in enumerate(payloads)])
    return r.flows.to_pylist(), dict(r.counters)


def test_template_and_data_in_one_packet() -> None:
    pkt = v9(
        [
            v9_template(300, DATA_FIELDS),
            data(
                record("10.0.0.1", "10.0.0.2", 53, 4000, first=95_000, last=99_000),
                record("10.0.0.2", "10.0.0.1", 4000, 53),
            ),
        ],
        uptime=100_000,
        secs=T0,
    )
    rows, counters = decode(pkt)
    assert counters["records.v9"] == 2 and counters["templates.new"] == 1
    assert rows[0]["time_start"] == datetime.fromtimestamp(T0 - 5, UTC)
    assert rows[0]["time_end"] == datetime.fromtimestamp(T0 - 1, UTC)
    assert [r["sampling_rate"] for r in rows] == [None, None]


def test_padding_after_records_is_ignored() -> None:
    body = record("10.0.0.1", "10.0.0.2", 1, 2) + b"\0\0\0"
    pkt = v9([v9_template(300, DATA_FIELDS), set_(300, body, pad=False)])
    rows, counters = decode(pkt)
    assert len(rows) == 1 and not [k for k in counters if k.startswith("errors")]


SYSTEM = [(1, 4)]  # v9 options scope "System"


@pytest.mark.parametrize(
    ("options", "values", "sampler", "rate"),
    [
        ([(34, 4)], struct.pack("!I", 100), 1, 100),  # SAMPLING_INTERVAL alone
        ([(34, 4), (35, 1)], struct.pack("!IB", 64, 2), 1, 64),  # 34 + 35 layout
        ([(48, 1), (49, 1), (50, 4)], struct.pack("!BBI", 1, 2, 1000), 1, 1000),  # sampler map
        ([(48, 1), (49, 1), (50, 4)], struct.pack("!BBI", 2, 2, 1000), 1, None),  # other sampler
        ([(34, 4)], struct.pack("!I", 0), 1, None),  # router says 0: unknown
    ],
)
def test_sampling_options(
    options: list[tuple[int, int]], values: bytes, sampler: int, rate: int | None
) -> None:
    pkt = v9(
        [
            v9_options_template(400, SYSTEM, options),
            set_(400, struct.pack("!I", 0) + values),
            v9_template(300, DATA_FIELDS),
            data(record("10.0.0.1", "10.0.0.2", 1, 2, sampler=sampler)),
        ]
    )
    (row,), counters = decode(pkt)
    assert counters["records.options"] == 1
    assert row["sampling_rate"] == rate


def test_sampler_rate_change_applies_from_then_on() -> None:
    opts = v9_options_template(400, SYSTEM, [(48, 1), (50, 4)])
    tpl = v9_template(300, DATA_FIELDS)
    first = v9(
        [
            opts,
            set_(400, struct.pack("!IBI", 0, 1, 100)),
            tpl,
            data(record("10.0.0.1", "10.0.0.2", 1, 1)),
        ]
    )
    second = v9(
        [set_(400, struct.pack("!IBI", 0, 1, 200)), data(record("10.0.0.1", "10.0.0.2", 1, 2))]
    )
    rows, _ = decode(first, second)
    assert {r["dst_port"]: r["sampling_rate"] for r in rows} == {1: 100, 2: 200}


def test_source_ids_keep_separate_templates() -> None:
    a = v9([v9_template(300, DATA_FIELDS)], source_id=1)
    b = v9([data(record("10.0.0.1", "10.0.0.2", 1, 2))], source_id=2)
    rows, counters = decode(a, b)
    assert rows == [] and counters["templates.unknown"] == 1


def test_data_before_template_is_held_then_decoded() -> None:
    dec = FlowDecoder()
    rows, counters = decode(v9([data(record("10.0.0.1", "10.0.0.2", 1, 2))]), dec=dec)
    assert rows == [] and counters["sets.pending"] == 1
    rows, counters = decode(v9([v9_template(300, DATA_FIELDS)]), dec=dec)
    assert [r["dst_port"] for r in rows] == [2]
    assert counters["records.pending_released"] == 1
    assert len(dec.pending) == 0


def test_pending_is_bounded() -> None:
    dec = FlowDecoder(pending_limit=3)
    pkts = [v9([data(record("10.0.0.1", "10.0.0.2", 1, i))]) for i in range(5)]
    _, counters = decode(*pkts, dec=dec)
    assert counters["sets.pending"] == 5 and counters["sets.pending_dropped"] == 2
    rows, counters = decode(v9([v9_template(300, DATA_FIELDS)]), dec=dec)
    assert sorted(r["dst_port"] for r in rows) == [2, 3, 4]


def test_icmp_type_code_as_destination_port() -> None:
    fields = [(8, 4), (12, 4), (4, 1), (32, 2)]
    pkt = v9(
        [
            v9_template(300, fields),
            set_(300, ip4("10.0.0.1") + ip4("10.0.0.2") + struct.pack("!BH", 1, 0x0800)),
        ]
    )
    (row,), counters = decode(pkt)
    assert row["dst_port"] == 0x0800 and row["src_port"] is None
    assert counters["records.time_fallback"] == 1  # no time fields: export time
    assert row["time_start"] == datetime.fromtimestamp(T0, UTC)


@pytest.mark.parametrize(
    ("payload", "counter"),
    [
        (v9([])[:10], "errors.truncated"),
        (v9([struct.pack("!HH", 300, 2)]), "errors.set_length"),
        (v9([struct.pack("!HH", 300, 400) + b"\0" * 8]), "errors.truncated"),
        (v9([set_(0, struct.pack("!HH", 300, 0))]), "templates.zero_fields"),
        (v9([v9_template(300, [(8, 0), (12, 0)])]), "templates.zero_length"),
        (v9([v9_template(12, [(8, 4)])]), "templates.bad_id"),
        (v9([set_(0, struct.pack("!HH", 300, 10) + b"\0" * 8)]), "errors.truncated"),
        (v9([set_(1, struct.pack("!HHH", 400, 3, 4))]), "errors.bad_template"),
        (v9([set_(7, b"\0" * 4)]), "errors.reserved_set"),
    ],
)
def test_bad_input_is_counted(payload: bytes, counter: str) -> None:
    _, counters = decode(payload)
    assert counters[counter] == 1


def test_bad_set_does_not_lose_earlier_sets() -> None:
    good = data(record("10.0.0.1", "10.0.0.2", 1, 2))
    pkt = v9([v9_template(300, DATA_FIELDS), good, struct.pack("!HH", 300, 1)])
    rows, counters = decode(pkt)
    assert len(rows) == 1 and counters["errors.set_length"] == 1


def test_template_flood_is_bounded() -> None:
    from mamori.ingest.netflow.templates import MAX_TEMPLATES_PER_EXPORTER

    n = MAX_TEMPLATES_PER_EXPORTER + 10
    sets = [v9_template(256 + i, [(8, 4), (12, 4)]) for i in range(n)]
    pkts = [v9(sets[i : i + 100]) for i in range(0, n, 100)]
    dec = FlowDecoder()
    _, counters = decode(*pkts, dec=dec)
    assert counters["templates.new"] == n
    assert counters["templates.evicted"] == 10  # the least recently announced: the first ten
    assert len(dec.registry) == MAX_TEMPLATES_PER_EXPORTER
    assert dec.registry.entry((EXP, 9, 0, 256 + 9)) is None
    assert dec.registry.entry((EXP, 9, 0, 256 + 10)) is not None


def test_held_sets_expire() -> None:
    dec = FlowDecoder(template_timeout_s=60)
    dec.decode([Datagram(EXP, v9([data(record("10.0.0.1", "10.0.0.2", 1, 1))]), T0)])
    r = dec.decode([Datagram(EXP, v9([data(record("10.0.0.1", "10.0.0.2", 1, 2))]), T0 + 120)])
    assert r.counters["sets.pending_expired"] == 1
    r = dec.decode([Datagram(EXP, v9([v9_template(300, DATA_FIELDS)]), T0 + 121)])
    assert [row["dst_port"] for row in r.flows.to_pylist()] == [2]
