"""sFlow version 5 decoder: UDP payloads in, rows of the ``flows`` dataset out.

A pure function, :func:`decode_sflow`, from a batch of received datagrams to one Arrow table with
exactly :data:`mamori.schemas.FLOWS` ``.arrow`` and a :class:`collections.Counter` of what happened.

What becomes a row
------------------
One row per *flow sample* (enterprise 0, format 1) and per *expanded flow sample* (format 3) whose
records give an IP header:

* from the sample's first **raw packet header** record (format 1) with header protocol Ethernet
  (``1``; up to 8 802.1Q / QinQ tags and 16 MPLS labels are skipped), IPv4 (``11``) or IPv6
  (``12``). The header is parsed to addresses, protocol, ports, TCP flags and ToS / traffic
  class; up to 8 IPv6 extension headers are followed; non-first fragments get ports 0; ICMP and
  ICMPv6 store ``type*256+code`` as ``dst_port`` like NetFlow; fields cut off by the agent's
  header length are 0. **The header bytes themselves are dropped, never stored.**
* else from its first **sampled IPv4** (format 3) or **sampled IPv6** (format 4) record.

Column by column:

* ``time_start`` = ``time_end`` = the time the datagram was received (the caller's
  ``received`` seconds, truncated to ms). sFlow carries only the agent's uptime, which would need a
  boot-time estimate per agent.
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
(``errors.truncated``) and the samples decoded before it are kept. At most :data:`MAX_SAMPLES`
samples per datagram and :data:`MAX_RECORDS` records per sample are read. Errors are logged at
most once per kind per :data:`LOG_INTERVAL_S`.

Counters (all ``str`` keys): ``datagrams``, ``datagrams.sflow5``, ``datagrams.trailing_bytes``,
``samples.flow``, ``samples.expanded_flow``, ``samples.counter``, ``samples.expanded_counter``,
``samples.drop`` (skipped: ``skipped.drop_sample``), ``samples.unknown``, ``records.raw_header``,
``records.sampled_ipv4``, ``records.sampled_ipv6``, ``records.extended``, ``records.unknown``,
``skipped.*`` (named reasons a sample or record gave no row: ``drop_sample``,
``flow_sample_without_ip``, ``raw_header_not_ip``, ``raw_header_unsupported_protocol``,
``raw_header_ethernet_truncated``, ``raw_header_ip_truncated``, ``raw_header_bad_ip_version``,
``raw_header_bad_ihl``), ``errors.*`` (malformed input: ``truncated``, ``bad_version``,
``bad_agent_address_type``, ``bad_sample_length``, ``bad_record_length``, ``too_many_samples``,
``too_many_records``; ``internal`` counts datagrams lost to a decoder bug, which never takes the
rest of the batch with it), ``flows`` (rows produced), ``flows.sampling_rate_unknown``.

The walk is vectorised (see the comment above :class:`_Batch`); ``tests/ingest/sflow_reference.py``
is a plain per-sample walk that differential tests hold it equal to.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mamori.ingest.ratelog import RateLimitedLog
from mamori.schemas import FLOWS

__all__ = ["LOG_INTERVAL_S", "MAX_RECORDS", "MAX_SAMPLES", "decode_sflow"]

LOG_INTERVAL_S = 10.0
"""At most one log line per error kind per this many seconds (the counters count every one)."""
MAX_SAMPLES = 256
"""Samples read from one datagram; the rest is dropped (``errors.too_many_samples``). A 1,500-byte
datagram holds about ten flow samples; the limit bounds the work a hostile 64 KiB datagram of
empty samples can cause."""
MAX_RECORDS = 64
"""Records read from one flow sample; a sample with more is dropped
(``errors.too_many_records``)."""

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


_IF_UNKNOWN = 0x3FFFFFFF


_ratelog = RateLimitedLog(_log, LOG_INTERVAL_S)


# --- vectorised walk ------------------------------------------------------------------------------
#
# sFlow is a variable-length format, so it is walked as a *wavefront*: step k reads the k-th
# sample of every datagram of the batch at once (then the k-th record of every flow sample, the
# k-th VLAN tag or IPv6 extension header of every sampled packet), with NumPy gathers over the
# batch's concatenated payloads. The number of steps is the largest count in the batch (samples per
# datagram, records per sample), not the number of samples. Every length is checked against the
# end of its enclosing structure before it is used, every gather is clipped to the buffer, and
# bad structures are dropped by mask and counted by kind. Addresses become text once per distinct
# value, and each Arrow array is built once per batch.

I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
Mask = npt.NDArray[np.bool_]

_PAD = bytes(64)  # appended to the batch so that fixed-offset gathers stay in the buffer
_FLOW_SAMPLE_SIZE = 32  # seq, source_id, rate, pool, drops, input, output, n_records
_EXPANDED_FLOW_SAMPLE_SIZE = 44  # seq, type, index, rate, pool, drops, in fmt/val, out fmt/val, n
_MAX_TAGS = 8  # VLAN tags followed in a sampled Ethernet header
_MAX_LABELS = 16  # MPLS labels followed
_MAX_EXT = 8  # IPv6 extension headers followed

_VLAN_TYPES = np.array(sorted(_ETH_VLAN), dtype=np.uint32)
_MPLS_TYPES = np.array(sorted(_ETH_MPLS), dtype=np.uint32)
_PORT_PROTOS = np.array(sorted(_PORT_PROTOCOLS), dtype=np.uint32)
_ICMP_PROTOS = np.array(sorted(_ICMP_PROTOCOLS), dtype=np.uint32)
_EXT_PROTOS = np.array([*sorted(_IPV6_EXT_GENERIC), _IPV6_FRAGMENT, _IPV6_AH], dtype=np.uint32)


class _Batch:
    """The concatenated payloads of a batch and the sources, for gathers and error reports."""

    def __init__(self, buf: bytes, sources: list[str], counters: collections.Counter[str]) -> None:
        self.b = np.frombuffer(buf, dtype=np.uint8)
        self.last = len(buf) - 1
        self.sources = sources
        self.counters = counters

    def u8(self, off: I64) -> U32:
        return self.b[np.clip(off, 0, self.last)].astype(np.uint32)

    def be16(self, off: I64) -> U32:
        return np.left_shift(self.u8(off), np.uint32(8)) | self.u8(off + 1)

    def be32(self, off: I64) -> U32:
        return np.left_shift(self.be16(off), np.uint32(16)) | self.be16(off + 2)

    def count(self, key: str, mask: Mask) -> None:
        if k := int(np.count_nonzero(mask)):
            self.counters[key] += k

    def error(self, kind: str, mask: Mask, dgram: I64, detail: str) -> None:
        """Count the rows in ``mask`` as ``errors.<kind>``; log one line (rate-limited)."""
        hits = np.flatnonzero(mask)
        if hits.size:
            self.counters["errors." + kind] += int(hits.size)
            source = self.sources[int(dgram[hits[0]])]
            _ratelog.warn(
                kind,
                "sflow decode error %s: %s (%d in batch; first from %s)",
                kind,
                detail,
                hits.size,
                source,
            )


def _datagram_headers(bt: _Batch, starts: I64, stops: I64) -> tuple[I64, I64, I64, I64]:
    """Check each datagram's header: (indices of good datagrams, first sample, samples, agent)."""
    dg = np.arange(len(starts), dtype=np.int64)
    length = stops - starts
    short = length < 8
    bt.error("truncated", short, dg, "datagram shorter than 8 bytes")
    version = bt.be32(starts)
    bad_version = ~short & (version != 5)
    bt.error("bad_version", bad_version, dg, "not sFlow version 5")
    atype = bt.be32(starts + 4)
    alen = np.where(atype == 0, 0, np.where(atype == 1, 4, np.where(atype == 2, 16, -1)))
    bad_atype = ~short & ~bad_version & (alen < 0)
    bt.error("bad_agent_address_type", bad_atype, dg, "agent address type not 0, 1 or 2")
    first = starts + 8 + alen + 16
    ok = ~short & ~bad_version & ~bad_atype
    cut = ok & (first > stops)
    bt.error("truncated", cut, dg, "datagram header cut")
    ok &= ~cut
    bt.count("datagrams.sflow5", ok)
    nsamples = bt.be32(first - 4).astype(np.int64)
    return dg[ok], first, nsamples, alen


