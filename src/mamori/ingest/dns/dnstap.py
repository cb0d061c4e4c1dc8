"""dnstap messages (https://dnstap.info, ``dnstap.proto``) to ``dns_queries`` rows.

Only CLIENT_QUERY messages are kept, and from each only the client address and port, the time, the
resolver address, and the question (name, type) — the rest of the DNS message is never stored.

The few protobuf fields needed are decoded by hand (wire format: varint keys, varint / 32-bit /
length-delimited values). :func:`decode_messages` decodes many frames at once, in lockstep with
NumPy (:mod:`.pbvec`), and hands the messages it cannot take (malformed ones, names dnspython
would escape, out-of-range values) to :func:`decode_messages_scalar`'s per-message decoder, the
reference for the exact output and error messages. The PyPI ``dnstap-pb`` package (``protobuf``
generated classes) parses the envelope faster but leaves the question and address text to
per-message Python; ``bench/dnstap.py`` compares the three.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dns.name
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mamori.ingest.dns import pbvec
from mamori.schemas import DNS_QUERIES

__all__ = [
    "CONTENT_TYPE",
    "DecodeStats",
    "QueryBatch",
    "decode_messages",
    "decode_messages_scalar",
    "question",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
CLIENT_QUERY = 5
_DNSTAP_MESSAGE = 14
_MAX_LOGGED = 5
# query_time_sec below which sec * 10**9 + nsec (nsec < 2**32) surely fits in int64; above it,
# the scalar decoder decides
_MAX_SEC = 9_000_000_000


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


def _varint(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``; ``what`` names it if it is cut."""
    val = shift = 0
    while True:
        if pos >= end:
            raise _Malformed(f"{what} cut")
        b = buf[pos]
        pos += 1
        val |= (b & 0x7F) << shift
        if b < 0x80:
            return val, pos
        shift += 7


def _fields(buf: bytes) -> dict[int, bytes | int]:
    """Top-level fields of a protobuf message (last value wins, as protobuf says). The scalar
    reference and fallback of :mod:`.pbvec`, which decodes the common case."""
    out: dict[int, bytes | int] = {}
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, end, "key")
        num, wire = key >> 3, key & 7
        if wire == 0:
            out[num], pos = _varint(buf, pos, end, "varint")
        elif wire == 2:
            n, pos = _varint(buf, pos, end, "length")
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
    # the root is "" here, as in the Unbound log parser (dnspython writes it ".")
    return ("" if name == "." else name.lower()), qtype


def _addr(raw: bytes | int | None) -> str | None:
    if not isinstance(raw, bytes) or len(raw) not in (4, 16):
        return None
    return str(ipaddress.ip_address(raw))


# the columns of a decoded batch before :meth:`QueryBatch.table` shapes them for ``dns_queries``
_RAW = pa.schema(
    [
        ("ts_ns", pa.int64()),
        ("client", pa.string()),
        ("port", pa.uint16()),
        ("qname", pa.string()),
        ("qtype", pa.uint16()),
        ("resolver", pa.string()),
    ]
)
_Row = tuple[int, str, int | None, str, int, str | None]


@dataclass
class QueryBatch:
    """Decoded client queries, as Arrow chunks (one per decoded batch of frames)."""

    chunks: list[pa.Table] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(c.num_rows for c in self.chunks)

    def append(self, chunk: pa.Table) -> None:
        if chunk.num_rows:
            self.chunks.append(chunk)

    def extend(self, other: QueryBatch) -> None:
        self.chunks.extend(other.chunks)

    def raw(self) -> pa.Table:
        if not self.chunks:
            return _RAW.empty_table()
        return pa.concat_tables(self.chunks)

    def _column(self, name: str) -> list[Any]:
        values: list[Any] = self.raw().column(name).to_pylist()
        return values

    ts_ns = property(lambda self: self._column("ts_ns"))
    client = property(lambda self: self._column("client"))
    port = property(lambda self: self._column("port"))
    qname = property(lambda self: self._column("qname"))
    qtype = property(lambda self: self._column("qtype"))
    resolver = property(lambda self: self._column("resolver"))

    def table(self) -> pa.Table:
        raw = self.raw()
        ts = raw.column("ts_ns").cast(pa.timestamp("ns", tz="UTC"))
        return pa.table(
            {
                "ts": ts.cast(pa.timestamp("ms", tz="UTC"), safe=False),
                "client_addr": raw.column("client"),
                "client_port": raw.column("port"),
                "qname": raw.column("qname"),
                "qtype": raw.column("qtype"),
                "rcode": pa.nulls(raw.num_rows, pa.uint8()),
                "resolver": raw.column("resolver"),
            },
            schema=DNS_QUERIES.arrow,
        )


