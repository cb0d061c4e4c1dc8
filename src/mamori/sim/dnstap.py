"""dnstap (protobuf) in a Frame Streams file, written by hand: what a resolver logs with dnstap.

Frame Streams (https://farsightsec.github.io/fstrm/): a START control frame carrying the content
type ``protobuf:dnstap.Dnstap``, one length-prefixed data frame per message, a STOP frame.
Messages follow ``dnstap.proto`` (https://dnstap.info): ``Dnstap{identity=1, version=2, type=15
(MESSAGE), message=14}`` with ``Message{type=1 (CLIENT_QUERY=5), socket_family=2 (INET=1),
socket_protocol=3 (UDP=1), query_address=4, response_address=5, query_port=6, response_port=7,
query_time_sec=8, query_time_nsec=9 (fixed32), query_message=10}``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
FSTRM_CONTROL_START = 2
FSTRM_CONTROL_STOP = 3
FSTRM_FIELD_CONTENT_TYPE = 1
CLIENT_QUERY = 5
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28, "ANY": 255}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _uint(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def dns_query(qid: int, name: str, qtype: str = "A") -> bytes:
    """A recursive DNS query in wire format (RFC 1035)."""
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split(".") if p)
    return (
        struct.pack(">HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack(">HH", QTYPES.get(qtype, 1), 1)
    )


def client_query(
    ts: float,
    client: bytes,
    port: int,
    resolver: bytes,
    name: str,
    qtype: str,
    qid: int,
    identity: bytes,
    version: bytes,
) -> bytes:
    sec = int(ts)
    nsec = min(round((ts - sec) * 1e6), 999_999) * 1000
    msg = (
        _uint(1, CLIENT_QUERY) + _uint(2, 1) + _uint(3, 1) + _bytes(4, client) + _bytes(5, resolver)
        + _uint(6, port) + _uint(7, 53) + _uint(8, sec) + _key(9, 5) + struct.pack("<I", nsec)
        + _bytes(10, dns_query(qid, name, qtype))
    )  # fmt: skip
    return _bytes(1, identity) + _bytes(2, version) + _uint(15, 1) + _bytes(14, msg)


def _control(kind: int, content_type: bool) -> bytes:
    body = struct.pack(">I", kind)
    if content_type:
        body += struct.pack(">II", FSTRM_FIELD_CONTENT_TYPE, len(CONTENT_TYPE)) + CONTENT_TYPE
    return struct.pack(">II", 0, len(body)) + body


def write_frame_stream(path: Path, messages: Iterable[bytes]) -> int:
    n = 0
    with path.open("wb") as fh:
        fh.write(_control(FSTRM_CONTROL_START, True))
        for m in messages:
            fh.write(struct.pack(">I", len(m)) + m)
            n += 1
        fh.write(_control(FSTRM_CONTROL_STOP, False))
    return n
