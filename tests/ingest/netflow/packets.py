"""Builders for NetFlow v5 / v9 and IPFIX datagrams, and loaders for the captures in tests/data."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from pathlib import Path

from mamori.ingest.netflow import Datagram
from mamori.ingest.pcapfile import read_udp

DATA = Path(__file__).resolve().parents[2] / "data" / "netflow"

Field = tuple[int, int] | tuple[int, int, int]  # (id, length[, enterprise])


def pcap_datagrams(name: str) -> list[Datagram]:
    return [Datagram(u.src, u.payload, u.ts) for u in read_udp(DATA / name)]


def bin_datagrams(
    name: str, exporter: str = "127.0.0.1", received: float = 1.7e9
) -> list[Datagram]:
    """[2-byte big-endian length][UDP payload] repeated, gzip-compressed."""
    raw = gzip.decompress((DATA / name).read_bytes())
    out = []
    pos = 0
    while pos < len(raw):
        (n,) = struct.unpack_from("!H", raw, pos)
        out.append(Datagram(exporter, raw[pos + 2 : pos + 2 + n], received))
        pos += 2 + n
    return out


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def set_(set_id: int, body: bytes, pad: bool = True) -> bytes:
    body = _pad4(body) if pad else body
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def v9_template(tid: int, fields: Sequence[Field]) -> bytes:
    return set_(
        0,
        struct.pack("!HH", tid, len(fields))
        + b"".join(struct.pack("!HH", f[0], f[1]) for f in fields),
    )


def v9_options_template(tid: int, scope: Sequence[Field], opts: Sequence[Field]) -> bytes:
    body = struct.pack("!HHH", tid, 4 * len(scope), 4 * len(opts))
    body += b"".join(struct.pack("!HH", f[0], f[1]) for f in (*scope, *opts))
    return set_(1, body)


def v9(
    sets: Sequence[bytes],
    *,
    uptime: int = 100_000,
    secs: int = 1_700_000_000,
    source_id: int = 0,
    seq: int = 0,
) -> bytes:
    return struct.pack("!HHIIII", 9, len(sets), uptime, secs, seq, source_id) + b"".join(sets)


def _ipfix_field(f: Field) -> bytes:
    if len(f) == 3:
        return struct.pack("!HHI", f[0] | 0x8000, f[1], f[2])
    return struct.pack("!HH", f[0], f[1])


def ipfix_template(tid: int, fields: Sequence[Field]) -> bytes:
    return set_(2, struct.pack("!HH", tid, len(fields)) + b"".join(map(_ipfix_field, fields)))


def ipfix_options_template(tid: int, scope: Sequence[Field], opts: Sequence[Field]) -> bytes:
    body = struct.pack("!HHH", tid, len(scope) + len(opts), len(scope))
    return set_(3, body + b"".join(map(_ipfix_field, (*scope, *opts))))


def ipfix(sets: Sequence[bytes], *, export: int = 1_700_000_000, domain: int = 0) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(body), export, 0, domain) + body


def v5(
    records: Sequence[bytes],
    *,
    uptime: int = 100_000,
    secs: int = 1_700_000_000,
    nsecs: int = 0,
    sampling: int = 0,
) -> bytes:
    head = struct.pack("!HHIIIIBBH", 5, len(records), uptime, secs, nsecs, 0, 0, 0, sampling)
    return head + b"".join(records)


def v5_record(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    proto: int = 6,
    packets: int = 1,
    octets: int = 60,
    first: int = 90_000,
    last: int = 95_000,
    flags: int = 0x12,
    tos: int = 0,
    input_if: int = 1,
    output_if: int = 2,
) -> bytes:
    return struct.pack(
        "!4s4s4sHHIIIIHHBBBBHHBBH",
        ip4(src),
        ip4(dst),
        b"\0" * 4,
        input_if,
        output_if,
        packets,
        octets,
        first,
        last,
        sport,
        dport,
        0,
        flags,
        proto,
        tos,
        0,
        0,
        0,
        0,
        0,
    )


def ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


# An RFC 8158 port block allocation / de-allocation record (ids from the IANA IPFIX registry):
# observationTimeMilliseconds, sourceIPv4Address (inside), postNATSourceIPv4Address
# (outside), portRangeStart, portRangeEnd, natEvent.
NAT_BLOCK_FIELDS: tuple[Field, ...] = ((323, 8), (8, 4), (225, 4), (361, 2), (362, 2), (230, 1))
NAT_ALLOC, NAT_DEALLOC = 16, 17


def nat_block(ms: int, inside: str, outside: str, first: int, last: int, event: int) -> bytes:
    """One record of the NAT_BLOCK_FIELDS template."""
    return struct.pack("!Q4s4sHHB", ms, ip4(inside), ip4(outside), first, last, event)
