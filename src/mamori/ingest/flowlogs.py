"""Flow logs (Zeek ``conn.log``, Argus ``binetflow``) turned into IPFIX export packets, as a
router would have sent them: a tool for replaying labelled public captures through the collector.

A log line is one *connection*, both directions; a router exports one flow per direction, so
each line gives up to two records (the answer only where the responder sent packets). Long
connections are cut at ``active_timeout_s`` the way a router's active timeout cuts them: into
pieces of equal length, bytes and packets shared out (every piece carries at least one packet).
TCP flags come from the log's own account of the handshake — Zeek's ``history`` letters (upper
case: originator, lower case: responder) or Argus's ``State`` (``SRC_DST`` flag letters) — so
a scan's unanswered SYN stays a SYN and an exchange carries its ACK. Lines that are not IP (ARP,
LLC) or lack an address are skipped and counted. Times may be moved (``shift_s``): published
captures are often dated 1970 or by seconds since the capture started.

Only header fields are kept (addresses, ports, protocol, flags, packets, bytes, times): what a
flow record holds. No payload column is read.
"""

from __future__ import annotations

import csv
import gzip
import ipaddress
import json
import socket
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

__all__ = [
    "Converted",
    "FlowLog",
    "ipfix_packets",
    "read_argus",
    "read_flow_log",
    "read_zeek_conn",
    "send_udp",
]

_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "icmp6": 58, "sctp": 132}
_FLAG = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}

_V4_ID, _V6_ID, _OPT_ID = 256, 257, 258
_COMMON = ((1, 8), (2, 8), (4, 1), (6, 1), (7, 2), (11, 2), (152, 8), (153, 8))
_V4_FIELDS = (*_COMMON, (8, 4), (12, 4))
_V6_FIELDS = (*_COMMON, (27, 16), (28, 16))
_HEAD = [("octets", ">u8"), ("pkts", ">u8"), ("proto", "u1"), ("flags", "u1"),
         ("sport", ">u2"), ("dport", ">u2"), ("start_ms", ">u8"), ("end_ms", ">u8")]  # fmt: skip
_V4 = np.dtype([*_HEAD, ("src", ">u4"), ("dst", ">u4")])
_V6 = np.dtype([*_HEAD, ("src", "V16"), ("dst", "V16")])
_MAX_PAYLOAD = 1400


@dataclass
class FlowLog:
    """One record per direction: columns as lists (a fixture's few thousand lines)."""

    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    src: list[str] = field(default_factory=list)
    dst: list[str] = field(default_factory=list)
    sport: list[int] = field(default_factory=list)
    dport: list[int] = field(default_factory=list)
    proto: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    packets: list[int] = field(default_factory=list)
    octets: list[int] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.start)

    def add(self, start: float, dur: float, src: str, dst: str, sport: int, dport: int,
            proto: int, flags: int, packets: int, octets: int, active_timeout_s: float) -> None:  # fmt: skip
        if packets <= 0:
            return
        pieces = max(1, min(packets, int(np.ceil(dur / active_timeout_s)) if dur > 0 else 1))
        step = dur / pieces
        for i in range(pieces):
            # integer shares that add up to the whole
            pk = packets * (i + 1) // pieces - packets * i // pieces
            by = octets * (i + 1) // pieces - octets * i // pieces
            self.start.append(start + i * step)
            self.end.append(start + (i + 1) * step)
            self.src.append(src)
            self.dst.append(dst)
            self.sport.append(sport)
            self.dport.append(dport)
            self.proto.append(proto)
            self.flags.append(flags)
            self.packets.append(max(1, pk))
            self.octets.append(max(by, 20 * max(1, pk)))


def _flags(letters: str) -> int:
    out = 0
    for ch in letters:
        out |= _FLAG.get(ch, 0)
    return out


def _zeek_flags(history: str) -> tuple[int, int]:
    """Originator's and responder's TCP flags from Zeek's connection history."""
    orig = resp = 0
    for ch in history:
        low = ch.lower()
        upper = ch.isupper()
        bits = {"s": 0x02, "h": 0x12, "a": 0x10, "d": 0x18, "f": 0x11, "r": 0x04}.get(low, 0)
        if low == "h":  # the responder's SYN-ACK, whatever the case
            resp |= bits
        elif upper:
            orig |= bits
        else:
            resp |= bits
    return orig, resp


