"""The decoder's IPv4 addresses as integers (``DecodeResult.addr4``), row for row with the text
the flows carry: what ``collect --detect-ddos`` hands the DDoS engine instead of text."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pyarrow as pa
import pytest

from mamori.governance import Governance
from mamori.ingest.netflow import fields as ie
from mamori.ingest.netflow.decoder import Datagram, FlowDecoder
from tests.ingest.netflow.packets import (
    bin_datagrams,
    ip4,
    ipfix,
    ipfix_template,
    set_,
    v5,
    v5_record,
)

PCAPS = Path(__file__).parents[2] / "data/netflow"
REPLAYS = {
    "IPv6": ("111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources__traffic-01.pcap", {6}),
    "IPv4": ("101-NFv9-CISCO-cust_primitives__traffic-00.pcap", {4}),
}
DUAL = [
    (ie.SOURCE_IPV4_ADDRESS, 4),
    (ie.DESTINATION_IPV4_ADDRESS, 4),
    (ie.SOURCE_IPV6_ADDRESS, 16),
    (ie.DESTINATION_IPV6_ADDRESS, 16),
    (ie.PROTOCOL_IDENTIFIER, 1),
]
V6 = ipaddress.IPv6Address("2001:db8::7").packed
ZERO6 = bytes(16)


def _dual(src4: str, dst4: str, src6: bytes, dst6: bytes) -> bytes:
    return ip4(src4) + ip4(dst4) + src6 + dst6 + b"\x11"


V5 = v5([v5_record("10.0.0.1", "198.51.100.9", 1234, 80)] * 3)
SOFTFLOWD = bin_datagrams("softflowd_v9_packets.bin.gz", exporter="192.0.2.1")[:50]
SOFTFLOWD += bin_datagrams("softflowd_v10_packets.bin.gz", exporter="192.0.2.2")[:50]
BOTH = set_(
    300,
    _dual("10.9.8.7", "203.0.113.1", ZERO6, ZERO6)  # IPv4
    + _dual("0.0.0.0", "0.0.0.0", V6, V6)  # IPv6
    + _dual("10.9.8.6", "0.0.0.0", ZERO6, V6),  # IPv4 source, IPv6 destination
)
CASES = {
    "v5": [Datagram("192.0.2.3", V5, 1.7e9)],
    "softflowd v9 and IPFIX": SOFTFLOWD,
    "IPFIX with both families": [
        Datagram("192.0.2.5", ipfix([ipfix_template(300, DUAL), BOTH]), 1.7e9)
    ],
}


@pytest.mark.parametrize("datagrams", CASES.values(), ids=CASES.keys())
def test_integers_are_the_text_addresses(datagrams: list[Datagram]) -> None:
    result = FlowDecoder().decode(datagrams)
    assert result.flows.num_rows > 0
    assert result.addr4 is not None and result.addr4.num_rows == result.flows.num_rows
    for name in ("src_addr", "dst_addr"):
        text = result.flows.column(name).to_pylist()
        ints = result.addr4.column(name + "_v4").to_pylist()
        for t, i in zip(text, ints, strict=True):
            a = ipaddress.ip_address(t)
            if a.version == 4:
                assert i == int(a)
            else:
                assert i is None


def test_collector_hands_an_observer_the_integers_of_its_authorised_addresses() -> None:
    from mamori.ingest.collector import _observed

    flows = pa.table({"src_addr": ["10.0.0.1", "2001:db8::1"], "dst_addr": ["10.0.0.2"] * 2,
                      "packets": [1, 2]})  # fmt: skip
    addr4 = pa.table({"src_addr_v4": pa.array([167772161, None], pa.uint32()),
                      "dst_addr_v4": pa.array([167772162] * 2, pa.uint32())})  # fmt: skip
    assert _observed(flows, addr4, ("src_addr", "packets")).column_names == [
        "src_addr", "packets", "src_addr_v4"]  # fmt: skip
    # an observer not authorised for an address gets no form of it
    assert _observed(flows, addr4, ("packets",)).column_names == ["packets"]
    assert _observed(flows, None, ("src_addr",)).column_names == ["src_addr"]


@pytest.mark.parametrize(("pcap", "expected"), REPLAYS.values(), ids=REPLAYS.keys())
def test_collector_observer_sees_integers_and_is_told_of_each_flush(
    gov: Governance, pcap: str, expected: set[int]
) -> None:
    """A real replay of a capture: the observer's integers are its text addresses (none for
    IPv6); the after-flush hooks run once the records are in the store."""
    from mamori.ingest.collector import Collector, replaying

    seen: list[pa.Table] = []
    flushes: list[tuple[bool, int]] = []

    class Observer:
        columns = ("src_addr", "dst_addr")

        def __call__(self, flows: pa.Table) -> None:
            seen.append(flows)

    collector = Collector(gov, replaying(gov.config.collector))
    collector.observers.append(Observer())

    def stored(final: bool) -> None:
        flushes.append((final, gov.open("M13", "flows", ["src_addr"], "t").arrow().num_rows))

    collector.after_flush.append(stored)
    collector.replay_pcap(PCAPS / pcap)
    flows = pa.concat_tables(seen)
    assert flows.column_names == ["src_addr", "dst_addr", "src_addr_v4", "dst_addr_v4"]
    families = set()
    for name in ("src_addr", "dst_addr"):
        for t, i in zip(flows.column(name).to_pylist(), flows.column(name + "_v4").to_pylist(),
                        strict=True):  # fmt: skip
            a = ipaddress.ip_address(t)
            families.add(a.version)
            assert i == (int(a) if a.version == 4 else None)
    assert families == expected
    assert flushes[-1] == (True, flows.num_rows)
