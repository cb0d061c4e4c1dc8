"""sFlow version 5 decoder: UDP payloads in, rows of the ``flows`` dataset out.

A pure function, :func:`decode_sflow`, from a batch of received datagrams to one Arrow table with
exactly :data:`mamori.schemas.FLOWS` ``.arrow`` and a :class:`collections.Counter` of what happened.

What becomes a row
------------------
One row per *flow sample* (enterprise 0, format 1) and per *expanded flow sample* (format 3) whose
records give an IP header, from the first of:

* a **raw packet header** record (format 1) with header protocol Ethernet (``1``; 802.1Q / QinQ
  tags and MPLS label stacks are skipped), IPv4 (``11``) or IPv6 (``12``). The header is parsed to
  addresses, protocol, ports, TCP flags and ToS / traffic class; IPv6 extension headers are
  followed; non-first fragments get ports 0; ICMP and ICMPv6 store ``type*256+code`` as
  ``dst_port`` like NetFlow. **The header bytes themselves are dropped, never stored.**
* a **sampled IPv4** (format 3) or **sampled IPv6** (format 4) record.

Column by column:

* ``time_start`` = ``time_end`` = the time the datagram was received (the caller's
  ``received`` seconds, truncated to ms). sFlow carries only the agent's uptime, which would need a
  boot-time estimate per agent; the receive time is what goflow2 and sfacctd use too.
* ``packets`` = 1 and ``bytes`` = the sampled packet's length (raw header: ``frame_length``, which
  for Ethernet includes the link header and FCS; sampled IPv4/IPv6: the record's ``length``).
  Both unscaled: multiply by ``sampling_rate`` to estimate totals.
* ``exporter`` = the sFlow **agent address** from the datagram header; the UDP source address only
  when the agent address type is 0 (unknown).
* ``input_if`` / ``output_if`` = the ifIndex when the interface format is 0 (a single ifIndex);
  null for format 1 (discarded), format 2 (multiple interfaces) and the value ``0x3FFFFFFF``
  (unknown interface).
* ``sampling_rate`` = the flow sample's ``sampling_rate``; null when 0 (counted,
  ``flows.sampling_rate_unknown``).
* ``observation_domain`` = the sample's ``source_id`` index (for format 1 the low 24 bits).

Everything else is counted and skipped: counter samples (formats 2 and 4), drop / discarded-packet
samples (format 5), samples and records of other formats or enterprises (skipped using their
length), extended records, flow samples without an IP header.

Bad input never raises. A datagram is walked sample by sample using the lengths it declares; a
sample whose inner structure is inconsistent is skipped with a counted reason and the walk goes
on with the next sample; a length that runs past the end stops that datagram
(``errors.truncated``) and the samples decoded before it are kept. Errors are logged at most
once per kind per :data:`LOG_INTERVAL_S`.

Counters (all ``str`` keys): ``datagrams``, ``datagrams.sflow5``, ``datagrams.trailing_bytes``,
``samples.flow``, ``samples.expanded_flow``, ``samples.counter``, ``samples.expanded_counter``,
``samples.drop`` (skipped: ``skipped.drop_sample``), ``samples.unknown``, ``records.raw_header``,
``records.sampled_ipv4``, ``records.sampled_ipv6``, ``records.extended``, ``records.unknown``,
``skipped.*`` (named reasons a sample or record gave no row), ``errors.*`` (malformed input by
kind), ``flows`` (rows produced), ``flows.sampling_rate_unknown``.
"""

from __future__ import annotations

import collections
import logging
import socket
import struct
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from mamori.schemas import FLOWS

__all__ = ["LOG_INTERVAL_S", "decode_sflow"]

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
_DGRAM_TAIL = struct.Struct(">IIII")  # sub_agent_id, sequence, uptime, num_samples
_FLOW_SAMPLE = struct.Struct(">IIIIIIII")  # seq, source_id, rate, pool, drops, in, out, n
_EXPANDED_FLOW_SAMPLE = struct.Struct(">IIIIIIIIIII")  # seq, type, index, rate, pool, drops,
#                                                        in_fmt, in, out_fmt, out, n
_RAW_HEADER = struct.Struct(">IIII")  # header_protocol, frame_length, stripped, header_length
_SAMPLED_IPV4 = struct.Struct(">II4s4sIIII")  # length, proto, src, dst, sport, dport, flags, tos
_SAMPLED_IPV6 = struct.Struct(">II16s16sIIII")  # … priority instead of tos

