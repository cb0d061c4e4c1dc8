"""NetFlow v5: a fixed 24-byte header and 48-byte records, decoded as one fixed template."""

from __future__ import annotations

import struct
from typing import Final

from mamori.ingest.netflow import fields as ie
from mamori.ingest.netflow.batch import Batch
from mamori.ingest.netflow.templates import FieldSpec, SamplingState, Template

__all__ = ["HEADER", "RECORD_LENGTH", "V5_TEMPLATE", "parse_v5"]

HEADER: Final = struct.Struct("!HHIIIIBBH")
RECORD_LENGTH: Final = 48
MAX_RECORDS: Final = 30
_PAD: Final = 210  # paddingOctets

V5_TEMPLATE: Final = Template(
    version=5,
    template_id=0,
    fields=tuple(
        FieldSpec(fid, length)
        for fid, length in (
            (ie.SOURCE_IPV4_ADDRESS, 4),
            (ie.DESTINATION_IPV4_ADDRESS, 4),
            (15, 4),  # ipNextHopIPv4Address
            (ie.INGRESS_INTERFACE, 2),
            (ie.EGRESS_INTERFACE, 2),
            (ie.PACKET_DELTA_COUNT, 4),
            (ie.OCTET_DELTA_COUNT, 4),
            (ie.FLOW_START_SYS_UP_TIME, 4),
            (ie.FLOW_END_SYS_UP_TIME, 4),
            (ie.SOURCE_TRANSPORT_PORT, 2),
            (ie.DESTINATION_TRANSPORT_PORT, 2),
            (_PAD, 1),
            (ie.TCP_CONTROL_BITS, 1),
            (ie.PROTOCOL_IDENTIFIER, 1),
            (ie.IP_CLASS_OF_SERVICE, 1),
            (16, 2),  # bgpSourceAsNumber
            (17, 2),  # bgpDestinationAsNumber
            (9, 1),  # sourceIPv4PrefixLength
            (13, 1),  # destinationIPv4PrefixLength
            (_PAD, 2),
        )
    ),
)
assert V5_TEMPLATE.record_length == RECORD_LENGTH

_NO_SAMPLING: Final = SamplingState()


def parse_v5(payload: bytes, exporter: str, received: float, batch: Batch) -> None:
    """Queue the records of one NetFlow v5 datagram."""
    if len(payload) < HEADER.size:
        batch.problem("errors.truncated", exporter, "v5 header")
        return
    _, count, uptime, secs, nsecs, _, _, _, sampling = HEADER.unpack_from(payload)
    batch.counters["packets.v5"] += 1
    available = (len(payload) - HEADER.size) // RECORD_LENGTH
    if count > MAX_RECORDS and len(payload) != HEADER.size + count * RECORD_LENGTH:
        # More records than v5 allows and a length that does not fit them either: not a v5
        # packet (random bytes behind a 5), whose "records" would be stored as garbage flows.
        batch.problem(
            "errors.bad_count", exporter, f"v5 count {count} in {len(payload)} bytes: refused"
        )
        return
    if count > available:  # cut short (a capture's snap length): the whole records are kept
        batch.problem("errors.truncated", exporter, f"v5 count {count} > {available} records")
        count = available
    if count > MAX_RECORDS:
        batch.problem("errors.bad_count", exporter, f"v5 count {count}")
    if count == 0:
        return
    body = memoryview(payload)[HEADER.size : HEADER.size + count * RECORD_LENGTH]
    export_ms = secs * 1000 + nsecs // 1_000_000
    rate = sampling & 0x3FFF  # the 2-bit mode is not needed: 0 is "unknown" whatever the mode
    batch.add_fixed(
        V5_TEMPLATE, body, exporter, -1, export_ms, uptime, rate, _NO_SAMPLING, received
    )
