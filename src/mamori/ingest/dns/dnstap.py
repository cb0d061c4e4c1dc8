"""dnstap messages (https://dnstap.info, ``dnstap.proto``) to ``dns_queries`` rows.

Only CLIENT_QUERY messages are kept, and from each only the client address and port, the time, the
resolver address, and the question (name, type) — the rest of the DNS message is never stored.

The few protobuf fields needed are decoded by hand (wire format: varint keys, varint / 32-bit /
length-delimited values); the PyPI ``dnstap-pb`` package would add ``protobuf`` and generated code
to decode the same five fields.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.name
import pyarrow as pa

from mamori.schemas import DNS_QUERIES

__all__ = ["CONTENT_TYPE", "DecodeStats", "QueryBatch", "decode_messages", "question"]

log = logging.getLogger(__name__)

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
CLIENT_QUERY = 5
_DNSTAP_MESSAGE = 14
_MAX_LOGGED = 5


class _Malformed(ValueError):
    pass


@dataclass
class DecodeStats:
    frames: int = 0
    queries: int = 0
    other: int = 0  # messages of other types (responses, resolver queries)
    malformed: int = 0
    examples: list[str] = field(default_factory=list)

    def bad(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.examples) < _MAX_LOGGED:
            self.examples.append(f"{where}: {why}")
            log.warning("dnstap: %s: %s", where, why)


def _fields(buf: bytes) -> dict[int, bytes | int]:
    """Top-level fields of a protobuf message (last value wins, as protobuf says)."""
    out: dict[int, bytes | int] = {}
    pos, end = 0, len(buf)
    while pos < end:
        key = shift = 0
        while True:
            if pos >= end:
                raise _Malformed("key cut")
            b = buf[pos]
            pos += 1
            key |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        num, wire = key >> 3, key & 7
        if wire == 0:
            val = shift = 0
            while True:
                if pos >= end:
                    raise _Malformed("varint cut")
                b = buf[pos]
                pos += 1
                val |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            out[num] = val
        elif wire == 2:
            n = shift = 0
            while True:
                if pos >= end:
                    raise _Malformed("length cut")
                b = buf[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            if pos + n > end:
                raise _Malformed(f"field {num} runs past the message")
            out[num] = buf[pos : pos + n]
            pos += n
        elif wire == 5:
            if pos + 4 > end:
                raise _Malformed("fixed32 cut")
            out[num] = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wire == 1:
            if pos + 8 > end:
                raise _Malformed("fixed64 cut")
            out[num] = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        else:
            raise _Malformed(f"wire type {wire}")
    return out


def question(wire: bytes) -> tuple[str, int]:
    """(qname lower case without the final dot, qtype) of a DNS message's first question."""
    if len(wire) < 17:
        raise _Malformed("DNS message shorter than a question")
    (qdcount,) = struct.unpack_from(">H", wire, 4)
    if qdcount < 1:
        raise _Malformed("DNS message without a question")
    labels: list[bytes] = []
    pos = 12
    while True:
        if pos >= len(wire):
            raise _Malformed("question name cut")
        n = wire[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0:
            raise _Malformed("compressed question name")
        labels.append(wire[pos + 1 : pos + 1 + n])
        pos += 1 + n
    if pos + 2 > len(wire):
        raise _Malformed("question type cut")
    (qtype,) = struct.unpack_from(">H", wire, pos)
    try:
        name = dns.name.Name([*labels, b""]).to_text(omit_final_dot=True)
    except dns.name.NameTooLong:
        raise _Malformed("question name too long") from None
    return ("" if name == "@" else name.lower()), qtype


def _addr(raw: bytes | int | None) -> str | None:
    if not isinstance(raw, bytes) or len(raw) not in (4, 16):
        return None
    return str(ipaddress.ip_address(raw))


@dataclass
class QueryBatch:
    ts_ns: list[int] = field(default_factory=list)
    client: list[str] = field(default_factory=list)
    port: list[int | None] = field(default_factory=list)
    qname: list[str] = field(default_factory=list)
    qtype: list[int] = field(default_factory=list)
    resolver: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts_ns)

    def table(self) -> pa.Table:
        schema = DNS_QUERIES.arrow
        ts = pa.array(self.ts_ns, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
        return pa.table(
            {
                "ts": ts.cast(pa.timestamp("ms", tz="UTC"), safe=False),
                "client_addr": pa.array(self.client, pa.string()),
                "client_port": pa.array(self.port, pa.uint16()),
                "qname": pa.array(self.qname, pa.string()),
                "qtype": pa.array(self.qtype, pa.uint16()),
                "rcode": pa.array([None] * len(self), pa.uint8()),
                "resolver": pa.array(self.resolver, pa.string()),
            },
            schema=schema,
        )


def decode_messages(
    frames: Iterable[bytes], stats: DecodeStats, batch: QueryBatch | None = None, *, where: str = ""
) -> QueryBatch:
    """Append the CLIENT_QUERY messages among ``frames`` to ``batch``; count everything else."""
    out = batch if batch is not None else QueryBatch()
    for frame in frames:
        stats.frames += 1
        try:
            top = _fields(frame)
            msg = top.get(_DNSTAP_MESSAGE)
            if not isinstance(msg, bytes):
                raise _Malformed("no message")
            m = _fields(msg)
            if m.get(1) != CLIENT_QUERY:
                stats.other += 1
                continue
            client = _addr(m.get(4))
            wire = m.get(10)
            sec = m.get(8)
            if client is None or not isinstance(wire, bytes) or not isinstance(sec, int):
                raise _Malformed("client query without address, time or message")
            nsec = m.get(9)
            name, qtype = question(wire)
        except _Malformed as exc:
            stats.bad(f"{where}frame {stats.frames}", str(exc))
            continue
        port = m.get(6)
        out.ts_ns.append(sec * 1_000_000_000 + (nsec if isinstance(nsec, int) else 0))
        out.client.append(client)
        out.port.append(port if isinstance(port, int) and port < 65536 else None)
        out.qname.append(name)
        out.qtype.append(qtype)
        out.resolver.append(_addr(m.get(5)))
        stats.queries += 1
    return out