_IF_UNKNOWN = 0x3FFFFFFF
_MAX_CACHE = 1 << 16  # address text cache entries per call


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


class _Columns:
    """Per-row Python lists, turned into Arrow arrays once at the end of a batch."""

    __slots__ = (
        "addr_cache",
        "bytes_",
        "dport",
        "dst",
        "exporter",
        "flags",
        "in_if",
        "obs",
        "out_if",
        "proto",
        "rate",
        "sport",
        "src",
        "time_ms",
        "tos",
    )

    def __init__(self) -> None:
        self.time_ms: list[int] = []
        self.src: list[str] = []
        self.dst: list[str] = []
        self.sport: list[int] = []
        self.dport: list[int] = []
        self.proto: list[int] = []
        self.flags: list[int] = []
        self.tos: list[int] = []
        self.bytes_: list[int] = []
        self.exporter: list[str] = []
        self.in_if: list[int | None] = []
        self.out_if: list[int | None] = []
        self.rate: list[int | None] = []
        self.obs: list[int] = []
        self.addr_cache: dict[bytes, str] = {}

    def addr(self, raw: bytes) -> str:
        text = self.addr_cache.get(raw)
        if text is None:
            text = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
            if len(self.addr_cache) >= _MAX_CACHE:
                self.addr_cache.clear()
            self.addr_cache[raw] = text
        return text

    def table(self) -> pa.Table:
        n = len(self.time_ms)
        schema = FLOWS.arrow
        ts = pa.array(np.asarray(self.time_ms, dtype=np.int64), type=pa.int64()).cast(
            schema.field("time_start").type
        )
        arrays = {
            "time_start": ts,
            "time_end": ts,
            "src_addr": pa.array(self.src, type=pa.string()),
            "dst_addr": pa.array(self.dst, type=pa.string()),
            "src_port": pa.array(np.asarray(self.sport, dtype=np.uint16)),
            "dst_port": pa.array(np.asarray(self.dport, dtype=np.uint16)),
            "protocol": pa.array(np.asarray(self.proto, dtype=np.uint8)),
            "tcp_flags": pa.array(np.asarray(self.flags, dtype=np.uint8)),
            "tos": pa.array(np.asarray(self.tos, dtype=np.uint8)),
            "packets": pa.array(np.ones(n, dtype=np.uint64)),
            "bytes": pa.array(np.asarray(self.bytes_, dtype=np.uint64)),
            "exporter": pa.array(self.exporter, type=pa.string()),
            "input_if": pa.array(self.in_if, type=pa.uint32()),
            "output_if": pa.array(self.out_if, type=pa.uint32()),
            "sampling_rate": pa.array(self.rate, type=pa.uint32()),
            "observation_domain": pa.array(np.asarray(self.obs, dtype=np.uint32)),
        }
        return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


# An L3/L4 parse result: (src address bytes, dst address bytes, protocol, tos, sport, dport, flags)
_L3 = tuple[bytes, bytes, int, int, int, int, int]