def _zeek_rows(path: Path) -> Iterator[dict[str, str] | None]:
    """Zeek's rows as text, from its tab-separated form (``#fields`` header) or its JSON lines;
    None for a line that cannot be read."""
    names: list[str] = []
    with _open(path) as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.startswith("{"):
                try:
                    raw = json.loads(line)
                except ValueError:
                    yield None
                    continue
                yield {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else None
                continue
            if line.startswith("#fields"):
                names = line.split("\t")[1:]
                continue
            if not line or line.startswith("#"):
                continue
            yield dict(zip(names, line.split("\t"), strict=False))


def read_zeek_conn(path: Path, *, active_timeout_s: float = 60.0, shift_s: float = 0.0) -> FlowLog:
    """Zeek ``conn.log`` (tab-separated or JSON lines) into per-direction records."""
    out = FlowLog()
    for row in _zeek_rows(path):
        if row is None:
            out.skipped += 1
            continue
        proto = _PROTO.get(row.get("proto", ""))
        try:
            ts = float(row["ts"]) + shift_s
            src, dst = row["id.orig_h"], row["id.resp_h"]
            ipaddress.ip_address(src), ipaddress.ip_address(dst)
            sport, dport = int(row["id.orig_p"]), int(row["id.resp_p"])
        except (KeyError, ValueError):
            out.skipped += 1
            continue
        if proto is None:
            out.skipped += 1
            continue
        dur = _num(row.get("duration"))
        of, rf = _zeek_flags(row.get("history", "")) if proto == 6 else (0, 0)
        if proto in (1, 58):  # Zeek puts ICMP type/code in the ports; flows carry them so
            sport, dport = 0, sport * 256 + dport
        out.add(ts, dur, src, dst, sport, dport, proto, of, int(_num(row.get("orig_pkts"))),
                int(_num(row.get("orig_ip_bytes"))), active_timeout_s)  # fmt: skip
        if proto not in (1, 58):
            out.add(ts, dur, dst, src, dport, sport, proto, rf,
                    int(_num(row.get("resp_pkts"))), int(_num(row.get("resp_ip_bytes"))),
                    active_timeout_s)  # fmt: skip
    return out


def read_argus(path: Path, *, active_timeout_s: float = 60.0, shift_s: float = 0.0) -> FlowLog:
    """Argus ``binetflow`` (CSV) into per-direction records. Argus counts packets for both
    directions together: they are shared out in proportion to the bytes."""
    out = FlowLog()
    with _open(path) as fh:
        for row in csv.DictReader(fh):
            proto = _PROTO.get((row.get("Proto") or "").strip())
            try:
                start = (
                    datetime.strptime(row["StartTime"].strip(), "%Y/%m/%d %H:%M:%S.%f")
                    .replace(tzinfo=UTC)
                    .timestamp()
                ) + shift_s
                src, dst = row["SrcAddr"].strip(), row["DstAddr"].strip()
                ipaddress.ip_address(src), ipaddress.ip_address(dst)
                sport = _port(row.get("Sport"))
                dport = _port(row.get("Dport"))
                total_pk = int(row["TotPkts"])
                total_by = int(row["TotBytes"])
                src_by = int(row["SrcBytes"])
            except (KeyError, ValueError):
                out.skipped += 1
                continue
            if proto is None:
                out.skipped += 1
                continue
            dur = _num(row.get("Dur"))
            dst_by = max(0, total_by - src_by)
            src_pk = max(1, round(total_pk * src_by / total_by)) if total_by else total_pk
            src_pk = min(src_pk, total_pk)
            dst_pk = total_pk - src_pk if dst_by else 0
            state = (row.get("State") or "").strip()
            sf, _, df = state.partition("_") if proto == 6 else ("", "", "")
            out.add(start, dur, src, dst, sport, dport, proto, _flags(sf), src_pk, src_by,
                    active_timeout_s)  # fmt: skip
            if dst_pk and proto not in (1, 58):
                out.add(start, dur, dst, src, dport, sport, proto, _flags(df), dst_pk, dst_by,
                        active_timeout_s)  # fmt: skip
    return out


def read_flow_log(path: Path, *, active_timeout_s: float = 60.0, shift_s: float = 0.0) -> FlowLog:
    """Either format, told apart by the first line (Zeek's ``#separator`` or Argus's header)."""
    with _open(path) as fh:
        first = fh.readline()
    reader = read_zeek_conn if first.startswith(("#", "{")) else read_argus
    return reader(path, active_timeout_s=active_timeout_s, shift_s=shift_s)


def _open(path: Path) -> TextIO:
    """The log as text, gunzipped where its name ends in ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return path.open(encoding="utf-8", errors="replace", newline="")


def _num(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "", "-") else 0.0
    except ValueError:
        return 0.0


def _port(v: str | None) -> int:
    v = (v or "").strip()
    if not v:
        return 0
    return int(v, 16) if v.startswith("0x") else int(v)


@dataclass(frozen=True)
class Converted:
    packets: list[bytes]
    records: int


def _records(log: FlowLog, idx: npt.NDArray[np.int64], v6: bool) -> bytes:
    rec = np.zeros(idx.size, dtype=_V6 if v6 else _V4)
    for name in ("octets", "packets", "proto", "flags", "sport", "dport"):
        col = np.asarray(getattr(log, name), dtype=np.int64)[idx]
        rec["pkts" if name == "packets" else name] = col
    rec["start_ms"] = np.round(np.asarray(log.start)[idx] * 1000).astype(np.int64)
    rec["end_ms"] = np.round(np.asarray(log.end)[idx] * 1000).astype(np.int64)
    for side in ("src", "dst"):
        addrs = [getattr(log, side)[i] for i in idx.tolist()]
        if v6:
            rec[side] = [ipaddress.IPv6Address(a).packed for a in addrs]
        else:
            rec[side] = [int(ipaddress.IPv4Address(a)) for a in addrs]
    return rec.tobytes()


def _template(tid: int, fields: Sequence[tuple[int, int]]) -> bytes:
    body = struct.pack(">HH", tid, len(fields)) + b"".join(struct.pack(">HH", *f) for f in fields)
    return struct.pack(">HH", 2, 4 + len(body)) + body


def _sampling(domain: int, interval: int) -> bytes:
    """The options template and record that announce the sampling interval (1: every packet),
    as the simulator's routers and real ones do: without it the rate is unknown."""
    opt = struct.pack(">HHH", _OPT_ID, 3, 1) + struct.pack(">HHHHHH", 143, 4, 34, 4, 35, 1)
    opt += b"\0" * (-len(opt) % 4)
    data = struct.pack(">IIB", domain, interval, 2 if interval > 1 else 0)
    data += b"\0" * (-len(data) % 4)
    return (struct.pack(">HH", 3, 4 + len(opt)) + opt
            + struct.pack(">HH", _OPT_ID, 4 + len(data)) + data)  # fmt: skip


def ipfix_packets(log: FlowLog, *, domain: int = 1, sampling: int = 1) -> Converted:
    """IPFIX (RFC 7011) messages carrying ``log``'s records in order of their end, templates and
    the sampling interval in every message (a replay may start anywhere), each message stamped
    one second after the last flow it carries ended."""
    if not len(log):
        return Converted([], 0)
    ends = np.asarray(log.end)
    order = np.argsort(ends, kind="stable")
    is_v6 = np.array([":" in log.src[i] for i in order.tolist()], dtype=bool)
    templates = (
        _template(_V4_ID, _V4_FIELDS) + _template(_V6_ID, _V6_FIELDS) + _sampling(domain, sampling)
    )
    out: list[bytes] = []
    seq = 0
    for v6, tid, dtype in ((False, _V4_ID, _V4), (True, _V6_ID, _V6)):
        idx = order[is_v6 == v6].astype(np.int64)
        per = (_MAX_PAYLOAD - 16 - len(templates) - 4) // dtype.itemsize
        for pos in range(0, idx.size, per):
            chunk = idx[pos : pos + per]
            body = _records(log, chunk, v6)
            data = struct.pack(">HH", tid, 4 + len(body)) + body
            export_s = int(np.floor(ends[chunk].max())) + 1
            head = struct.pack(">HHIII", 10, 16 + len(templates) + len(data), export_s, seq,
                               domain)  # fmt: skip
            seq = (seq + chunk.size + 1) & 0xFFFFFFFF  # the options record counts too
            out.append(head + templates + data)
    return Converted(out, len(log))


def send_udp(packets: Iterable[bytes], host: str, port: int, *, pause_every: int = 20,
             pause_s: float = 0.005) -> int:  # fmt: skip
    """Send the messages to a collector, pausing now and then so a loopback socket's buffer
    does not overflow; how many were sent."""
    n = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in packets:
            s.sendto(p, (host, port))
            n += 1
            if n % pause_every == 0:
                time.sleep(pause_s)
    return n
