"""Routers: packet sampling, and NetFlow v9 (RFC 3954), IPFIX (RFC 7011) and sFlow v5 encoders.

Records are packed with NumPy structured dtypes (big-endian, no padding) in one ``tobytes()`` per
router; Python only loops per export packet (tens of records), never per flow.

* NetFlow v9: template 256 (13 fields) and options template 257 (scope System, options
  SAMPLING_INTERVAL 34 and SAMPLING_ALGORITHM 35) with its data record, all re-sent every
  ``template_refresh_packets`` packets and at least every ``template_refresh_s`` seconds.
* IPFIX: template 256 with millisecond time stamps (152/153), options template 257 (scope
  meteringProcessId 143; samplingInterval 34, samplingAlgorithm 35), same refresh policy.
* sFlow v5: one flow sample (enterprise 0, format 1) per sampled packet, carrying a raw packet
  header record (format 1, header protocol 11 = IPv4: IPv4 + TCP/UDP headers built from the
  flow's fields; no link layer, so no XDR padding).
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from mamori.sim._net import ip
from mamori.sim.config import RouterSpec
from mamori.sim.flows import FlowTable

V9_TEMPLATE_ID = 256
OPTIONS_TEMPLATE_ID = 257
SAMPLING_ALGORITHM_RANDOM = 2

#: (NetFlow v9 / IPFIX element id, length) of the data template, in record order
V9_FIELDS = ((1, 8), (2, 8), (4, 1), (5, 1), (6, 1), (7, 2), (8, 4), (10, 4), (11, 2), (12, 4),
             (14, 4), (21, 4), (22, 4))  # fmt: skip
IPFIX_FIELDS = ((1, 8), (2, 8), (4, 1), (5, 1), (6, 1), (7, 2), (8, 4), (10, 4), (11, 2), (12, 4),
                (14, 4), (153, 8), (152, 8))  # fmt: skip

_COMMON = [("octets", ">u8"), ("pkts", ">u8"), ("proto", "u1"), ("tos", "u1"), ("flags", "u1"),
           ("sport", ">u2"), ("src", ">u4"), ("in_if", ">u4"), ("dport", ">u2"), ("dst", ">u4"),
           ("out_if", ">u4")]  # fmt: skip
V9_DTYPE = np.dtype([*_COMMON, ("last", ">u4"), ("first", ">u4")])
IPFIX_DTYPE = np.dtype([*_COMMON, ("end_ms", ">u8"), ("start_ms", ">u8")])
assert V9_DTYPE.itemsize == sum(n for _, n in V9_FIELDS)
assert IPFIX_DTYPE.itemsize == sum(n for _, n in IPFIX_FIELDS)

MAX_PAYLOAD = 1400
#: routers booted three days before the scenario (NetFlow v9 time stamps are uptime-relative)
BOOT_OFFSET_S = 3 * 86400.0


#: a border router's customer-facing ifIndex for access region r is this + r (one per region)
CUSTOMER_IFINDEX_BASE = 100


def assign_routers(
    flows: FlowTable, routers: tuple[RouterSpec, ...], region: npt.NDArray[np.int8]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    """Which router sees each flow, and its input/output ifIndex there."""
    border = [i for i, r in enumerate(routers) if r.role == "border"]
    dc = [i for i, r in enumerate(routers) if r.role == "dc"] or border
    ext = np.where(flows.inbound == 0, flows.dst, flows.src).astype(np.uint64)
    h = ((ext * np.uint64(2654435761)) >> np.uint64(16)) & np.uint64(0xFFFF)
    pick_b = np.asarray(border)[(h % np.uint64(len(border))).astype(np.int64)]
    pick_d = np.asarray(dc)[(h % np.uint64(len(dc))).astype(np.int64)]
    router = np.where(flows.path == 1, pick_d, pick_b).astype(np.int64)
    reg = np.where(flows.sub >= 0, region[np.maximum(flows.sub, 0)], 0).astype(np.uint32)
    inner = np.uint32(CUSTOMER_IFINDEX_BASE) + reg
    outer = np.where(
        flows.path == 1, np.uint32(200), (np.uint32(1) + (ext % np.uint64(2)).astype(np.uint32))
    )
    in_if = np.where(flows.inbound == 0, inner, outer).astype(np.uint32)
    out_if = np.where(flows.inbound == 0, outer, inner).astype(np.uint32)
    return router, in_if, out_if


def sample(
    flows: FlowTable, rate: int, rng: np.random.Generator
) -> tuple[FlowTable, npt.NDArray[np.bool_]]:
    """1-in-``rate`` random packet sampling: binomial thinning of each flow's packets.

    Returns the flows that kept at least one packet (packets and bytes as sampled, the way a
    sampling router reports them) and the mask of kept rows.
    """
    if rate == 1:
        return flows, np.ones(len(flows), bool)
    k = rng.binomial(flows.pkts, 1.0 / rate)
    keep = k > 0
    out = flows.take(keep)
    kk = k[keep]
    out.octets = np.maximum(np.round(out.octets * (kk / out.pkts)).astype(np.int64), kk * 28)
    out.pkts = kk.astype(np.int64)
    return out, keep


def _records(
    flows: FlowTable,
    dtype: np.dtype[np.void],
    in_if: npt.NDArray[np.uint32],
    out_if: npt.NDArray[np.uint32],
    boot_ms: int,
) -> npt.NDArray[np.void]:
    rec = np.zeros(len(flows), dtype=dtype)
    for name in ("octets", "pkts", "proto", "tos", "flags", "sport", "src", "dport", "dst"):
        rec[name] = getattr(flows, name)
    rec["in_if"] = in_if
    rec["out_if"] = out_if
    start_ms = np.round(flows.start * 1000).astype(np.int64)
    end_ms = np.round(flows.end * 1000).astype(np.int64)
    if "first" in dtype.names:  # type: ignore[operator]
        rec["first"] = (start_ms - boot_ms).astype(np.uint32)
        rec["last"] = (end_ms - boot_ms).astype(np.uint32)
    else:
        rec["start_ms"] = start_ms
        rec["end_ms"] = end_ms
    return rec


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _v9_templates(r: RouterSpec) -> tuple[bytes, int]:
    tmpl = struct.pack(">HH", V9_TEMPLATE_ID, len(V9_FIELDS)) + b"".join(
        struct.pack(">HH", t, n) for t, n in V9_FIELDS
    )
    t_set = struct.pack(">HH", 0, 4 + len(tmpl)) + tmpl
    opt = struct.pack(">HHH", OPTIONS_TEMPLATE_ID, 4, 8) + struct.pack(
        ">HHHHHH", 1, 4, 34, 4, 35, 1
    )
    opt = _pad4(opt)
    o_set = struct.pack(">HH", 1, 4 + len(opt)) + opt
    data = _pad4(struct.pack(">IIB", r.source_id, r.sampling, SAMPLING_ALGORITHM_RANDOM))
    d_set = struct.pack(">HH", OPTIONS_TEMPLATE_ID, 4 + len(data)) + data
    return t_set + o_set + d_set, 3


def _ipfix_templates(r: RouterSpec) -> tuple[bytes, int]:
    tmpl = struct.pack(">HH", V9_TEMPLATE_ID, len(IPFIX_FIELDS)) + b"".join(
        struct.pack(">HH", t, n) for t, n in IPFIX_FIELDS
    )
    t_set = struct.pack(">HH", 2, 4 + len(tmpl)) + tmpl
    opt = struct.pack(">HHH", OPTIONS_TEMPLATE_ID, 3, 1) + struct.pack(
        ">HHHHHH", 143, 4, 34, 4, 35, 1
    )
    opt = _pad4(opt)
    o_set = struct.pack(">HH", 3, 4 + len(opt)) + opt
    data = _pad4(struct.pack(">IIB", r.source_id, r.sampling, SAMPLING_ALGORITHM_RANDOM))
    d_set = struct.pack(">HH", OPTIONS_TEMPLATE_ID, 4 + len(data)) + data
    # RFC 7011 §3.1: the sequence number counts all Data Records, options data records included
    # (Wireshark checks it that way; nfdump 1.7 counts flow records only and so reports one
    # "sequence failure" per template refresh)
    return t_set + o_set + d_set, 1


def encode_flow_packets(
    flows: FlowTable,
    r: RouterSpec,
    in_if: npt.NDArray[np.uint32],
    out_if: npt.NDArray[np.uint32],
    t0: float,
) -> list[tuple[float, bytes]]:
    """NetFlow v9 or IPFIX export packets for one router's (already sampled) flows."""
    order = np.argsort(flows.end, kind="stable")
    flows = flows.take(order)
    in_if, out_if = in_if[order], out_if[order]
    boot_ms = round((t0 - BOOT_OFFSET_S) * 1000)
    v9 = r.protocol == "netflow9"
    dtype = V9_DTYPE if v9 else IPFIX_DTYPE
    templates, tmpl_count = _v9_templates(r) if v9 else _ipfix_templates(r)
    size = dtype.itemsize
    blob = _records(flows, dtype, in_if, out_if, boot_ms).tobytes()
    hdr = 20 if v9 else 16
    per = (MAX_PAYLOAD - hdr - len(templates) - 4) // size
    n = len(flows)
    # a packet is sent one second after the last flow it carries ended
    last = np.minimum(np.arange(per - 1, n + per - 1, per), n - 1)
    export_times = (np.floor(flows.end[last]).astype(np.int64) + 1).tolist()
    out: list[tuple[float, bytes]] = []
    seq = 0
    refresh = r.template_refresh_packets
    last_template = -np.inf
    pack = struct.pack
    for i, export_s in enumerate(export_times):
        pos = i * per
        k = min(per, n - pos)
        with_t = i % refresh == 0 or export_s - last_template >= r.template_refresh_s
        if with_t:
            last_template = export_s
        body = blob[pos * size : (pos + k) * size]
        pad = b"\0" * (-len(body) % 4)
        data_head = pack(">HH", V9_TEMPLATE_ID, 4 + len(body) + len(pad))
        t = templates if with_t else b""
        if v9:
            uptime = (export_s * 1000 - boot_ms) & 0xFFFFFFFF
            count = k + (tmpl_count if with_t else 0)
            head = pack(">HHIIII", 9, count, uptime, export_s, i, r.source_id)
        else:
            length = 16 + len(t) + 4 + len(body) + len(pad)
            head = pack(">HHIII", 10, length, export_s, seq, r.source_id)
            seq = (seq + k + (tmpl_count if with_t else 0)) & 0xFFFFFFFF
        out.append((float(export_s), b"".join((head, t, data_head, body, pad))))
    return out


