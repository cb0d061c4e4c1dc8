"""The decoder's IPv4 addresses as integers (``DecodeResult.addr4``), row for row with the text
the flows carry: what ``collect --detect-ddos`` hands the DDoS engine instead of text."""

from __future__ import annotations

import ipaddress

import pyarrow as pa
import pytest

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