def _parse_ip(
    h: bytes, q: int, end: int, version: int, counters: collections.Counter[str]
) -> _L3 | None:
    """Parse the IP header starting at ``h[q]`` (bytes up to ``end`` available)."""
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
        tos = h[q + 1]
        nonfirst_fragment = ((h[q + 6] & 0x1F) << 8 | h[q + 7]) != 0
        proto = h[q + 9]
        src = h[q + 12 : q + 16]
        dst = h[q + 16 : q + 20]
        l4 = q + ihl
    else:
        if q + 40 > end:
            counters["skipped.raw_header_ip_truncated"] += 1
            return None
        tos = (h[q] & 0x0F) << 4 | h[q + 1] >> 4
        proto = h[q + 6]
        src = h[q + 8 : q + 24]
        dst = h[q + 24 : q + 40]
        l4 = q + 40
        # Follow extension headers while they are in the captured bytes.
        while l4 + 8 <= end:
            if proto in _IPV6_EXT_GENERIC:
                proto, l4 = h[l4], l4 + (h[l4 + 1] + 1) * 8
            elif proto == _IPV6_FRAGMENT:
                nonfirst_fragment = (h[l4 + 2] << 8 | h[l4 + 3]) >> 3 != 0
                proto, l4 = h[l4], l4 + 8
            elif proto == _IPV6_AH:
                proto, l4 = h[l4], l4 + (h[l4 + 1] + 2) * 4
            else:
                break
    sport = dport = flags = 0
    if not nonfirst_fragment:
        if proto in _PORT_PROTOCOLS:
            if l4 + 4 <= end:
                sport = h[l4] << 8 | h[l4 + 1]
                dport = h[l4 + 2] << 8 | h[l4 + 3]
                if proto == 6 and l4 + 14 <= end:
                    flags = h[l4 + 13]
        elif proto in _ICMP_PROTOCOLS and l4 + 2 <= end:
            dport = h[l4] << 8 | h[l4 + 1]
    return src, dst, proto, tos, sport, dport, flags


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
    while ethertype in _ETH_VLAN and q + 4 <= end:
        ethertype = h[q + 2] << 8 | h[q + 3]
        q += 4
    if ethertype in _ETH_MPLS:
        while q + 4 <= end:
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
    d: bytes,
    off: int,
    end: int,
    expanded: bool,
    exporter: str,
    udp_source: str,
    time_ms: int,
    cols: _Columns,
    counters: collections.Counter[str],
) -> None:
    """Decode one (expanded) flow sample in ``d[off:end]``; append at most one row."""
    in_if: int | None
    out_if: int | None
    if expanded:
        if off + _EXPANDED_FLOW_SAMPLE.size > end:
            _error(counters, "bad_sample_length", udp_source, "expanded flow sample too short")
            return
        (_, _, index, rate, _, _, in_fmt, in_val, out_fmt, out_val, nrec) = (
            _EXPANDED_FLOW_SAMPLE.unpack_from(d, off)
        )
        in_if = in_val if in_fmt == 0 and in_val != _IF_UNKNOWN else None
        out_if = out_val if out_fmt == 0 and out_val != _IF_UNKNOWN else None
        p = off + _EXPANDED_FLOW_SAMPLE.size
    else:
        if off + _FLOW_SAMPLE.size > end:
            _error(counters, "bad_sample_length", udp_source, "flow sample too short")
            return
        (_, source_id, rate, _, _, in_val, out_val, nrec) = _FLOW_SAMPLE.unpack_from(d, off)
        index = source_id & 0x00FFFFFF
        in_if = in_val if in_val >> 30 == 0 and in_val != _IF_UNKNOWN else None
        out_if = out_val if out_val >> 30 == 0 and out_val != _IF_UNKNOWN else None
        p = off + _FLOW_SAMPLE.size

    l3: _L3 | None = None
    length = 0
    for _ in range(nrec):
        if p + 8 > end:
            _error(counters, "bad_record_length", udp_source, "record header past sample end")
            return
        rfmt, rlen = _U32X2.unpack_from(d, p)
        p += 8
        rend = p + rlen
        if rend > end:
            _error(counters, "bad_record_length", udp_source, "record length past sample end")
            return
        if rfmt == _RECORD_RAW_HEADER:
            counters["records.raw_header"] += 1
            if rlen < _RAW_HEADER.size:
                _error(counters, "bad_record_length", udp_source, "raw header record too short")
                return
            hproto, frame_length, _, hlen = _RAW_HEADER.unpack_from(d, p)
            hstart = p + _RAW_HEADER.size
            if hlen > rend - hstart:
                _error(counters, "bad_record_length", udp_source, "header length past record")
                return
            if l3 is None:
                l3 = _parse_raw_header(d, hstart, hstart + hlen, hproto, counters)
                length = frame_length
        elif rfmt == _RECORD_SAMPLED_IPV4:
            counters["records.sampled_ipv4"] += 1
            if rlen < _SAMPLED_IPV4.size:
                _error(counters, "bad_record_length", udp_source, "sampled IPv4 too short")
                return
            if l3 is None:
                ln, proto, src, dst, sport, dport, flags, tos = _SAMPLED_IPV4.unpack_from(d, p)
                l3 = (
                    src,
                    dst,
                    proto & 0xFF,
                    tos & 0xFF,
                    sport & 0xFFFF,
                    dport & 0xFFFF,
                    flags & 0xFF,
                )
                length = ln
        elif rfmt == _RECORD_SAMPLED_IPV6:
            counters["records.sampled_ipv6"] += 1
            if rlen < _SAMPLED_IPV6.size:
                _error(counters, "bad_record_length", udp_source, "sampled IPv6 too short")
                return
            if l3 is None:
                ln, proto, src, dst, sport, dport, flags, prio = _SAMPLED_IPV6.unpack_from(d, p)
                l3 = (
                    src,
                    dst,
                    proto & 0xFF,
                    prio & 0xFF,
                    sport & 0xFFFF,
                    dport & 0xFFFF,
                    flags & 0xFF,
                )
                length = ln
        elif rfmt >> 12 == 0 and 1001 <= rfmt <= 1999:
            counters["records.extended"] += 1
        else:
            counters["records.unknown"] += 1
        p = rend

    if l3 is None:
        counters["skipped.flow_sample_without_ip"] += 1
        return
    src, dst, proto, tos, sport, dport, flags = l3
    cols.time_ms.append(time_ms)
    cols.src.append(cols.addr(src))
    cols.dst.append(cols.addr(dst))
    cols.proto.append(proto)
    cols.tos.append(tos)
    cols.sport.append(sport)
    cols.dport.append(dport)
    cols.flags.append(flags)
    cols.bytes_.append(length)
    cols.exporter.append(exporter)
    cols.in_if.append(in_if)
    cols.out_if.append(out_if)
    if rate == 0:
        counters["flows.sampling_rate_unknown"] += 1
        cols.rate.append(None)
    else:
        cols.rate.append(rate)
    cols.obs.append(index)
    counters["flows"] += 1


