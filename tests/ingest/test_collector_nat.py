"""IPFIX NAT events (RFC 8158) sent over a real UDP socket to the running collector: port blocks
land in the allocations registry, flows beside them still in flows, and attribution of
(public address, port, time) names the subscriber who held the inside address."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyarrow import ipc

from mamori.attribute import attribute_one
from mamori.config import AttributionConfig
from mamori.governance import Governance
from mamori.ingest import collector as collector_module
from mamori.ingest.collector import Collector, Listen
from mamori.ingest.netflow import Datagram
from mamori.ingest.netflow.decoder import PackedDatagrams
from tests.conftest import make_config, table
from tests.ingest.netflow import packets as pk
from tests.ingest.netflow.packets import NAT_ALLOC, NAT_BLOCK_FIELDS, NAT_DEALLOC, nat_block

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
PUB = "198.51.100.1"  # in the test address plan's cgnat pool
FLOW_FIELDS = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (152, 8), (153, 8))


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def flow(src: str, dst: str, at: datetime) -> bytes:
    return struct.pack(
        "!4s4sHHBIIQQ", pk.ip4(src), pk.ip4(dst), 40000, 443, 6, 1, 60, ms(at), ms(at)
    )


def message(*sets: bytes) -> bytes:
    return pk.ipfix([pk.ipfix_template(300, NAT_BLOCK_FIELDS), *sets])


def block(at: datetime, inside: str, first: int, last: int, event: int) -> bytes:
    return nat_block(ms(at), inside, PUB, first, last, event)


# A "NAT ports exhausted" record two days on: not a port block, but it moves the collector's
# clock past the 1-day timeout of every block above without relying on today's date.
LATER = message(pk.set_(300, nat_block(ms(T0 + 2880 * MIN), "100.64.0.99", PUB, 0, 0, 12)))


def collect(gov: Governance, datagrams: Sequence[bytes]) -> dict[str, Any]:
    """Run the collector on a loopback socket, send ``datagrams`` (in order, one exporter), stop
    it; returns its saved counters. The datagrams are dated around T0 whatever today is: the
    collector is told to take times of any distance from its clock."""
    years = 20 * 365 * 86400.0
    c = Collector(
        gov,
        gov.config.collector.model_copy(
            update={
                "export_clock_skew_s": years,
                "record_before_export_s": years,
                "record_after_export_s": years,
            }
        ),
    )
    c.start([Listen("127.0.0.1", 0)])
    port = c.bound()[0].port
    runner = threading.Thread(target=c.run)
    runner.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d, ("127.0.0.1", port))
    finally:
        c.request_stop()  # the receiver drains the socket before it stops
        runner.join(60)
    assert not runner.is_alive()
    stats = json.loads(c.stats_path.read_text())
    counters: dict[str, Any] = stats["counters"]
    return counters


def allocations(gov: Governance) -> list[dict[str, Any]]:
    cols = ["start", "end", "addr", "port_start", "port_end", "inside_addr", "source"]
    got = gov.open("M13", "allocations", cols, "test").arrow()
    got = got.filter(pa.compute.equal(got.column("source"), "cgnat-ipfix"))
    return sorted(got.to_pylist(), key=lambda r: (r["start"], r["port_start"]))


def row(start: datetime, end: datetime, first: int, last: int, inside: str) -> dict[str, Any]:
    return {
        "start": start,
        "end": end,
        "addr": PUB,
        "port_start": first,
        "port_end": last,
        "inside_addr": inside,
        "source": "cgnat-ipfix",
    }


OTHER_FLOW = pk.set_(301, flow("100.64.0.5", "203.0.113.9", T0))

# (name, datagrams, stored rows, counters that must read so)
CASES = [
    (
        "allocation then de-allocation",
        [
            message(pk.set_(300, block(T0, "100.64.0.5", 1024, 2047, NAT_ALLOC))),
            message(pk.set_(300, block(T0 + 10 * MIN, "100.64.0.5", 1024, 2047, NAT_DEALLOC))),
        ],
        [row(T0, T0 + 10 * MIN, 1024, 2047, "100.64.0.5")],
        {"nat.records": 3, "nat.block_events": 2, "nat.blocks_stored": 1},
    ),
    (
        "allocation without de-allocation: closed by the timeout (1 day)",
        [message(pk.set_(300, block(T0, "100.64.0.5", 1024, 2047, NAT_ALLOC)))],
        [row(T0, T0 + 1440 * MIN, 1024, 2047, "100.64.0.5")],
        {"nat.blocks_stored": 1},
    ),
    (
        "malformed records between good ones",
        [
            message(
                pk.set_(
                    300,
                    block(T0, "100.64.0.5", 1024, 2047, NAT_ALLOC)
                    + block(T0, "100.64.0.6", 3000, 2048, NAT_ALLOC)  # end before start
                    + block(T0, "0.0.0.0", 4096, 5119, NAT_ALLOC)  # no inside address
                    + block(T0, "100.64.0.7", 5120, 6143, 99)  # no such natEvent
                    + block(T0 + MIN, "100.64.0.6", 2048, 3071, NAT_ALLOC),
                )
            ),
            b"\x00\x0a\x00\x10" + b"\x00" * 12,  # an empty IPFIX message
            message(pk.set_(300, block(T0 + 5 * MIN, "100.64.0.5", 1024, 2047, NAT_DEALLOC))),
        ],
        [
            row(T0, T0 + 5 * MIN, 1024, 2047, "100.64.0.5"),
            row(T0 + MIN, T0 + MIN + 1440 * MIN, 2048, 3071, "100.64.0.6"),
        ],
        {
            "nat.errors.bad_range": 1,
            "nat.errors.missing_field": 1,
            "nat.errors.unknown_event": 1,
            "nat.blocks_stored": 2,
        },
    ),
    (
        "flow and NAT records in one message",
        [
            message(
                pk.ipfix_template(301, FLOW_FIELDS),
                OTHER_FLOW,
                pk.set_(300, block(T0, "100.64.0.5", 1024, 2047, NAT_ALLOC)),
            )
        ],
        [row(T0, T0 + 1440 * MIN, 1024, 2047, "100.64.0.5")],
        {"records.out": 1, "nat.records": 2, "nat.blocks_stored": 1},
    ),
    (
        "template withdrawn: later data of that id is held until it is announced again",
        [
            message(
                pk.set_(300, block(T0, "100.64.0.5", 1024, 2047, NAT_ALLOC)),
                pk.set_(2, struct.pack("!HH", 300, 0)),
            ),
            pk.ipfix([pk.set_(300, block(T0 + MIN, "100.64.0.5", 1024, 2047, NAT_DEALLOC))]),
        ],
        [row(T0, T0 + MIN, 1024, 2047, "100.64.0.5")],
        {
            "templates.withdrawn": 1,
            "templates.unknown": 1,
            "records.pending_released": 1,
            "nat.records": 3,
            "nat.blocks_open": 0,
        },
    ),
]


@pytest.mark.parametrize(
    ("datagrams", "stored", "counts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_nat_events_over_udp_become_allocations(
    gov: Governance,
    datagrams: list[bytes],
    stored: list[dict[str, Any]],
    counts: dict[str, int],
) -> None:
    counters = collect(gov, [*datagrams, LATER])
    assert allocations(gov) == stored
    assert counters["nat.other_events_ignored"] == 1
    for key, n in counts.items():
        assert counters.get(key) == n, (key, counters)
    flows = gov.open("M1", "flows", ["packets"], "test").arrow()
    assert flows.num_rows == counters.get("records.out", 0)


def test_open_block_is_kept_over_a_restart_and_closed_by_the_next(tmp_path: Path) -> None:
    """With a timeout longer than the test, an allocation stays open (not stored) across a
    restart; the next allocation of its block closes it."""
    config = make_config(tmp_path / "store", attribution=AttributionConfig(session_timeout_s=3e9))
    with Governance(config) as gov:
        first = collect(gov, [message(pk.set_(300, block(T0, "100.64.0.5", 1024, 2047, 16)))])
        assert allocations(gov) == [] and first["nat.blocks_open"] == 1
        with pa.OSFile(str(gov.state_dir("collector") / "nat_blocks.arrow")) as f:
            saved = ipc.open_file(f).read_all()
        assert saved.column("inside_addr").to_pylist() == ["100.64.0.5"]
    with Governance(config) as gov:
        second = collect(
            gov, [message(pk.set_(300, block(T0 + 7 * MIN, "100.64.0.6", 1024, 2047, 16)))]
        )
        assert allocations(gov) == [row(T0, T0 + 7 * MIN, 1024, 2047, "100.64.0.5")]
        assert second["nat.blocks_open"] == 1 and second["nat.blocks_stored"] == 1


def test_attribution_of_a_public_port_names_the_inside_address_holder(gov: Governance) -> None:
    gov.write_registry(
        "allocations",
        table(
            [
                {"start": T0 - 60 * MIN, "end": None, "addr": "100.64.0.5", "subscriber_id": "Z"},
                {"start": T0 - 60 * MIN, "end": None, "addr": "100.64.0.6", "subscriber_id": "W"},
            ]
        ),
        "test",
        source="radius",
    )
    collect(
        gov,
        [
            message(
                pk.set_(
                    300,
                    block(T0, "100.64.0.5", 1024, 2047, NAT_ALLOC)
                    + block(T0 + 10 * MIN, "100.64.0.5", 1024, 2047, NAT_DEALLOC)
                    + block(T0 + 20 * MIN, "100.64.0.6", 1024, 2047, NAT_ALLOC)
                    + block(T0 + 30 * MIN, "100.64.0.6", 1024, 2047, NAT_DEALLOC),
                )
            )
        ],
    )
    cases = [
        (1500, T0 + 5 * MIN, "ok", "Z", "100.64.0.5"),
        (1024, T0 + 25 * MIN, "ok", "W", "100.64.0.6"),
        (1500, T0 + 15 * MIN, "unknown", None, None),  # between the two holders
        (3000, T0 + 5 * MIN, "unknown", None, None),  # outside the block
    ]
    for port, at, status, sub, inside in cases:
        got = attribute_one(gov, PUB, port, at, measure="M5", actor="desk")
        assert (got.status, got.subscriber_id, got.inside_addr) == (status, sub, inside), port
        if status == "ok":
            assert got.allocation_source == "cgnat-ipfix+radius"


def test_unreadable_open_block_state_is_counted_and_ignored(gov: Governance) -> None:
    (gov.state_dir("collector") / "nat_blocks.arrow").write_bytes(b"not an arrow file")
    counters = collect(gov, [message(pk.set_(300, block(T0, "100.64.0.5", 1024, 2047, 16))), LATER])
    assert counters["nat.errors.state_unreadable"] == 1
    assert allocations(gov) == [row(T0, T0 + 1440 * MIN, 1024, 2047, "100.64.0.5")]


def test_closed_blocks_wait_in_the_saved_state_until_stored(
    gov: Governance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the (rare) stores, closed blocks stay in the saved state: a collector killed
    before storing them stores them after its restart."""
    monkeypatch.setattr(collector_module, "NAT_STORE_EVERY_S", 1e9)
    datagrams = [
        message(
            pk.set_(
                300,
                block(T0, "100.64.0.5", 1024, 2047, NAT_ALLOC)
                + block(T0 + MIN, "100.64.0.5", 1024, 2047, NAT_DEALLOC),
            )
        )
    ]
    first = Collector(gov)
    first._decode(
        PackedDatagrams.pack([Datagram("192.0.2.9", d, ms(T0) / 1000) for d in datagrams])
    )
    first.flush()  # a periodic flush: not stored yet
    assert allocations(gov) == []
    first.close()  # as if killed: nothing more is written
    second = Collector(gov)
    second.flush(final=True)
    assert allocations(gov) == [row(T0, T0 + MIN, 1024, 2047, "100.64.0.5")]
    second.close()


def test_a_failed_store_is_retried_not_lost(
    gov: Governance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that fails (a full disk) keeps the closed blocks for the next store."""
    real = gov.write_registry
    calls: list[int] = []

    def fail_once(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(gov, "write_registry", fail_once)
    c = Collector(gov)
    c._decode(
        PackedDatagrams.pack(
            [
                Datagram(
                    "192.0.2.9",
                    message(
                        pk.set_(
                            300,
                            block(T0, "100.64.0.5", 1024, 2047, NAT_ALLOC)
                            + block(T0 + MIN, "100.64.0.5", 1024, 2047, NAT_DEALLOC),
                        )
                    ),
                    ms(T0) / 1000,
                )
            ]
        )
    )
    c.flush(final=True)
    assert allocations(gov) == [] and c.stats.counters["nat.errors.store"] == 1
    c.flush(final=True)
    assert allocations(gov) == [row(T0, T0 + MIN, 1024, 2047, "100.64.0.5")]
    assert c.stats.counters["nat.blocks_stored"] == 1 and len(calls) == 2
    c.close()