def _decode_one(frame: bytes) -> _Row | None:
    """One frame, the reference decoder: its row, or None for a message that is not a client
    query. Raises :class:`_Malformed` (with the reason that gets logged)."""
    top = _fields(frame)
    msg = top.get(_DNSTAP_MESSAGE)
    if not isinstance(msg, bytes):
        raise _Malformed("no message")
    m = _fields(msg)
    if m.get(1) != CLIENT_QUERY:
        return None
    client = _addr(m.get(4))
    wire = m.get(10)
    sec = m.get(8)
    if client is None or not isinstance(wire, bytes) or not isinstance(sec, int):
        raise _Malformed("client query without address, time or message")
    nsec = m.get(9)
    name, qtype = question(wire)
    ts_ns = sec * 1_000_000_000 + (nsec if isinstance(nsec, int) else 0)
    if ts_ns >= 1 << 63:
        raise _Malformed("query time out of range")
    port = m.get(6)
    return (
        ts_ns,
        client,
        port if isinstance(port, int) and port < 65536 else None,
        name,
        qtype,
        _addr(m.get(5)),
    )


def _rows_table(rows: list[_Row]) -> pa.Table:
    if not rows:
        return _RAW.empty_table()
    columns = zip(*rows, strict=True)
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, _RAW, strict=True)], _RAW)


def decode_messages_scalar(
    frames: Iterable[bytes], stats: DecodeStats, batch: QueryBatch | None = None, *, where: str = ""
) -> QueryBatch:
    """:func:`decode_messages` one message at a time in Python: the reference the vectorised
    decoder is tested against, and what it falls back to for unusual messages."""
    out = batch if batch is not None else QueryBatch()
    rows: list[_Row] = []
    for frame in frames:
        stats.frames += 1
        try:
            row = _decode_one(frame)
        except _Malformed as exc:
            stats.bad(f"{where}frame {stats.frames}", str(exc))
            continue
        if row is None:
            stats.other += 1
            continue
        rows.append(row)
        stats.queries += 1
    out.append(_rows_table(rows))
    return out


# frames decoded together: bounds the memory of one lockstep pass (a few hundred bytes of arrays
# per frame); the byte bound applies to frames read from an iterator (a file or a socket)
CHUNK_FRAMES = 65_536
CHUNK_BYTES = 32 << 20


def decode_messages(
    frames: Iterable[bytes], stats: DecodeStats, batch: QueryBatch | None = None, *, where: str = ""
) -> QueryBatch:
    """Append the CLIENT_QUERY messages among ``frames`` to ``batch``; count everything else.

    Frames are decoded in chunks, all messages of a chunk at once (:mod:`.pbvec`). If ``frames``
    raises (a cut stream), the frames read before are decoded first, then the error propagates.
    """
    out = batch if batch is not None else QueryBatch()
    if isinstance(frames, list):
        for i in range(0, len(frames), CHUNK_FRAMES):
            _decode_chunk(frames[i : i + CHUNK_FRAMES], stats, out, where)
        return out
    pending: list[bytes] = []
    size = 0
    try:
        for frame in frames:
            pending.append(frame)
            size += len(frame)
            if len(pending) >= CHUNK_FRAMES or size >= CHUNK_BYTES:
                _decode_chunk(pending, stats, out, where)
                pending, size = [], 0
    finally:
        if pending:
            _decode_chunk(pending, stats, out, where)
    return out


def _combine(n: int, parts: list[tuple[npt.NDArray[np.int64], pa.Array]]) -> pa.Array:
    """One array of ``n`` values: each part's values at its positions, null elsewhere."""
    if len(parts) == 1 and len(parts[0][0]) == n:
        return parts[0][1]  # positions are increasing: all of them, in order
    where_ = np.full(n, -1, dtype=np.int64)
    base = 0
    for pos, _ in parts:
        where_[pos] = base + np.arange(len(pos), dtype=np.int64)
        base += len(pos)
    values = pa.concat_arrays([arr for _, arr in parts])
    return values.take(pa.array(where_, mask=where_ < 0))