def _datagram(
    d: bytes, udp_source: str, received: float, cols: _Columns, counters: collections.Counter[str]
) -> None:
    n = len(d)
    if n < 8:
        _error(counters, "truncated", udp_source, f"{n}-byte datagram")
        return
    version, atype = _U32X2.unpack_from(d, 0)
    if version != 5:
        _error(counters, "bad_version", udp_source, f"version {version}")
        return
    if atype == 1:
        off = 12
    elif atype == 2:
        off = 24
    elif atype == 0:
        off = 8
    else:
        _error(counters, "bad_agent_address_type", udp_source, f"address type {atype}")
        return
    if off + _DGRAM_TAIL.size > n:
        _error(counters, "truncated", udp_source, "datagram header")
        return
    exporter = cols.addr(d[8:off]) if atype else udp_source
    _, _, _, nsamples = _DGRAM_TAIL.unpack_from(d, off)
    off += _DGRAM_TAIL.size
    counters["datagrams.sflow5"] += 1
    time_ms = int(received * 1000)

    for _ in range(nsamples):
        if off + 8 > n:
            _error(counters, "truncated", udp_source, "fewer samples than announced")
            return
        fmt, slen = _U32X2.unpack_from(d, off)
        off += 8
        end = off + slen
        if end > n:
            _error(counters, "truncated", udp_source, "sample length past datagram end")
            return
        if fmt in (_SAMPLE_FLOW, _SAMPLE_EXPANDED_FLOW):
            expanded = fmt == _SAMPLE_EXPANDED_FLOW
            counters["samples.expanded_flow" if expanded else "samples.flow"] += 1
            _flow_sample(d, off, end, expanded, exporter, udp_source, time_ms, cols, counters)
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
    if off < n:
        counters["datagrams.trailing_bytes"] += 1


def decode_sflow(
    datagrams: Sequence[tuple[str, bytes, float]],
) -> tuple[pa.Table, collections.Counter[str]]:
    """(exporter address text, UDP payload, received unix seconds) → flows table + counters.

    The exporter address is the UDP source, used only when a datagram's agent address is unknown.
    Never raises on bad input: see the module docstring for what is counted.
    """
    cols = _Columns()
    counters: collections.Counter[str] = collections.Counter()
    for udp_source, payload, received in datagrams:
        counters["datagrams"] += 1
        data = payload if isinstance(payload, bytes) else bytes(payload)
        try:
            _datagram(data, udp_source, received, cols, counters)
        except (struct.error, IndexError, ValueError, OverflowError) as exc:  # pragma: no cover
            # Defence in depth: the walk checks every length, so this is a bug if it happens.
            _error(counters, "internal", udp_source, repr(exc))
    return cols.table(), counters
