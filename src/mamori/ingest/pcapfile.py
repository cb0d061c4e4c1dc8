"""Read UDP datagrams out of packet captures (classic pcap and pcapng).

Used by ``mamori collect --pcap FILE`` to replay export packets, and by tests. Supports both byte
orders, microsecond and nanosecond classic pcap, pcapng (section header, interface description,
enhanced and simple packet blocks, ``if_tsresol``), and the link types Ethernet (802.1Q / 802.1ad
VLAN tags, QinQ), Linux cooked capture v1 and v2, raw IP, IPv4, IPv6, BSD null and OpenBSD loop.

Nothing here raises on bad input: IP fragments, non-UDP packets and every kind of malformed frame
are counted in the ``counters`` passed in (or in :attr:`PcapReader.counters`) and skipped.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

__all__ = ["PcapReader", "UdpDatagram", "read_udp"]

# Link-layer header types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_RAW_12: Final = 12  # DLT_RAW on most BSDs / libpcap
LINKTYPE_RAW_14: Final = 14  # DLT_RAW on OpenBSD
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276

_ETH_IPV4: Final = 0x0800
_ETH_IPV6: Final = 0x86DD
_ETH_VLAN: Final = frozenset({0x8100, 0x88A8, 0x9100})
_AF_INET6: Final = frozenset({10, 24, 28, 30})  # Linux, BSD, FreeBSD, macOS

_PCAPNG_SHB: Final = 0x0A0D0D0A
_PCAPNG_IDB: Final = 1
_PCAPNG_PB: Final = 2  # obsolete packet block
_PCAPNG_SPB: Final = 3
_PCAPNG_EPB: Final = 6
_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
_MAX_BLOCK: Final = 64 * 1024 * 1024
_MAX_SNAP: Final = 256 * 1024


@dataclass(frozen=True)
class UdpDatagram:
    ts: float  # capture time, unix seconds
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


class PcapReader:
    """Iterate the UDP datagrams of one capture; counts everything it skips."""

    def __init__(self, source: str | Path | BinaryIO, counters: Counter[str] | None = None):
        self.source = source
        self.counters: Counter[str] = counters if counters is not None else Counter()

    def __iter__(self) -> Iterator[UdpDatagram]:
        if isinstance(self.source, str | Path):
            with open(self.source, "rb") as f:
                yield from self._read(f)
        else:
            yield from self._read(self.source)

    def _read(self, f: BinaryIO) -> Iterator[UdpDatagram]:
        magic = f.read(4)
        if len(magic) < 4:
            self.counters["malformed.file_header"] += 1
            return
        if magic == b"\x0a\x0d\x0d\x0a":
            yield from self._pcapng(f, magic)
            return
        for order in ("<", ">"):
            (m,) = struct.unpack(order + "I", magic)
            if m in (0xA1B2C3D4, 0xA1B23C4D):
                yield from self._classic(f, order, 1e-6 if m == 0xA1B2C3D4 else 1e-9)
                return
        self.counters["malformed.file_header"] += 1

    # ------------------------------------------------------------------ classic pcap
    def _classic(self, f: BinaryIO, order: str, resolution: float) -> Iterator[UdpDatagram]:
        header = f.read(20)
        if len(header) < 20:
            self.counters["malformed.file_header"] += 1
            return
        _, _, _, _, snaplen, linktype = struct.unpack(order + "HHiIII", header)
        linktype &= 0x0FFFFFFF  # upper bits may carry FCS information
        rec = struct.Struct(order + "IIII")
        while True:
            head = f.read(16)
            if not head:
                return
            if len(head) < 16:
                self.counters["malformed.truncated_record"] += 1
                return
            secs, frac, caplen, _ = rec.unpack(head)
            if caplen > max(snaplen, _MAX_SNAP):
                self.counters["malformed.record_length"] += 1
                return
            data = f.read(caplen)
            if len(data) < caplen:
                self.counters["malformed.truncated_record"] += 1
                return
            dg = self._frame(linktype, secs + frac * resolution, data)
            if dg is not None:
                yield dg

    # ------------------------------------------------------------------ pcapng
    def _pcapng(self, f: BinaryIO, first: bytes) -> Iterator[UdpDatagram]:
        order = "<"
        interfaces: list[tuple[int, float]] = []  # (linktype, seconds per tick)
        block_type_raw = first
        while True:
            if block_type_raw is None or len(block_type_raw) < 4:
                if block_type_raw:
                    self.counters["malformed.truncated_block"] += 1
                return
            length_raw = f.read(4)
            if len(length_raw) < 4:
                self.counters["malformed.truncated_block"] += 1
                return
            if block_type_raw == b"\x0a\x0d\x0d\x0a":
                bom = f.read(4)
                if len(bom) < 4:
                    self.counters["malformed.truncated_block"] += 1
                    return
                if struct.unpack("<I", bom)[0] == _BYTE_ORDER_MAGIC:
                    order = "<"
                elif struct.unpack(">I", bom)[0] == _BYTE_ORDER_MAGIC:
                    order = ">"
                else:
                    self.counters["malformed.byte_order"] += 1
                    return
                (length,) = struct.unpack(order + "I", length_raw)
                if length < 28 or length % 4 or length > _MAX_BLOCK:
                    self.counters["malformed.block_length"] += 1
                    return
                body = f.read(length - 12)
                if len(body) < length - 12:
                    self.counters["malformed.truncated_block"] += 1
                    return
                interfaces = []  # a new section starts a new interface list
                block_type_raw = f.read(4)
                continue
            (btype,) = struct.unpack(order + "I", block_type_raw)
            (length,) = struct.unpack(order + "I", length_raw)
            if length < 12 or length % 4 or length > _MAX_BLOCK:
                self.counters["malformed.block_length"] += 1
                return
            body = f.read(length - 8)
            if len(body) < length - 8:
                self.counters["malformed.truncated_block"] += 1
                return
            body = body[:-4]  # trailing copy of the length
            if btype == _PCAPNG_IDB:
                interfaces.append(self._idb(order, body))
            elif btype in (_PCAPNG_EPB, _PCAPNG_PB):
                dg = self._epb(order, body, interfaces, btype == _PCAPNG_PB)
                if dg is not None:
                    yield dg
            elif btype == _PCAPNG_SPB:
                if not interfaces or len(body) < 4:
                    self.counters["malformed.packet_block"] += 1
                else:
                    (orig,) = struct.unpack_from(order + "I", body)
                    data = body[4 : 4 + orig]
                    dg = self._frame(interfaces[0][0], 0.0, data)
                    if dg is not None:
                        yield dg
            else:
                self.counters["pcapng.other_block"] += 1
            block_type_raw = f.read(4)

    def _idb(self, order: str, body: bytes) -> tuple[int, float]:
        if len(body) < 8:
            self.counters["malformed.interface_block"] += 1
            return (-1, 1e-6)
        linktype = struct.unpack_from(order + "H", body)[0]
        tick = 1e-6
        pos = 8
        while pos + 4 <= len(body):
            code, olen = struct.unpack_from(order + "HH", body, pos)
            pos += 4
            if code == 0:
                break
            if code == 9 and olen >= 1 and pos < len(body):  # if_tsresol
                v = body[pos]
                tick = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
            pos += (olen + 3) & ~3
        return (linktype, tick)

    def _epb(
        self, order: str, body: bytes, interfaces: list[tuple[int, float]], old: bool
    ) -> UdpDatagram | None:
        if len(body) < 20:
            self.counters["malformed.packet_block"] += 1
            return None
        if old:
            iface, _, high, low, caplen = struct.unpack_from(order + "HHIII", body)
        else:
            iface, high, low, caplen = struct.unpack_from(order + "IIII", body)
        if iface >= len(interfaces) or caplen > len(body) - 20:
            self.counters["malformed.packet_block"] += 1
            return None
        linktype, tick = interfaces[iface]
        ts = ((high << 32) | low) * tick
        return self._frame(linktype, ts, body[20 : 20 + caplen])

    # ------------------------------------------------------------------ link and network layers
    def _frame(self, linktype: int, ts: float, data: bytes) -> UdpDatagram | None:
        self.counters["frames"] += 1
        net: bytes | None
        if linktype == LINKTYPE_ETHERNET:
            net = self._ethernet(data)
        elif linktype in (
            LINKTYPE_RAW,
            LINKTYPE_RAW_12,
            LINKTYPE_RAW_14,
            LINKTYPE_IPV4,
            LINKTYPE_IPV6,
        ):
            net = data
        elif linktype == LINKTYPE_LINUX_SLL:
            net = self._ethertype(data, 14, 16)
        elif linktype == LINKTYPE_LINUX_SLL2:
            net = self._ethertype(data, 0, 20)
        elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            if len(data) < 4:
                self.counters["malformed.link"] += 1
                return None
            net = data[4:]
        else:
            self.counters["skipped.linktype"] += 1
            return None
        if net is None:
            return None
        if not net:
            self.counters["malformed.ip"] += 1
            return None
        version = net[0] >> 4
        if version == 4:
            return self._ipv4(ts, net)
        if version == 6:
            return self._ipv6(ts, net)
        self.counters["skipped.not_ip"] += 1
        return None

    def _ethertype(self, data: bytes, type_at: int, header: int) -> bytes | None:
        if len(data) < header:
            self.counters["malformed.link"] += 1
            return None
        ethertype = int.from_bytes(data[type_at : type_at + 2], "big")
        return self._by_ethertype(data, ethertype, header)

    def _ethernet(self, data: bytes) -> bytes | None:
        if len(data) < 14:
            self.counters["malformed.link"] += 1
            return None
        pos = 12
        ethertype = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        while ethertype in _ETH_VLAN:
            if len(data) < pos + 4:
                self.counters["malformed.link"] += 1
                return None
            ethertype = int.from_bytes(data[pos + 2 : pos + 4], "big")
            pos += 4
        return self._by_ethertype(data, ethertype, pos)

    def _by_ethertype(self, data: bytes, ethertype: int, pos: int) -> bytes | None:
        if ethertype in (_ETH_IPV4, _ETH_IPV6):
            return data[pos:]
        self.counters["skipped.not_ip"] += 1
        return None

    def _ipv4(self, ts: float, ip: bytes) -> UdpDatagram | None:
        if len(ip) < 20:
            self.counters["malformed.ipv4"] += 1
            return None
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        if ihl < 20 or total < ihl or len(ip) < ihl:
            self.counters["malformed.ipv4"] += 1
            return None
        if total > len(ip):
            self.counters["malformed.truncated_ip"] += 1
            return None
        frag = int.from_bytes(ip[6:8], "big")
        if frag & 0x3FFF:  # more-fragments flag or a non-zero offset
            self.counters["skipped.fragment"] += 1
            return None
        if ip[9] != 17:
            self.counters["skipped.not_udp"] += 1
            return None
        src = str(ipaddress.IPv4Address(ip[12:16]))
        dst = str(ipaddress.IPv4Address(ip[16:20]))
        return self._udp(ts, src, dst, ip[ihl:total])

    def _ipv6(self, ts: float, ip: bytes) -> UdpDatagram | None:
        if len(ip) < 40:
            self.counters["malformed.ipv6"] += 1
            return None
        plen = int.from_bytes(ip[4:6], "big")
        if 40 + plen > len(ip):
            self.counters["malformed.truncated_ip"] += 1
            return None
        nxt = ip[6]
        pos = 40
        end = 40 + plen
        while nxt in (0, 43, 60, 44, 51):
            if nxt == 44:
                self.counters["skipped.fragment"] += 1
                return None
            if pos + 2 > end:
                self.counters["malformed.ipv6"] += 1
                return None
            hlen = (ip[pos + 1] + 2) * 4 if nxt == 51 else (ip[pos + 1] + 1) * 8
            nxt = ip[pos]
            pos += hlen
        if nxt != 17:
            self.counters["skipped.not_udp"] += 1
            return None
        src = ipaddress.IPv6Address(ip[8:24]).compressed
        dst = ipaddress.IPv6Address(ip[24:40]).compressed
        return self._udp(ts, src, dst, ip[pos:end])

    def _udp(self, ts: float, src: str, dst: str, seg: bytes) -> UdpDatagram | None:
        if len(seg) < 8:
            self.counters["malformed.udp"] += 1
            return None
        sport, dport, length = struct.unpack_from("!HHH", seg)
        if length < 8 or length > len(seg):
            self.counters["malformed.udp"] += 1
            return None
        self.counters["udp"] += 1
        return UdpDatagram(ts, src, sport, dst, dport, bytes(seg[8:length]))


def read_udp(
    source: str | Path | BinaryIO, counters: Counter[str] | None = None
) -> Iterator[UdpDatagram]:
    """Yield the UDP datagrams (over IPv4 or IPv6) of a pcap or pcapng capture."""
    return iter(PcapReader(source, counters))
