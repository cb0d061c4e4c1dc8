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


def _checksum(header: bytes) -> int:
    s = sum(struct.unpack(f">{len(header) // 2}H", header))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return int(~s & 0xFFFF)


def frame(p: UdpPacket, ident: int) -> bytes:
    udp_len = 8 + len(p.payload)
    iph = struct.pack(
        ">BBHHHBBHII",
        0x45,
        0,
        20 + udp_len,
        ident & 0xFFFF,
        0x4000,
        64,
        17,
        0,
        ip(p.src),
        ip(p.dst),
    )
    iph = iph[:10] + struct.pack(">H", _checksum(iph)) + iph[12:]
    udp = struct.pack(">HHHH", p.sport, p.dport, udp_len, 0)
    eth = b"\x00\x00\x00\x00\x00\x00" + b"\x02\x00\x00\x00" + struct.pack(">H", ip(p.src) & 0xFFFF)
    return eth + b"\x08\x00" + iph + udp + p.payload


def write_pcap(path: Path, packets: Iterable[UdpPacket]) -> int:
    """Write ``packets`` (already in time order); returns how many."""
    n = 0
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for p in packets:
            data = frame(p, n)
            sec = int(p.ts)
            usec = round((p.ts - sec) * 1e6)
            fh.write(struct.pack("<IIII", sec, usec, len(data), len(data)))
            fh.write(data)
            n += 1
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
) -> int:
    """Send the pcap's UDP payloads to ``host`` (127.0.0.1 by default).

    ``port`` overrides every packet's destination port (None: keep the captured one);
    ``only_ports`` keeps packets captured to those ports; ``rate`` caps packets per second
    (None: as fast as possible). Returns the number of datagrams sent.
    """
    keep = set(only_ports) if only_ports is not None else None
    sent = 0
    began = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for p in read_pcap(pcap):
            if keep is not None and p.dport not in keep:
                continue
            sock.sendto(p.payload, (host, port if port is not None else p.dport))
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
    return sent