def _samples(bt: _Batch, good: I64, first: I64, nsamples: I64, stops: I64) -> tuple[I64, ...]:
    """Wavefront over the samples of all datagrams: (datagram, format, body offset, body end)."""
    out_dg, out_fmt, out_off, out_end = [], [], [], []
    dg, off, left, stop = good, first[good], nsamples[good], stops[good]
    for step in range(MAX_SAMPLES + 1):
        done = left == 0
        bt.count("datagrams.trailing_bytes", done & (off < stop))
        keep = ~done
        dg, off, left, stop = dg[keep], off[keep], left[keep], stop[keep]
        if not dg.size:
            break
        if step == MAX_SAMPLES:
            bt.error("too_many_samples", np.ones(dg.size, dtype=bool), dg, "sample limit")
            break
        short = off + 8 > stop
        bt.error("truncated", short, dg, "fewer samples than announced")
        fmt = bt.be32(off).astype(np.int64)
        end = off + 8 + bt.be32(off + 4).astype(np.int64)
        past = ~short & (end > stop)
        bt.error("truncated", past, dg, "sample length past datagram end")
        ok = ~short & ~past
        out_dg.append(dg[ok])
        out_fmt.append(fmt[ok])
        out_off.append(off[ok] + 8)
        out_end.append(end[ok])
        dg, off, left, stop = dg[ok], end[ok], left[ok] - 1, stop[ok]
    if not out_dg:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(4))
    s_off = np.concatenate(out_off)
    order = np.argsort(s_off, kind="stable")  # datagram order, then sample order
    return (
        np.concatenate(out_dg)[order],
        np.concatenate(out_fmt)[order],
        s_off[order],
        np.concatenate(out_end)[order],
    )