def _addr_text(
    pk: pbvec.Packed, start: npt.NDArray[np.int64], size: npt.NDArray[np.int64]
) -> pa.Array:
    """Text of the addresses ``pk.buf[start:start+size]`` (4 or 16 bytes each)."""
    v4 = np.flatnonzero(size == 4)
    v6 = np.flatnonzero(size == 16)
    parts: list[tuple[npt.NDArray[np.int64], pa.Array]] = [(v4, pbvec.ipv4_text(pk.buf, start[v4]))]
    if v6.size:
        text, ok = pbvec.ipv6_text(pk.buf, start[v6])
        parts.append((v6[ok], text.filter(pa.array(ok))))
        if not ok.all():
            mapped = v6[~ok]
            raw = pk.raw
            texts = [str(ipaddress.IPv6Address(raw[a : a + 16])) for a in start[mapped].tolist()]
            parts.append((mapped, pa.array(texts, pa.string())))
    return _combine(start.size, parts)


def _decode_chunk(frames: list[bytes], stats: DecodeStats, out: QueryBatch, where: str) -> None:
    try:
        chunk, counts = _decode_vectorised(frames, stats.frames, where)
    except Exception:
        # a defect of the vectorised path must not cost the data: the reference decodes it all
        log.exception(
            "dnstap: vectorised decoding failed; decoding %d frames one by one", len(frames)
        )
        decode_messages_scalar(frames, stats, out, where=where)
        return
    stats.frames += len(frames)
    stats.other += counts.other
    stats.queries += chunk.num_rows
    for where_, why in counts.bad:
        stats.bad(where_, why)
    out.append(chunk)


@dataclass
class _Counts:
    other: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)


def _decode_vectorised(frames: list[bytes], first: int, where: str) -> tuple[pa.Table, _Counts]:
    """Rows of the client queries among ``frames`` (numbered from ``first + 1``), and counts."""
    pk = pbvec.pack(frames)
    top = pbvec.walk(pk.buf, pk.start, pk.end, (_DNSTAP_MESSAGE,))
    scalar = ~top.ok | (top.kind[_DNSTAP_MESSAGE] != 2)
    cand = np.flatnonzero(~scalar)
    ms = top.val[_DNSTAP_MESSAGE][cand].astype(np.int64)
    m = pbvec.walk(pk.buf, ms, ms + top.size[_DNSTAP_MESSAGE][cand], (1, 4, 5, 6, 8, 9, 10))
    k, v, sz = m.kind, m.val, m.size
    scalar[cand[~m.ok]] = True
    query = m.ok & (k[1] == 1) & (v[1] == CLIENT_QUERY)
    other = int(np.count_nonzero(m.ok & ~query))
    plain = (
        (k[4] == 2)
        & ((sz[4] == 4) | (sz[4] == 16))
        & (k[10] == 2)
        & (k[8] == 1)
        & (v[8] < _MAX_SEC)
        & ((k[9] != 1) | (v[9] < 1 << 32))
    )
    scalar[cand[query & ~plain]] = True
    qi = np.flatnonzero(query & plain)
    names, qtype, name_ok = pbvec.question_names(pk.buf, v[10][qi].astype(np.int64), sz[10][qi])
    scalar[cand[qi[~name_ok]]] = True
    qi = qi[name_ok]
    nsec = np.where(k[9][qi] == 1, v[9][qi], np.uint64(0)).astype(np.int64)
    port_ok = (k[6][qi] == 1) & (v[6][qi] < 65536)
    has_res = (k[5][qi] == 2) & ((sz[5][qi] == 4) | (sz[5][qi] == 16))
    ri = np.flatnonzero(has_res)
    chunk = pa.table(
        [
            pa.array(v[8][qi].astype(np.int64) * 1_000_000_000 + nsec, pa.int64()),
            _addr_text(pk, v[4][qi].astype(np.int64), sz[4][qi]),
            pa.array(np.where(port_ok, v[6][qi], 0).astype(np.uint16), mask=~port_ok),
            names.filter(pa.array(name_ok)),
            pa.array(qtype[name_ok].astype(np.uint16)),
            _combine(qi.size, [(ri, _addr_text(pk, v[5][qi][ri].astype(np.int64), sz[5][qi][ri]))]),
        ],
        schema=_RAW,
    )
    rows_at = cand[qi]
    # the rest, one by one, in frame order (so the logged examples come in stream order)
    counts = _Counts(other)
    fb_rows: list[_Row] = []
    fb_at: list[int] = []
    for i in np.flatnonzero(scalar).tolist():
        try:
            row = _decode_one(frames[i])
        except _Malformed as exc:
            counts.bad.append((f"{where}frame {first + i + 1}", str(exc)))
            continue
        if row is None:
            counts.other += 1
        else:
            fb_rows.append(row)
            fb_at.append(i)
    if fb_rows:
        at = np.concatenate([rows_at, np.array(fb_at, dtype=np.int64)])
        chunk = pa.concat_tables([chunk, _rows_table(fb_rows)]).take(np.argsort(at, kind="stable"))
    return chunk, counts