# --- sFlow v5 -------------------------------------------------------------------------------
_IP = [("ver_ihl", "u1"),
           ("tos", "u1"), ("tot_len", ">u2"), ("ident", ">u2"), ("frag", ">u2"), ("ttl", "u1"),
           ("proto", "u1"), ("csum", ">u2"), ("src", ">u4"), ("dst", ">u4")]  # fmt: skip
_SAMPLE_HEAD = [("tag", ">u4"), ("length", ">u4"), ("seq", ">u4"), ("source_id", ">u4"),
                ("rate", ">u4"), ("pool", ">u4"), ("drops", ">u4"), ("input", ">u4"),
                ("output", ">u4"), ("n_records", ">u4"), ("r_tag", ">u4"), ("r_length", ">u4"),
                ("hproto", ">u4"), ("frame_len", ">u4"), ("stripped", ">u4"),
                ("hlen", ">u4")]  # fmt: skip
SFLOW_TCP = np.dtype(
    [
        *_SAMPLE_HEAD,
        *_IP,
        ("sport", ">u2"),
        ("dport", ">u2"),
        ("tseq", ">u4"),
        ("tack", ">u4"),
        ("off", "u1"),
        ("tflags", "u1"),
        ("win", ">u2"),
        ("tcsum", ">u2"),
        ("urg", ">u2"),
    ]
)
SFLOW_UDP = np.dtype(
    [
        *_SAMPLE_HEAD,
        *_IP,
        ("sport", ">u2"),
        ("dport", ">u2"),
        ("ulen", ">u2"),
        ("ucsum", ">u2"),
    ]
)
SFLOW_SAMPLES_PER_DATAGRAM = 8
#: sFlow header_protocol 11: the sampled header starts at the IPv4 header (no link layer), so
#: TCP (40 bytes) and UDP (28 bytes) headers need no XDR padding
SFLOW_HEADER_IPV4 = 11