def _records(bt: _Batch, dg: I64, off: I64, end: I64, expanded: Mask) -> tuple[Mask, I64, I64, I64]:
    """Wavefront over the records of all flow samples.

    Returns (sample is well formed, offset of its first raw header record's data or -1, offset of
    its first sampled IPv4/IPv6 record's data or -1, 4 or 6 for that sampled record).
    """
    n = len(off)
    header = np.where(expanded, _EXPANDED_FLOW_SAMPLE_SIZE, _FLOW_SAMPLE_SIZE)
    good = off + header <= end
    bt.error("bad_sample_length", ~good, dg, "flow sample header past sample end")
    raw = np.full(n, -1, dtype=np.int64)
    sampled = np.full(n, -1, dtype=np.int64)
    sampled_v = np.zeros(n, dtype=np.int64)
    idx = np.flatnonzero(good)
    p = off[idx] + header[idx]
    left = bt.be32(p - 4).astype(np.int64)
    for step in range(MAX_RECORDS + 1):
        keep = left > 0
        idx, p, left = idx[keep], p[keep], left[keep]
        if not idx.size:
            break
        if step == MAX_RECORDS:
            bt.error("too_many_records", np.ones(idx.size, dtype=bool), dg[idx], "record limit")
            good[idx] = False
            break
        e, d = end[idx], dg[idx]
        bad = p + 8 > e
        bt.error("bad_record_length", bad, d, "record header past sample end")
        rfmt = bt.be32(p)
        q = p + 8
        rlen = bt.be32(p + 4).astype(np.int64)
        rend = q + rlen
        past = ~bad & (rend > e)
        bt.error("bad_record_length", past, d, "record length past sample end")
        bad |= past
        live = ~bad
        is_raw = live & (rfmt == _RECORD_RAW_HEADER)
        is_v4 = live & (rfmt == _RECORD_SAMPLED_IPV4)
        is_v6 = live & (rfmt == _RECORD_SAMPLED_IPV6)
        bt.count("records.raw_header", is_raw)
        bt.count("records.sampled_ipv4", is_v4)
        bt.count("records.sampled_ipv6", is_v6)
        known = is_raw | is_v4 | is_v6
        bt.count("records.extended", live & ~known & (rfmt >= 1001) & (rfmt <= 1999))
        bt.count("records.unknown", live & ~known & ((rfmt < 1001) | (rfmt > 1999)))
        raw_short = is_raw & (rlen < 16)
        bt.error("bad_record_length", raw_short, d, "raw header record too short")
        hlen_past = is_raw & ~raw_short & (bt.be32(q + 12).astype(np.int64) > rlen - 16)
        bt.error("bad_record_length", hlen_past, d, "header length past record")
        v4_short = is_v4 & (rlen < 32)
        bt.error("bad_record_length", v4_short, d, "sampled IPv4 too short")
        v6_short = is_v6 & (rlen < 56)
        bt.error("bad_record_length", v6_short, d, "sampled IPv6 too short")
        bad |= raw_short | hlen_past | v4_short | v6_short
        good[idx[bad]] = False
        first_raw = is_raw & ~bad & (raw[idx] < 0)
        raw[idx[first_raw]] = q[first_raw]
        first_sampled = (is_v4 | is_v6) & ~bad & (sampled[idx] < 0)
        sampled[idx[first_sampled]] = q[first_sampled]
        sampled_v[idx[first_sampled]] = np.where(is_v4, 4, 6)[first_sampled]
        ok = ~bad
        idx, p, left = idx[ok], rend[ok], left[ok] - 1
    return good, raw, sampled, sampled_v


