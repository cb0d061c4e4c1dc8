"""Classic pcap (libpcap 2.4, Ethernet) of UDP export packets, and replay over UDP to 127.0.0.1."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mamori.sim._net import ip, ntoa

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
COLLECTOR = "127.0.0.1"


@dataclass(frozen=True)
class UdpPacket:
    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


Route = tuple[str, int, str, int]  # source ip, source port, destination ip, destination port


def write_pcap(path: Path, packets: Iterable[UdpPacket]) -> int:
    """Write ``packets`` (already in time order) as Ethernet/IPv4/UDP frames; returns how many."""
    return write_udp_frames(
        path, ((p.ts, (p.src, p.sport, p.dst, p.dport), p.payload) for p in packets)
    )


def write_udp_frames(path: Path, frames: Iterable[tuple[float, Route, bytes]]) -> int:
    """Write (time, route, payload) frames in order; returns how many.

    The IPv4 header checksum is computed incrementally from a per-route base sum; the UDP
    checksum is 0 ("not computed", allowed over IPv4). Frames are written in batches.
    """
    cache: dict[Route, tuple[bytes, int, int, int]] = {}
    n = 0
    pack = struct.pack
    batch: list[bytes] = []
    with path.open("wb") as fh:
        fh.write(pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for ts, route, payload in frames:
            c = cache.get(route)
            if c is None:
                s, d = ip(route[0]), ip(route[2])
                eth = b"\0" * 6 + b"\x02\x00\x00\x00" + pack(">H", s & 0xFFFF) + b"\x08\x00"
                base = 0x4500 + 0x4000 + (64 << 8 | 17) + (s >> 16) + (s & 0xFFFF)
                base += (d >> 16) + (d & 0xFFFF)
                c = cache[route] = (eth, base, s, d)
            eth, base, s, d = c
            udp_len = 8 + len(payload)
            ident = n & 0xFFFF
            x = base + 20 + udp_len + ident
            x = (x & 0xFFFF) + (x >> 16)
            x = (x & 0xFFFF) + (x >> 16)
            sec = int(ts)
            usec = round((ts - sec) * 1e6)
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            size = 42 + len(payload)
            batch.append(pack("<IIII", sec, usec, size, size))
            batch.append(eth)
            batch.append(pack(">BBHHHBBHIIHHHH", 0x45, 0, 20 + udp_len, ident, 0x4000, 64, 17,
                              ~x & 0xFFFF, s, d, route[1], route[3], udp_len, 0))  # fmt: skip
            batch.append(payload)
            n += 1
            if len(batch) >= 4096:
                fh.write(b"".join(batch))
                batch.clear()
        fh.write(b"".join(batch))
    return n


def read_pcap(path: Path) -> Iterator[UdpPacket]:
    """The UDP/IPv4 packets of a classic little- or big-endian Ethernet pcap."""
    with path.open("rb") as fh:
        head = fh.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        endian = "<" if magic == PCAP_MAGIC else ">"
        while True:
            rh = fh.read(16)
            if len(rh) < 16:
                return
            sec, usec, incl, _ = struct.unpack(endian + "IIII", rh)
            data = fh.read(incl)
            if len(data) < 42 or data[12:14] != b"\x08\x00" or data[23] != 17:
                continue
            ihl = (data[14] & 0x0F) * 4
            src, dst = struct.unpack(">II", data[26:34])
            u = 14 + ihl
            sport, dport, ulen = struct.unpack(">HHH", data[u : u + 6])
            yield UdpPacket(
                sec + usec / 1e6, ntoa(src), sport, ntoa(dst), dport, data[u + 8 : u + ulen]
            )


def replay(
    pcap: Path,
    host: str = COLLECTOR,
    port: int | None = None,
    rate: float | None = 20_000.0,
    only_ports: Iterable[int] | None = None,
    from_exporters: bool = True,
) -> int:
    """Send the pcap's UDP payloads to ``host`` (127.0.0.1 by default).

    ``port`` overrides every packet's destination port (None: keep the captured one);
    ``only_ports`` keeps packets captured to those ports; ``rate`` caps packets per second
    (None: as fast as possible). With ``from_exporters``, each packet leaves from its router's
    own loopback address (127.0.1.x), so the collector sees every router as a separate exporter,
    as it would in a network. Returns the number of datagrams sent.
    """
    keep = set(only_ports) if only_ports is not None else None
    sent = 0
    began = time.monotonic()
    socks: dict[str, socket.socket] = {}
    default = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for p in read_pcap(pcap):
            if keep is not None and p.dport not in keep:
                continue
            sock = default
            if from_exporters and p.src.startswith("127."):
                sock = socks.get(p.src) or socks.setdefault(p.src, _bound(p.src))
            sock.sendto(p.payload, (host, port if port is not None else p.dport))
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        default.close()
        for s in socks.values():
            s.close()
    return sent


def _bound(src: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))  # every 127/8 address is local on Linux: nothing leaves the machine
    return s
