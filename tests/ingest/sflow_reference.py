"""Reference sFlow v5 decoder for differential tests: a plain per-sample Python walk.

It is the first implementation of ``mamori.ingest.sflow`` (before the walk was vectorised), kept
here as an oracle: for any input, the vectorised decoder must give the same table and counters.
Same rules: the first raw packet header record wins if it parses to IP, else the first sampled
IPv4/IPv6 record; VLAN tags, MPLS labels and IPv6 extension headers are followed up to 8, 16, 8.
"""

from __future__ import annotations

import array
import collections
import ipaddress
import logging
import struct
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mamori.schemas import FLOWS

__all__ = ["decode_sflow"]

LOG_INTERVAL_S = 10.0
"""At most one log line per error kind per this many seconds (the counters count every one)."""

_log = logging.getLogger(__name__)

# --- sFlow v5 constants (sflow.org/sflow_version_5.txt) -------------------------------------------

_SAMPLE_FLOW = 1
_SAMPLE_COUNTER = 2
_SAMPLE_EXPANDED_FLOW = 3
_SAMPLE_EXPANDED_COUNTER = 4
_SAMPLE_DROP = 5  # sFlow drop notifications (sflow.org/sflow_drops.txt), "discarded packet"

_RECORD_RAW_HEADER = 1
_RECORD_SAMPLED_IPV4 = 3
_RECORD_SAMPLED_IPV6 = 4

_HEADER_PROTO_ETHERNET = 1
_HEADER_PROTO_IPV4 = 11
_HEADER_PROTO_IPV6 = 12

_ETH_VLAN = frozenset((0x8100, 0x88A8, 0x9100))
_ETH_MPLS = frozenset((0x8847, 0x8848))
_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD

_PORT_PROTOCOLS = frozenset((6, 17, 33, 132, 136))  # TCP, UDP, DCCP, SCTP, UDP-Lite
_ICMP_PROTOCOLS = frozenset((1, 58))
_IPV6_EXT_GENERIC = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44
_IPV6_AH = 51

_U32 = struct.Struct(">I")
_U32X2 = struct.Struct(">II")
_RAW_HEADER = struct.Struct(">IIII")  # header_protocol, frame_length, stripped, header_length

_IF_UNKNOWN = 0x3FFFFFFF