class _IP:
    """Field offsets of the rows' IP headers (−1 where a port or flag is absent)."""

    def __init__(self, n: int) -> None:
        self.ok = np.zeros(n, dtype=bool)
        self.addr = np.zeros(n, dtype=np.int64)
        self.v6 = np.zeros(n, dtype=bool)
        self.proto = np.zeros(n, dtype=np.uint32)
        self.tos = np.zeros(n, dtype=np.int64)
        self.tos_v6 = np.zeros(n, dtype=bool)
        self.sport = np.full(n, -1, dtype=np.int64)
        self.dport = np.full(n, -1, dtype=np.int64)
        self.flags = np.full(n, -1, dtype=np.int64)


def _raw_headers(bt: _Batch, rec: I64, dg: I64) -> _IP:
    """Parse the sampled packet headers whose raw header record data start at ``rec``."""
    n = len(rec)
    hproto = bt.be32(rec)
    hs = rec + 16
    he = hs + bt.be32(rec + 12).astype(np.int64)
    q = hs.copy()
    version = np.where(
        hproto == _HEADER_PROTO_IPV4, 4, np.where(hproto == _HEADER_PROTO_IPV6, 6, 0)
    )
    eth = hproto == _HEADER_PROTO_ETHERNET
    bt.count("skipped.raw_header_unsupported_protocol", (version == 0) & ~eth)
    eth_short = eth & (hs + 14 > he)
    bt.count("skipped.raw_header_ethernet_truncated", eth_short)
    eth &= ~eth_short
    ethertype = bt.be16(hs + 12)
    q = np.where(eth, hs + 14, q)
    for _ in range(_MAX_TAGS):
        tag = eth & np.isin(ethertype, _VLAN_TYPES) & (q + 4 <= he)
        if not tag.any():
            break
        ethertype = np.where(tag, bt.be16(q + 2), ethertype)
        q = np.where(tag, q + 4, q)
    mpls = eth & np.isin(ethertype, _MPLS_TYPES)
    if mpls.any():
        more = mpls.copy()
        for _ in range(_MAX_LABELS):
            step = more & (q + 4 <= he)
            if not step.any():
                break
            bottom = (bt.u8(q + 2) & 1) == 1
            q = np.where(step, q + 4, q)
            more &= ~(step & bottom)
            more &= step
        nibble = bt.u8(q) >> 4
        inner = np.where(nibble == 4, _ETH_IPV4, np.where(nibble == 6, _ETH_IPV6, 0))
        ethertype = np.where(mpls, np.where(q < he, inner, 0), ethertype)
    version = np.where(eth & (ethertype == _ETH_IPV4), 4, version)
    version = np.where(eth & (ethertype == _ETH_IPV6), 6, version)
    bt.count("skipped.raw_header_not_ip", eth & (ethertype != _ETH_IPV4) & (ethertype != _ETH_IPV6))

    ip = _IP(n)
    cand = version > 0
    first = bt.u8(q)
    bad_version = cand & ((q >= he) | ((first >> 4) != version))
    bt.count("skipped.raw_header_bad_ip_version", bad_version)
    cand &= ~bad_version
    v4 = cand & (version == 4)
    v6 = cand & (version == 6)
    short = (v4 & (q + 20 > he)) | (v6 & (q + 40 > he))
    bt.count("skipped.raw_header_ip_truncated", short)
    v4 &= ~short
    v6 &= ~short
    ihl = (first & 0x0F).astype(np.int64) * 4
    bad_ihl = v4 & (ihl < 20)
    bt.count("skipped.raw_header_bad_ihl", bad_ihl)
    v4 &= ~bad_ihl

    proto = np.where(v4, bt.u8(q + 9), bt.u8(q + 6))
    nonfirst = v4 & (((bt.u8(q + 6) & 0x1F) << np.uint32(8) | bt.u8(q + 7)) != 0)
    l4 = np.where(v4, q + ihl, q + 40)
    for _ in range(_MAX_EXT):  # IPv6 extension headers that are in the captured bytes
        ext = v6 & np.isin(proto, _EXT_PROTOS) & (l4 + 8 <= he)
        if not ext.any():
            break
        nxt = bt.u8(l4)
        hdr_len = bt.u8(l4 + 1).astype(np.int64)
        frag = ext & (proto == _IPV6_FRAGMENT)
        nonfirst = np.where(frag, (bt.be16(l4 + 2) >> 3) != 0, nonfirst)
        size = np.where(frag, 8, np.where(proto == _IPV6_AH, (hdr_len + 2) * 4, (hdr_len + 1) * 8))
        l4 = np.where(ext, l4 + size, l4)
        proto = np.where(ext, nxt, proto)

    ok = v4 | v6
    ports = ok & ~nonfirst & np.isin(proto, _PORT_PROTOS) & (l4 + 4 <= he)
    icmp = ok & ~nonfirst & np.isin(proto, _ICMP_PROTOS) & (l4 + 2 <= he)
    ip.ok = ok
    ip.v6 = v6
    ip.addr = np.where(v6, q + 8, q + 12)
    ip.proto = proto
    ip.tos = np.where(v6, q, q + 1)
    ip.tos_v6 = v6
    ip.sport = np.where(ports, l4, -1)
    ip.dport = np.where(ports, l4 + 2, np.where(icmp, l4, -1))
    ip.flags = np.where(ports & (proto == 6) & (l4 + 14 <= he), l4 + 13, -1)
    return ip


