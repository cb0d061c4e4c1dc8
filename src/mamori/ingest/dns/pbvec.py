"""Lockstep decoding of many dnstap messages at once (NumPy), for :mod:`.dnstap`.

All frames of a batch are joined into one ``uint8`` buffer; every step below advances *all*
messages still being read by one protobuf field (or one DNS label), so the Python loop runs as
many times as the longest message has fields (about 11), not once per message.

The vectorised path only ever says "decoded", "not a client query", or "not mine": anything
unusual (a malformed message, a varint longer than 10 bytes or above 2**64, a question name that
dnspython would escape) is left to the scalar decoder
in :mod:`.dnstap`, which stays the reference for the exact output and error messages; only
IPv4-mapped IPv6 addresses get their text from :mod:`ipaddress` one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = ["Packed", "Walk", "ipv4_text", "ipv6_text", "pack", "question_names", "walk"]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]
B = npt.NDArray[np.bool_]

_PAD = 16  # zero bytes after the joined frames, so fixed-width gathers never index past the end
_AR4 = np.arange(4, dtype=np.int64)
_AR8 = np.arange(8, dtype=np.int64)
_LE = (8 * np.arange(8)).astype(np.uint64)
MAX_NAME_WIRE = 255  # RFC 1035 (dnspython raises NameTooLong above it)

# bytes dnspython's Name.to_text writes as they are: printable ASCII except its escaped set
_PLAIN = np.zeros(256, dtype=np.bool_)
_PLAIN[0x21:0x7F] = True
_PLAIN[np.frombuffer(b'"().;\\@$', dtype=np.uint8)] = False

_DIGITS = np.zeros((256, 3), dtype=np.uint8)
_NDIGITS = np.zeros(256, dtype=np.int64)
for _i in range(256):
    _t = str(_i).encode()
    _DIGITS[_i, : len(_t)] = np.frombuffer(_t, dtype=np.uint8)
    _NDIGITS[_i] = len(_t)
# column of each octet's three digit slots (and of the dots) in a 16-wide "ddd.ddd.ddd.ddd_" row
_DIGIT_COLS = np.array([4 * k + j for k in range(4) for j in range(3)], dtype=np.int64)
_DOT_COLS = np.array([3, 7, 11], dtype=np.int64)


@dataclass(frozen=True)
class Packed:
    """Frames joined: frame ``i`` is ``buf[start[i]:end[i]]`` (``raw`` is the same bytes)."""

    raw: bytes
    buf: U8
    start: I64
    end: I64


def pack(frames: Sequence[bytes]) -> Packed:
    lens = np.fromiter(map(len, frames), dtype=np.int64, count=len(frames))
    end = np.cumsum(lens)
    raw = b"".join(frames)
    buf = np.frombuffer(raw + bytes(_PAD), dtype=np.uint8)
    return Packed(raw, buf, end - lens, end)


def _varint(buf: U8, pos: I64, end: I64) -> tuple[U64, I64, B]:
    """Varints at ``pos`` (each bounded by ``end``): value, position after it, and whether it was
    read (False: cut by ``end``, longer than 10 bytes, or not below 2**64)."""
    # callers pass pos <= end <= the joined frames' length, so pos + 9 stays inside the padding
    first = buf[pos]
    val = first.astype(np.uint64)
    after = pos + 1
    ok = pos < end
    long_ = np.flatnonzero(ok & (first >= 0x80))
    if long_.size:
        # byte by byte over the varints still going: most are short (a port takes 3 bytes)
        p, e = pos[long_], end[long_]
        acc = val[long_] & np.uint64(0x7F)
        stop = p + 1
        good = np.ones(long_.size, dtype=np.bool_)
        live = np.arange(long_.size)
        for j in range(1, 10):
            q = p[live] + j
            inside = q < e[live]
            b = buf[q]
            good[live[~inside]] = False
            if j == 9:
                good[live[b > 1]] = False  # the value would reach 2**64 (or go on)
            acc[live] |= (b & 0x7F).astype(np.uint64) << np.uint64(7 * j)
            end_here = inside & (b < 0x80)
            stop[live[end_here]] = q[end_here] + 1
            live = live[inside & (b >= 0x80)]
            if not live.size:
                break
        val[long_] = acc
        after[long_] = stop
        ok[long_] = good
    return val, after, ok


def _fixed(buf: U8, pos: I64, width: int) -> U64:
    ar = _AR4 if width == 4 else _AR8
    b = buf[pos[:, None] + ar].astype(np.uint64)  # pos <= end: inside the padding at worst
    out: U64 = (b << _LE[:width]).sum(axis=1, dtype=np.uint64)
    return out


@dataclass
class Walk:
    """The wanted fields of each message: ``kind`` 0 absent, 1 integer (varint / fixed32 /
    fixed64, ``val``), 2 bytes (``val`` = start in the buffer, ``size``). ``ok`` False: the walk
    could not read the message (malformed or unusual): the scalar decoder must."""

    ok: B
    kind: dict[int, npt.NDArray[np.int8]]
    val: dict[int, U64]
    size: dict[int, I64]


def walk(buf: U8, start: I64, end: I64, fields: tuple[int, ...]) -> Walk:
    """Protobuf fields ``fields`` of the messages ``buf[start:end]``, last value winning."""
    n = start.size
    nf = len(fields)
    ok = np.ones(n, dtype=np.bool_)
    # one row per wanted field (row nf: every other field, written and never read)
    slot_of = np.full(max(fields) + 1, nf, dtype=np.int64)
    slot_of[list(fields)] = np.arange(nf)
    kind = np.zeros((nf + 1, n), dtype=np.int8)
    val = np.zeros((nf + 1, n), dtype=np.uint64)
    size = np.zeros((nf + 1, n), dtype=np.int64)
    pos = start.copy()
    act = np.flatnonzero(pos < end)
    while act.size:
        p, e = pos[act], end[act]
        key, p, good = _varint(buf, p, e)
        wire = key & np.uint64(7)
        num = key >> np.uint64(3)
        w2 = wire == 2
        w5, w1 = wire == 5, wire == 1
        varint = w2 | (wire == 0)
        good &= varint | w5 | w1
        # read a varint after every key (most values are); fixed-width ones are redone below
        v, nxt, vok = _varint(buf, p, e)
        good &= vok | ~varint
        room = np.maximum(e - nxt, 0).astype(np.uint64)
        good &= ~w2 | (v <= room)
        body = nxt.copy()  # where a length-delimited value starts
        nxt = nxt + np.where(w2 & good, v, np.uint64(0)).astype(np.int64)
        for width, w in ((4, w5), (8, w1)):
            fi = np.flatnonzero(good & w)
            if fi.size:
                good[fi] &= p[fi] + width <= e[fi]
                v[fi] = _fixed(buf, p[fi], width)
                nxt[fi] = p[fi] + width
        slot = slot_of[np.minimum(num, np.uint64(slot_of.size - 1)).astype(np.int64)]
        slot[num >= slot_of.size] = nf
        flat = slot * n + act
        kind.ravel()[flat] = np.where(w2, 2, 1)
        val.ravel()[flat] = np.where(w2, body.astype(np.uint64), v)
        size.ravel()[flat] = np.where(w2, v, np.uint64(0)).astype(np.int64)
        ok[act[~good]] = False
        pos[act] = nxt
        act = act[good & (nxt < e)]
    return Walk(
        ok,
        {f: kind[i] for i, f in enumerate(fields)},
        {f: val[i] for i, f in enumerate(fields)},
        {f: size[i] for i, f in enumerate(fields)},
    )


def question_names(buf: U8, start: I64, size: I64) -> tuple[pa.StringArray, U64, B]:
    """First question of the DNS messages ``buf[start:start+size]``: names (lower case, no final
    dot, as dnspython writes them), qtypes, and ``ok`` (False: the scalar decoder must look — a
    malformed question, or a name dnspython would escape)."""
    n = start.size
    stop = start + size
    ok = size >= 17
    safe = np.where(ok, start, 0)
    ok &= ((buf[safe + 4].astype(np.int64) << 8) | buf[safe + 5]) >= 1
    begin = start + 12
    p = begin.copy()
    label_row: list[I64] = []  # the label length bytes met: their row and buffer position
    label_at: list[I64] = []
    act = np.flatnonzero(ok)
    while act.size:
        pp, ee = p[act], stop[act]
        cut = (pp >= ee) | (pp - begin[act] >= MAX_NAME_WIRE)
        ln = buf[np.minimum(pp, buf.size - 1)]
        bad = cut | ((ln & 0xC0) != 0)
        ok[act[bad]] = False
        go = ~bad & (ln != 0)
        label_row.append(act[go])
        label_at.append(pp[go])
        p[act[go]] = pp[go] + 1 + ln[go]
        act = act[go]
    # p: the root label (0) ending each name
    ok &= (p + 3 <= stop) & (p + 1 - begin <= MAX_NAME_WIRE)
    p = np.where(ok, p, begin)
    qtype = (buf[p + 1].astype(np.uint64) << np.uint64(8)) | buf[p + 2]
    text_len = np.maximum(p - begin - 1, 0)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(text_len, out=offsets[1:])
    total = int(offsets[-1])
    idx = np.repeat(begin + 1 - offsets[:-1], text_len) + np.arange(total, dtype=np.int64)
    data = buf[idx]
    # a label length byte inside a name's text (not the first) is written as a dot
    rows = np.concatenate(label_row) if label_row else np.zeros(0, dtype=np.int64)
    at = np.concatenate(label_at) if label_at else np.zeros(0, dtype=np.int64)
    inner = at > begin[rows]
    dots = (at - begin[rows] - 1 + offsets[:-1][rows])[inner & (at < p[rows])]
    plain = _PLAIN[data]
    plain[dots] = True
    if not plain.all():
        row = np.repeat(np.arange(n), text_len)
        ok[row[~plain]] = False
    data[dots] = ord(".")
    upper = (data >= ord("A")) & (data <= ord("Z"))
    data[upper] += 32
    names = pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data.tobytes())
    )
    return names, qtype, ok


def ipv4_text(buf: U8, start: I64) -> pa.Array:
    """Dotted-quad text of the 4-byte addresses at ``start``."""
    octets = buf[start[:, None] + _AR4]
    # a batch repeats addresses (a client asks many names, one resolver logs them all):
    # the text is made once per distinct address
    unique, inverse = np.unique(octets.view(np.uint32).ravel(), return_inverse=True)
    return _dotted(unique.view(np.uint8).reshape(-1, 4)).take(pa.array(inverse.ravel()))


def _dotted(octets: U8) -> pa.StringArray:
    n = octets.shape[0]
    cells = np.zeros((n, 16), dtype=np.uint8)
    keep = np.zeros((n, 16), dtype=np.bool_)
    cells[:, _DIGIT_COLS] = _DIGITS[octets].reshape(n, 12)
    keep[:, _DIGIT_COLS] = (np.arange(3)[None, None, :] < _NDIGITS[octets][:, :, None]).reshape(
        n, 12
    )
    cells[:, _DOT_COLS] = ord(".")
    keep[:, _DOT_COLS] = True
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(cells[keep].tobytes())
    )


# lower-case hex of every 16-bit group without leading zeros, as ipaddress writes it
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_G = np.arange(1 << 16)
_GLEN = np.maximum(1, (np.floor(np.log2(np.maximum(_G, 1))) // 4 + 1).astype(np.int64))
_GDIGITS = np.zeros((1 << 16, 4), dtype=np.uint8)
for _k in range(4):
    _GDIGITS[:, _k] = _HEX[(_G >> (4 * (_GLEN - 1 - _k)).clip(0)) & 0xF]
_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, written differently by Python >= 3.13


def ipv6_text(buf: U8, start: I64) -> tuple[pa.StringArray, B]:
    """RFC 5952 text of the 16-byte addresses at ``start``, exactly as :mod:`ipaddress` writes
    it (the first longest run of two or more zero groups becomes ``::``), and ``ok``: False for
    IPv4-mapped addresses, whose text depends on the Python version (left to ipaddress)."""
    n = start.size
    raw = buf[start[:, None] + np.arange(16)]
    ok = ~(raw[:, :12] == np.frombuffer(_MAPPED, dtype=np.uint8)).all(axis=1)
    groups = (raw[:, 0::2].astype(np.int64) << 8) | raw[:, 1::2]
    zero = groups == 0
    run = np.zeros((n, 8), dtype=np.int64)  # length of the zero run ending at each group
    run[:, 0] = zero[:, 0]
    for j in range(1, 8):
        run[:, j] = (run[:, j - 1] + 1) * zero[:, j]
    last = run.argmax(axis=1)  # first longest run (ipaddress keeps the first of equal runs)
    length = run[np.arange(n), last]
    length = np.where(length > 1, length, 0)
    first = last - length + 1
    col = np.arange(8)[None, :]
    inrun = (col >= first[:, None]) & (col <= last[:, None]) & (length[:, None] > 0)
    # cells: a leading ":", then per group 4 digit cells and a ":" after it, then a trailing ":"
    cells = np.full((n, 42), ord(":"), dtype=np.uint8)
    keep = np.zeros((n, 42), dtype=np.bool_)
    digit_cols = 1 + 5 * np.arange(8)[:, None] + np.arange(4)[None, :]  # (8, 4)
    cells[:, digit_cols] = _GDIGITS[groups]
    keep[:, digit_cols] = (np.arange(4)[None, None, :] < _GLEN[groups][:, :, None]) & ~inrun[
        :, :, None
    ]
    keep[:, 1 + 5 * np.arange(7) + 4] = ~(inrun[:, :7] & inrun[:, 1:])
    compressed = length > 0
    keep[:, 0] = compressed & (first == 0)
    keep[:, 41] = compressed & (last == 7)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    text = pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(cells[keep].tobytes())
    )
    return text, ok