class _RateLimitedLog:
    """Logs at most one warning per kind per interval, saying how many were suppressed."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def warn(self, kind: str, detail: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        _log.warning("sflow decode error %s: %s (%d similar suppressed)", kind, detail, suppressed)


_ratelog = _RateLimitedLog(LOG_INTERVAL_S)


# --- the walk: Python finds offsets, NumPy reads the fields ---------------------------------------
#
# The XDR walk (samples, records, Ethernet/VLAN/MPLS, IP header length, IPv6 extension headers)
# is a per-sample Python loop: it validates lengths and records, per row, where each field lies in
# the batch's concatenated payloads. Every field is then read for all rows at once with NumPy
# gathers, addresses are turned into text once per distinct address, and each Arrow array is built
# once per batch.

# Row layout: one int64 per slot, _ROW_WIDTH slots per row.
(
    _R_DGRAM,  # index of the datagram in the batch (time, exporter)
    _R_SAMPLE,  # offset of the sample body (fixed-offset fields: rate, source, interfaces)
    _R_EXPANDED,  # 1 = expanded flow sample (format 3)
    _R_LENGTH,  # offset of the u32 packet length (frame_length or sampled length)
    _R_ADDR,  # offset of the source address; the destination follows it
    _R_V6,  # 1 = IPv6 addresses (16 bytes), 0 = IPv4
    _R_PROTO,  # IP protocol (value, not offset)
    _R_TOS,  # offset of the ToS byte (IPv4, sampled) or of the IPv6 version/class bytes
    _R_TOS_V6,  # 1 = traffic class spans two nibbles at _R_TOS, _R_TOS + 1
    _R_SPORT,  # offset of a big-endian u16 source port, or -1
    _R_DPORT,  # offset of a big-endian u16 destination port (or ICMP type, code), or -1
    _R_FLAGS,  # offset of the TCP flags byte, or -1
) = range(12)
_ROW_WIDTH = 12
_PAD = bytes(64)  # appended to the batch so gathers at fixed offsets never run past the end

# What an IP parse gives: slots _R_ADDR … _R_FLAGS of a row
_L3 = tuple[int, int, int, int, int, int, int, int]


def _parse_ip(
    h: bytes, q: int, end: int, version: int, counters: collections.Counter[str]
) -> _L3 | None:
    """Locate the fields of the IP header starting at ``h[q]`` (bytes up to ``end`` captured)."""
    if q >= end or h[q] >> 4 != version:
        counters["skipped.raw_header_bad_ip_version"] += 1
        return None
    nonfirst_fragment = False
    if version == 4:
        if q + 20 > end:
            counters["skipped.raw_header_ip_truncated"] += 1
            return None
        ihl = (h[q] & 0x0F) * 4
        if ihl < 20:
            counters["skipped.raw_header_bad_ihl"] += 1
            return None
        nonfirst_fragment = ((h[q + 6] & 0x1F) << 8 | h[q + 7]) != 0
        proto = h[q + 9]
        addr, v6, tos, tos_v6 = q + 12, 0, q + 1, 0
        l4 = q + ihl
    else:
        if q + 40 > end:
            counters["skipped.raw_header_ip_truncated"] += 1
            return None
        proto = h[q + 6]
        addr, v6, tos, tos_v6 = q + 8, 1, q, 1
        l4 = q + 40
        # Follow extension headers while they are in the captured bytes.
        for _ in range(8):
            if l4 + 8 > end:
                break
            if proto in _IPV6_EXT_GENERIC:
                proto, l4 = h[l4], l4 + (h[l4 + 1] + 1) * 8
            elif proto == _IPV6_FRAGMENT:
                nonfirst_fragment = (h[l4 + 2] << 8 | h[l4 + 3]) >> 3 != 0
                proto, l4 = h[l4], l4 + 8
            elif proto == _IPV6_AH:
                proto, l4 = h[l4], l4 + (h[l4 + 1] + 2) * 4
            else:
                break
    sport = dport = flags = -1
    if not nonfirst_fragment:
        if proto in _PORT_PROTOCOLS:
            if l4 + 4 <= end:
                sport, dport = l4, l4 + 2
                if proto == 6 and l4 + 14 <= end:
                    flags = l4 + 13
        elif proto in _ICMP_PROTOCOLS and l4 + 2 <= end:
            dport = l4  # type*256+code, read as one big-endian u16
    return addr, v6, proto, tos, tos_v6, sport, dport, flags


def _parse_raw_header(
    h: bytes, p: int, end: int, header_protocol: int, counters: collections.Counter[str]
) -> _L3 | None:
    """Find the IP header in a sampled packet header ``h[p:end]`` and parse it."""
    if header_protocol == _HEADER_PROTO_IPV4:
        return _parse_ip(h, p, end, 4, counters)
    if header_protocol == _HEADER_PROTO_IPV6:
        return _parse_ip(h, p, end, 6, counters)
    if header_protocol != _HEADER_PROTO_ETHERNET:
        counters["skipped.raw_header_unsupported_protocol"] += 1
        return None
    if p + 14 > end:
        counters["skipped.raw_header_ethernet_truncated"] += 1
        return None
    ethertype = h[p + 12] << 8 | h[p + 13]
    q = p + 14
    for _ in range(8):
        if ethertype not in _ETH_VLAN or q + 4 > end:
            break
        ethertype = h[q + 2] << 8 | h[q + 3]
        q += 4
    if ethertype in _ETH_MPLS:
        for _ in range(16):
            if q + 4 > end:
                break
            bottom = h[q + 2] & 1
            q += 4
            if bottom:
                break
        ethertype = 0
        if q < end:
            ethertype = {4: _ETH_IPV4, 6: _ETH_IPV6}.get(h[q] >> 4, 0)
    if ethertype == _ETH_IPV4:
        return _parse_ip(h, q, end, 4, counters)
    if ethertype == _ETH_IPV6:
        return _parse_ip(h, q, end, 6, counters)
    counters["skipped.raw_header_not_ip"] += 1
    return None


def _error(counters: collections.Counter[str], kind: str, exporter: str, detail: str) -> None:
    counters["errors." + kind] += 1
    _ratelog.warn(kind, f"exporter {exporter}: {detail}")


def _flow_sample(
    d: bytes, off: int, end: int, expanded: bool, source: str, counters: collections.Counter[str]
) -> tuple[int, _L3] | None:
    """Walk the records of one (expanded) flow sample in ``d[off:end]``.

    Returns (offset of the packet length, IP field offsets), or None when the sample gives no row.
    """
    header = _EXPANDED_FLOW_SAMPLE_SIZE if expanded else _FLOW_SAMPLE_SIZE
    if off + header > end:
        _error(counters, "bad_sample_length", source, "flow sample header past sample end")
        return None
    (nrec,) = _U32.unpack_from(d, off + header - 4)
    p = off + header
    l3: _L3 | None = None
    length_off = 0
    raw: tuple[int, int, int] | None = None
    for i in range(nrec):
        if i == 64:
            _error(counters, "too_many_records", source, "record limit")
            return None
        if p + 8 > end:
            _error(counters, "bad_record_length", source, "record header past sample end")
            return None
        rfmt, rlen = _U32X2.unpack_from(d, p)
        p += 8
        rend = p + rlen
        if rend > end:
            _error(counters, "bad_record_length", source, "record length past sample end")
            return None
        if rfmt == _RECORD_RAW_HEADER:
            counters["records.raw_header"] += 1
            if rlen < 16:
                _error(counters, "bad_record_length", source, "raw header record too short")
                return None
            hproto, _, _, hlen = _RAW_HEADER.unpack_from(d, p)
            if hlen > rlen - 16:
                _error(counters, "bad_record_length", source, "header length past record")
                return None
            if raw is None:
                raw = (p, hproto, hlen)
        elif rfmt == _RECORD_SAMPLED_IPV4:
            counters["records.sampled_ipv4"] += 1
            if rlen < 32:
                _error(counters, "bad_record_length", source, "sampled IPv4 too short")
                return None
            if l3 is None:
                # length, protocol, src(4), dst(4), src_port, dst_port, tcp_flags, tos: u32 each
                l3 = (p + 8, 0, d[p + 7], p + 31, 0, p + 18, p + 22, p + 27)
                length_off = p
        elif rfmt == _RECORD_SAMPLED_IPV6:
            counters["records.sampled_ipv6"] += 1
            if rlen < 56:
                _error(counters, "bad_record_length", source, "sampled IPv6 too short")
                return None
            if l3 is None:
                # length, protocol, src(16), dst(16), src_port, dst_port, tcp_flags, priority
                l3 = (p + 8, 1, d[p + 7], p + 55, 0, p + 42, p + 46, p + 51)
                length_off = p
        elif 1001 <= rfmt <= 1999:
            counters["records.extended"] += 1
        else:
            counters["records.unknown"] += 1
        p = rend
    if raw is not None:
        rp, hproto, hlen = raw
        parsed = _parse_raw_header(d, rp + 16, rp + 16 + hlen, hproto, counters)
        if parsed is not None:
            l3, length_off = parsed, rp + 4  # frame_length
    if l3 is None:
        counters["skipped.flow_sample_without_ip"] += 1
        return None
    return length_off, l3


def _walk(
    buf: bytes,
    start: int,
    stop: int,
    dgram: int,
    source: str,
    rows: array.array[int],
    counters: collections.Counter[str],
) -> bytes | None:
    """Walk the datagram ``buf[start:stop]``; append a row per usable flow sample.

    Returns the agent address bytes (empty when unknown), or None when the header is unusable.
    """
    n = stop - start
    if n < 8:
        _error(counters, "truncated", source, f"{n}-byte datagram")
        return None
    version, atype = _U32X2.unpack_from(buf, start)
    if version != 5:
        _error(counters, "bad_version", source, f"version {version}")
        return None
    alen = _AGENT_LENGTH.get(atype)
    if alen is None:
        _error(counters, "bad_agent_address_type", source, f"address type {atype}")
        return None
    off = start + 8 + alen
    if off + 16 > stop:
        _error(counters, "truncated", source, "datagram header")
        return None
    agent = buf[start + 8 : off]
    (nsamples,) = _U32.unpack_from(buf, off + 12)
    off += 16
    counters["datagrams.sflow5"] += 1
    extend = rows.extend
    for i in range(nsamples):
        if i == 256:
            _error(counters, "too_many_samples", source, "sample limit")
            return agent
        if off + 8 > stop:
            _error(counters, "truncated", source, "fewer samples than announced")
            return agent
        fmt, slen = _U32X2.unpack_from(buf, off)
        off += 8
        end = off + slen
        if end > stop:
            _error(counters, "truncated", source, "sample length past datagram end")
            return agent
        if fmt in (_SAMPLE_FLOW, _SAMPLE_EXPANDED_FLOW):
            expanded = fmt == _SAMPLE_EXPANDED_FLOW
            counters["samples.expanded_flow" if expanded else "samples.flow"] += 1
            found = _flow_sample(buf, off, end, expanded, source, counters)
            if found is not None:
                extend((dgram, off, expanded, found[0], *found[1]))
        elif fmt == _SAMPLE_COUNTER:
            counters["samples.counter"] += 1
        elif fmt == _SAMPLE_EXPANDED_COUNTER:
            counters["samples.expanded_counter"] += 1
        elif fmt == _SAMPLE_DROP:
            counters["samples.drop"] += 1
            counters["skipped.drop_sample"] += 1
        else:
            counters["samples.unknown"] += 1
        off = end
    if off < stop:
        counters["datagrams.trailing_bytes"] += 1
    return agent


# --- NumPy gathers ------------------------------------------------------------------------------

_AGENT_LENGTH = {0: 0, 1: 4, 2: 16}
_FLOW_SAMPLE_SIZE = 32  # seq, source_id, rate, pool, drops, input, output, n_records
_EXPANDED_FLOW_SAMPLE_SIZE = 44  # seq, type, index, rate, pool, drops, in fmt/val, out fmt/val, n


_U32_8, _U32_16 = np.uint32(8), np.uint32(16)


def _u8(b: npt.NDArray[np.uint8], off: npt.NDArray[np.int64]) -> npt.NDArray[np.uint32]:
    return b[off].astype(np.uint32)


def _be16(b: npt.NDArray[np.uint8], off: npt.NDArray[np.int64]) -> npt.NDArray[np.uint32]:
    return np.left_shift(_u8(b, off), _U32_8) | _u8(b, off + 1)


def _be32(b: npt.NDArray[np.uint8], off: npt.NDArray[np.int64]) -> npt.NDArray[np.uint32]:
    return np.left_shift(_be16(b, off), _U32_16) | _be16(b, off + 2)


def _optional(
    b: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], width: int
) -> npt.NDArray[np.uint32]:
    """The u8/u16 at each offset, 0 where the offset is -1."""
    safe = np.maximum(off, 0)
    values = _u8(b, safe) if width == 1 else _be16(b, safe)
    return np.where(off >= 0, values, np.uint32(0))


def _addresses(
    b: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], v6: npt.NDArray[np.bool_]
) -> pa.Array:
    """Text of the address at each offset, formatted once per distinct address, then a take.

    Text as Python's ``ipaddress`` writes it (IPv6 compressed), like the NetFlow decoders.
    """
    index = np.zeros(len(off), dtype=np.int64)
    texts: list[str] = []
    v4 = ~v6
    if v4.any():
        keys4 = _be32(b, off[v4])
        uniq4, inverse4 = np.unique(keys4, return_inverse=True)
        index[v4] = inverse4.reshape(-1)
        texts.extend(str(ipaddress.IPv4Address(int(k))) for k in uniq4)
    if v6.any():
        raw = b[off[v6, None] + np.arange(16)]
        keys6 = np.ascontiguousarray(raw).view("V16").reshape(-1)
        uniq6, inverse6 = np.unique(keys6, return_inverse=True)
        index[v6] = inverse6.reshape(-1) + len(texts)
        texts.extend(ipaddress.IPv6Address(k.tobytes()).compressed for k in uniq6)
    return pa.array(texts, type=pa.string()).take(pa.array(index))


def _table(
    buf: bytes,
    rows: array.array[int],
    times_ms: list[int],
    exporters: list[str],
    counters: collections.Counter[str],
) -> pa.Table:
    schema = FLOWS.arrow
    r = np.frombuffer(rows, dtype=np.int64).reshape(-1, _ROW_WIDTH)
    b = np.frombuffer(buf, dtype=np.uint8)
    n = len(r)
    s = r[:, _R_SAMPLE]
    expanded = r[:, _R_EXPANDED] != 0

    rate = np.where(expanded, _be32(b, s + 12), _be32(b, s + 8))
    observation_domain = np.where(expanded, _be32(b, s + 8), _be32(b, s + 4) & 0x00FFFFFF)
    interfaces = []
    for compact, fmt, value in ((20, 24, 28), (24, 32, 36)):  # input, output
        packed = _be32(b, s + compact)  # format 1: 2-bit format, 30-bit value
        values = np.where(expanded, _be32(b, s + value), packed)
        ok = np.where(expanded, _be32(b, s + fmt) == 0, packed >> 30 == 0)
        ok &= values != _IF_UNKNOWN
        interfaces.append(pa.array(values, type=pa.uint32(), mask=~ok))

    v6 = r[:, _R_V6] != 0
    addr = r[:, _R_ADDR]
    tos_off = r[:, _R_TOS]
    tos = np.where(
        r[:, _R_TOS_V6] != 0,
        (_u8(b, tos_off) & 0x0F) << 4 | _u8(b, tos_off + 1) >> 4,
        _u8(b, tos_off),
    )
    unknown_rate = rate == 0
    if n:
        counters["flows"] += n
    if unknown := int(unknown_rate.sum()):
        counters["flows.sampling_rate_unknown"] += unknown

    ts = pa.array(np.asarray(times_ms, dtype=np.int64)[r[:, _R_DGRAM]]).cast(
        schema.field("time_start").type
    )
    arrays = {
        "time_start": ts,
        "time_end": ts,
        "src_addr": _addresses(b, addr, v6),
        "dst_addr": _addresses(b, addr + np.where(v6, 16, 4), v6),
        "src_port": pa.array(_optional(b, r[:, _R_SPORT], 2).astype(np.uint16)),
        "dst_port": pa.array(_optional(b, r[:, _R_DPORT], 2).astype(np.uint16)),
        "protocol": pa.array(r[:, _R_PROTO].astype(np.uint8)),
        "tcp_flags": pa.array(_optional(b, r[:, _R_FLAGS], 1).astype(np.uint8)),
        "tos": pa.array(tos.astype(np.uint8)),
        "packets": pa.array(np.ones(n, dtype=np.uint64)),
        "bytes": pa.array(_be32(b, r[:, _R_LENGTH]).astype(np.uint64)),
        "exporter": pa.array(exporters, type=pa.string()).take(pa.array(r[:, _R_DGRAM])),
        "input_if": interfaces[0],
        "output_if": interfaces[1],
        "sampling_rate": pa.array(rate, type=pa.uint32(), mask=unknown_rate),
        "observation_domain": pa.array(observation_domain.astype(np.uint32)),
    }
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


def decode_sflow(
    datagrams: Sequence[tuple[str, bytes, float]],
) -> tuple[pa.Table, collections.Counter[str]]:
    """(exporter address text, UDP payload, received unix seconds) → flows table + counters.

    The exporter address is the UDP source, used only when a datagram's agent address is unknown.
    Never raises on bad input: see the module docstring for what is counted.
    """
    counters: collections.Counter[str] = collections.Counter()
    buf = b"".join([bytes(payload) for _, payload, _ in datagrams] + [_PAD])
    rows: array.array[int] = array.array("q")
    times_ms: list[int] = []
    exporters: list[str] = []
    agents: dict[bytes, str] = {}
    start = 0
    for dgram, (source, payload, received) in enumerate(datagrams):
        counters["datagrams"] += 1
        stop = start + len(payload)
        exporter = source
        agent = _walk(buf, start, stop, dgram, source, rows, counters)
        if agent:
            exporter = agents.get(agent) or agents.setdefault(
                agent,
                ipaddress.ip_address(agent).compressed,
            )
        times_ms.append(int(received * 1000))
        exporters.append(exporter)
        start = stop
    return _table(buf, rows, times_ms, exporters, counters), counters