def _addresses(bt: _Batch, off: I64, v6: Mask) -> pa.Array:
    """Text of the address at each offset, formatted once per distinct address, then a take.

    Text as Python's ``ipaddress`` writes it (IPv6 compressed), like the NetFlow decoders.
    """
    index = np.zeros(len(off), dtype=np.int64)
    texts: list[str] = []
    v4 = ~v6
    if v4.any():
        uniq4, inverse4 = np.unique(bt.be32(off[v4]), return_inverse=True)
        index[v4] = inverse4.reshape(-1)
        texts.extend(str(ipaddress.IPv4Address(int(k))) for k in uniq4)
    if v6.any():
        raw = bt.b[np.clip(off[v6, None] + np.arange(16), 0, bt.last)]
        keys6 = np.ascontiguousarray(raw).view("V16").reshape(-1)
        uniq6, inverse6 = np.unique(keys6, return_inverse=True)
        index[v6] = inverse6.reshape(-1) + len(texts)
        texts.extend(ipaddress.IPv6Address(k.tobytes()).compressed for k in uniq6)
    return pa.array(texts, type=pa.string()).take(pa.array(index))


def _optional(bt: _Batch, off: I64, width: int) -> U32:
    """The u8/u16 at each offset, 0 where the offset is −1."""
    values = bt.u8(off) if width == 1 else bt.be16(off)
    return np.where(off >= 0, values, np.uint32(0))