def _ip_checksum(rec: npt.NDArray[np.void]) -> npt.NDArray[np.uint16]:
    words = (
        (rec["ver_ihl"].astype(np.uint32) << 8 | rec["tos"])
        + rec["tot_len"] + rec["ident"] + rec["frag"]
        + (rec["ttl"].astype(np.uint32) << 8 | rec["proto"])
        + (rec["src"] >> 16) + (rec["src"] & 0xFFFF) + (rec["dst"] >> 16) + (rec["dst"] & 0xFFFF)
    ).astype(np.uint32)  # fmt: skip
    words = (words & 0xFFFF) + (words >> 16)
    words = (words & 0xFFFF) + (words >> 16)
    out: npt.NDArray[np.uint16] = (~words & 0xFFFF).astype(np.uint16)
    return out


def encode_sflow(
    flows: FlowTable,
    r: RouterSpec,
    in_if: npt.NDArray[np.uint32],
    out_if: npt.NDArray[np.uint32],
    t0: float,
    rng: np.random.Generator,
) -> tuple[list[tuple[float, bytes]], int]:
    """sFlow v5 datagrams: ``flows`` are already thinned; each remaining packet is one sample."""
    k = flows.pkts
    idx = np.repeat(np.arange(len(flows)), k)
    n = idx.size
    t = flows.start[idx] + rng.random(n) * (flows.end[idx] - flows.start[idx])
    order = np.argsort(t, kind="stable")
    idx, t = idx[order], t[order]
    per_pkt = np.maximum(flows.octets // np.maximum(flows.pkts, 1), 28)[idx]
    is_tcp = flows.proto[idx] == 6
    blobs: list[bytes] = [b""] * n
    for tcp, dtype in ((True, SFLOW_TCP), (False, SFLOW_UDP)):
        sel = np.flatnonzero(is_tcp == tcp)
        if sel.size == 0:
            continue
        fi = idx[sel]
        rec = np.zeros(sel.size, dtype=dtype)
        hlen = 40 if tcp else 28
        rec["tag"] = 1
        rec["length"] = dtype.itemsize - 8
        rec["seq"] = sel + 1
        rec["source_id"] = in_if[fi]
        rec["rate"] = r.sampling
        rec["pool"] = ((sel + 1) * r.sampling) & 0xFFFFFFFF
        rec["input"] = in_if[fi]
        rec["output"] = out_if[fi]
        rec["n_records"] = 1
        rec["r_tag"] = 1
        rec["r_length"] = 16 + hlen
        rec["hproto"] = SFLOW_HEADER_IPV4
        tot = np.maximum(per_pkt[sel], hlen).astype(np.int64)
        rec["frame_len"] = np.minimum(tot, 65535)
        rec["stripped"] = 0
        rec["hlen"] = hlen
        rec["ver_ihl"] = 0x45
        rec["tos"] = flows.tos[fi]
        rec["tot_len"] = np.minimum(tot, 65535)
        rec["ident"] = sel & 0xFFFF
        rec["frag"] = 0x4000
        rec["ttl"] = 64
        rec["proto"] = flows.proto[fi]
        rec["src"] = flows.src[fi]
        rec["dst"] = flows.dst[fi]
        rec["csum"] = _ip_checksum(rec)
        rec["sport"] = flows.sport[fi]
        rec["dport"] = flows.dport[fi]
        if tcp:
            rec["tseq"] = rng.integers(0, 1 << 32, sel.size, dtype=np.uint64)
            rec["tack"] = rng.integers(0, 1 << 32, sel.size, dtype=np.uint64)
            rec["off"] = 0x50
            # one packet of the conversation: a SYN-only flow stays SYN, others are PSH+ACK
            f = flows.flags[fi]
            rec["tflags"] = np.where((f & 0x10) != 0, 0x18, np.where(f == 0, 0x10, f))
            rec["win"] = 65535
        else:
            rec["ulen"] = np.maximum(tot - 20, 8)
        raw = rec.tobytes()
        size = dtype.itemsize
        for j, s in enumerate(sel.tolist()):
            blobs[s] = raw[j * size : (j + 1) * size]
    boot_ms = round((t0 - BOOT_OFFSET_S) * 1000)
    agent = ip(r.exporter_ip)
    out: list[tuple[float, bytes]] = []
    for d, pos in enumerate(range(0, n, SFLOW_SAMPLES_PER_DATAGRAM)):
        m = min(SFLOW_SAMPLES_PER_DATAGRAM, n - pos)
        ts = float(t[pos + m - 1])
        uptime = (int(ts * 1000) - boot_ms) & 0xFFFFFFFF
        head = struct.pack(">IIIIIII", 5, 1, agent, r.source_id, d + 1, uptime, m)
        out.append((float(np.floor(ts)) + 1.0, head + b"".join(blobs[pos : pos + m])))
    return out, n