def decode_sflow(
    datagrams: Sequence[tuple[str, bytes, float]],
) -> tuple[pa.Table, collections.Counter[str]]:
    """(exporter address text, UDP payload, received unix seconds) → flows table + counters.

    The exporter address is the UDP source, used only when a datagram's agent address is unknown.
    Never raises on bad input: see the module docstring for what is counted.
    """
    try:
        return _decode(datagrams)
    except Exception as exc:  # a bug, not bad input: keep every datagram that does not trigger it
        if len(datagrams) <= 1:
            counters: collections.Counter[str] = collections.Counter(datagrams=len(datagrams))
            counters["errors.internal"] += len(datagrams)
            _ratelog.warn("internal", "sflow decode error internal: decoder bug: %r", exc)
            return FLOWS.arrow.empty_table(), counters
        tables, counters = [], collections.Counter()
        for one in datagrams:
            table, more = decode_sflow([one])
            tables.append(table)
            counters.update(more)
        return pa.concat_tables(tables), counters


def _decode(
    datagrams: Sequence[tuple[str, bytes, float]],
) -> tuple[pa.Table, collections.Counter[str]]:
    counters: collections.Counter[str] = collections.Counter()
    payloads = [bytes(payload) for _, payload, _ in datagrams]
    sources = [source for source, _, _ in datagrams]
    if datagrams:
        counters["datagrams"] += len(datagrams)
    bt = _Batch(b"".join([*payloads, _PAD]), sources, counters)
    stops = np.cumsum(np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads)))
    starts = stops - np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
    received = np.array([r for _, _, r in datagrams], dtype=np.float64) * 1000.0
    times_ms = np.trunc(np.nan_to_num(received, nan=0.0, posinf=0.0, neginf=0.0))
    times_ms = np.clip(times_ms, -(2.0**62), 2.0**62).astype(np.int64)

    good, first, nsamples, alen = _datagram_headers(bt, starts, stops)
    s_dg, s_fmt, s_off, s_end = _samples(bt, good, first, nsamples, stops)
    bt.count("samples.flow", s_fmt == _SAMPLE_FLOW)
    bt.count("samples.counter", s_fmt == _SAMPLE_COUNTER)
    bt.count("samples.expanded_flow", s_fmt == _SAMPLE_EXPANDED_FLOW)
    bt.count("samples.expanded_counter", s_fmt == _SAMPLE_EXPANDED_COUNTER)
    bt.count("samples.drop", s_fmt == _SAMPLE_DROP)
    bt.count("skipped.drop_sample", s_fmt == _SAMPLE_DROP)
    bt.count("samples.unknown", (s_fmt < _SAMPLE_FLOW) | (s_fmt > _SAMPLE_DROP))

    flow = (s_fmt == _SAMPLE_FLOW) | (s_fmt == _SAMPLE_EXPANDED_FLOW)
    dg, off, end = s_dg[flow], s_off[flow], s_end[flow]
    expanded = s_fmt[flow] == _SAMPLE_EXPANDED_FLOW
    well_formed, raw, sampled, sampled_v = _records(bt, dg, off, end, expanded)

    ip = _IP(len(off))
    has_raw = well_formed & (raw >= 0)
    if has_raw.any():
        parsed = _raw_headers(bt, raw[has_raw], dg[has_raw])
        for name in ("ok", "addr", "v6", "proto", "tos", "tos_v6", "sport", "dport", "flags"):
            getattr(ip, name)[has_raw] = getattr(parsed, name)
    use_sampled = well_formed & ~ip.ok & (sampled >= 0)
    bt.count("skipped.flow_sample_without_ip", well_formed & ~ip.ok & ~use_sampled)
    if use_sampled.any():
        p, v6 = sampled[use_sampled], sampled_v[use_sampled] == 6
        ip.ok[use_sampled] = True
        ip.addr[use_sampled] = p + 8
        ip.v6[use_sampled] = v6
        ip.proto[use_sampled] = bt.u8(p + 7)
        ip.tos[use_sampled] = np.where(v6, p + 55, p + 31)  # low byte of tos / priority
        ip.tos_v6[use_sampled] = False
        ip.sport[use_sampled] = np.where(v6, p + 42, p + 18)  # low 16 bits of the u32 ports
        ip.dport[use_sampled] = np.where(v6, p + 46, p + 22)
        ip.flags[use_sampled] = np.where(v6, p + 51, p + 27)

    rows = ip.ok
    length_off = np.where(has_raw & rows & ~use_sampled, raw + 4, sampled)[rows]
    table = _table(
        bt, dg[rows], off[rows], expanded[rows], length_off, ip, rows, times_ms, starts, alen
    )
    return table, counters


def _table(
    bt: _Batch,
    dg: I64,
    s: I64,
    expanded: Mask,
    length_off: I64,
    ip: _IP,
    rows: Mask,
    times_ms: I64,
    starts: I64,
    alen: I64,
) -> pa.Table:
    schema = FLOWS.arrow
    n = len(dg)
    rate = np.where(expanded, bt.be32(s + 12), bt.be32(s + 8))
    observation_domain = np.where(expanded, bt.be32(s + 8), bt.be32(s + 4) & 0x00FFFFFF)
    interfaces = []
    for compact, fmt, value in ((20, 24, 28), (24, 32, 36)):  # input, output
        packed = bt.be32(s + compact)  # flow sample: 2-bit format, 30-bit value
        values = np.where(expanded, bt.be32(s + value), packed)
        ok = np.where(expanded, bt.be32(s + fmt) == 0, packed >> 30 == 0)
        ok &= values != _IF_UNKNOWN
        interfaces.append(pa.array(values, type=pa.uint32(), mask=~ok))
    unknown_rate = rate == 0
    bt.count("flows", np.ones(n, dtype=bool))
    bt.count("flows.sampling_rate_unknown", unknown_rate)

    v6 = ip.v6[rows]
    addr = ip.addr[rows]
    tos_off = ip.tos[rows]
    tos = np.where(
        ip.tos_v6[rows],
        (bt.u8(tos_off) & 0x0F) << np.uint32(4) | bt.u8(tos_off + 1) >> np.uint32(4),
        bt.u8(tos_off),
    )
    # Exporter: the agent address when the datagram has one, else the UDP source.
    agent_dg = np.unique(dg)
    with_agent = agent_dg[alen[agent_dg] > 0]
    exporter_text = {int(d): bt.sources[int(d)] for d in agent_dg}
    if with_agent.size:
        agent_off = starts[with_agent] + 8
        texts = _addresses(bt, agent_off, alen[with_agent] == 16).to_pylist()
        exporter_text.update(zip(with_agent.tolist(), texts, strict=True))
    exporter_index = np.searchsorted(agent_dg, dg)
    exporters = pa.array([exporter_text[int(d)] for d in agent_dg], type=pa.string())

    ts = pa.array(times_ms[dg]).cast(schema.field("time_start").type)
    arrays = {
        "time_start": ts,
        "time_end": ts,
        "src_addr": _addresses(bt, addr, v6),
        "dst_addr": _addresses(bt, addr + np.where(v6, 16, 4), v6),
        "src_port": pa.array(_optional(bt, ip.sport[rows], 2).astype(np.uint16)),
        "dst_port": pa.array(_optional(bt, ip.dport[rows], 2).astype(np.uint16)),
        "protocol": pa.array(ip.proto[rows].astype(np.uint8)),
        "tcp_flags": pa.array(_optional(bt, ip.flags[rows], 1).astype(np.uint8)),
        "tos": pa.array(tos.astype(np.uint8)),
        "packets": pa.array(np.ones(n, dtype=np.uint64)),
        "bytes": pa.array(bt.be32(length_off).astype(np.uint64)),
        "exporter": exporters.take(pa.array(exporter_index)),
        "input_if": interfaces[0],
        "output_if": interfaces[1],
        "sampling_rate": pa.array(rate, type=pa.uint32(), mask=unknown_rate),
        "observation_domain": pa.array(observation_domain.astype(np.uint32)),
    }
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)
