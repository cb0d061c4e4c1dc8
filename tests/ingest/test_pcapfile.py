from __future__ import annotations

import io
import ipaddress
import struct
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mamori.ingest.pcapfile import UdpDatagram, read_udp

DATA = Path(__file__).resolve().parents[1] / "data" / "netflow"
PAYLOAD = b"\x00\x09hello-netflow"


def udp(payload: bytes = PAYLOAD, sport: int = 40000, dport: int = 2055) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(
    seg: bytes, *, proto: int = 17, frag: int = 0, src: str = "192.0.2.1", dst: str = "192.0.2.2"
) -> bytes:
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(seg),
            1,
            frag,
            64,
            proto,
            0,
            ipaddress.IPv4Address(src).packed,
            ipaddress.IPv4Address(dst).packed,
        )
        + seg
    )


def ipv6(seg: bytes, *, nxt: int = 17, ext: bytes = b"") -> bytes:
    return (
        struct.pack(
            "!IHBB16s16s",
            6 << 28,
            len(ext) + len(seg),
            nxt,
            64,
            ipaddress.IPv6Address("2001:db8::1").packed,
            ipaddress.IPv6Address("2001:db8::2").packed,
        )
        + ext
        + seg
    )


def eth(net: bytes, *vlans: int, ethertype: int = 0x0800) -> bytes:
    tags = b"".join(struct.pack("!HH", tpid, 100) for tpid in vlans)
    return b"\x02" * 6 + b"\x04" * 6 + tags + struct.pack("!H", ethertype) + net


def classic(linktype: int, frames: list[bytes], *, order: str = "<", nano: bool = False) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        frac = 500_000_000 if nano else 500_000
        out += struct.pack(order + "IIII", 1_700_000_000 + i, frac, len(f), len(f)) + f
    return out


def block(btype: int, body: bytes, order: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def pcapng(
    linktype: int,
    frames: list[bytes],
    *,
    order: str = "<",
    tsresol: int | None = None,
    simple: bool = False,
) -> bytes:
    shb = block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)
    opts = b""
    if tsresol is not None:
        opts = struct.pack(order + "HH", 9, 1) + bytes([tsresol]) + b"\0" * 3
        opts += struct.pack(order + "HH", 0, 0)
    out = shb + block(1, struct.pack(order + "HHI", linktype, 0, 65535) + opts, order)
    out += block(0x0BAD, b"custom", order)  # unknown block: skipped
    tick = 1e-6 if tsresol is None else 10.0**-tsresol
    for i, f in enumerate(frames):
        if simple:
            out += block(3, struct.pack(order + "I", len(f)) + f, order)
        else:
            ts = round((1_700_000_000 + i + 0.5) / tick)
            out += block(
                6,
                struct.pack(order + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f,
                order,
            )
    return out


def read(data: bytes) -> tuple[list[UdpDatagram], Counter[str]]:
    c: Counter[str] = Counter()
    return list(read_udp(io.BytesIO(data), c)), c


SLL = struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, 0x0800)
SLL2 = struct.pack("!HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"\x02" * 8)

LINKS = [
    ("ethernet", 1, eth(ipv4(udp()))),
    ("802.1Q", 1, eth(ipv4(udp()), 0x8100)),
    ("QinQ", 1, eth(ipv4(udp()), 0x88A8, 0x8100)),
    ("ethernet-ipv6", 1, eth(ipv6(udp()), ethertype=0x86DD)),
    ("sll", 113, SLL + ipv4(udp())),
    ("sll2", 276, SLL2 + ipv4(udp())),
    ("raw", 101, ipv4(udp())),
    ("raw-12", 12, ipv6(udp())),
    ("ipv4", 228, ipv4(udp())),
    ("ipv6", 229, ipv6(udp())),
    ("ipv6-hop-by-hop", 229, ipv6(udp(), nxt=0, ext=bytes([17, 0]) + b"\0" * 6)),
    ("null", 0, struct.pack("<I", 2) + ipv4(udp())),
    ("loop", 108, struct.pack(">I", 24) + ipv6(udp())),
]


@pytest.mark.parametrize(
    ("linktype", "frame"), [(lt, f) for _, lt, f in LINKS], ids=[n for n, _, _ in LINKS]
)
@pytest.mark.parametrize("container", ["pcap-le", "pcap-be-ns", "pcapng-le", "pcapng-be-ns"])
def test_link_types_and_containers(linktype: int, frame: bytes, container: str) -> None:
    if container == "pcap-le":
        data = classic(linktype, [frame])
    elif container == "pcap-be-ns":
        data = classic(linktype, [frame], order=">", nano=True)
    elif container == "pcapng-le":
        data = pcapng(linktype, [frame])
    else:
        data = pcapng(linktype, [frame], order=">", tsresol=9)
    (dg,), counters = read(data)
    assert dg.payload == PAYLOAD and (dg.sport, dg.dport) == (40000, 2055)
    assert dg.src in ("192.0.2.1", "2001:db8::1")
    assert dg.ts == pytest.approx(1_700_000_000.5, abs=1e-6)
    assert counters["udp"] == 1


def test_simple_packet_block() -> None:
    (dg,), _ = read(pcapng(1, [eth(ipv4(udp()))], simple=True))
    assert dg.payload == PAYLOAD


@pytest.mark.parametrize(
    ("frame", "counter"),
    [
        (eth(ipv4(udp(), frag=0x2000)), "skipped.fragment"),  # more fragments
        (eth(ipv4(udp(), frag=0x0010)), "skipped.fragment"),  # non-zero offset
        (
            eth(ipv6(udp(), nxt=44, ext=bytes([17, 0, 0, 1]) + b"\0" * 4), ethertype=0x86DD),
            "skipped.fragment",
        ),
        (eth(ipv4(b"\0" * 20, proto=6)), "skipped.not_udp"),
        (eth(b"\0" * 20, ethertype=0x0806), "skipped.not_ip"),
        (eth(ipv4(udp())[:-3]), "malformed.truncated_ip"),
        (eth(ipv4(udp())[:15]), "malformed.ipv4"),
        (eth(ipv4(struct.pack("!HHHH", 1, 2, 200, 0) + b"x")), "malformed.udp"),
        (b"\x02" * 10, "malformed.link"),
        (eth(ipv4(udp()), 0x8100)[:15], "malformed.link"),
    ],
)
def test_bad_frames_are_counted(frame: bytes, counter: str) -> None:
    good = eth(ipv4(udp()))
    dgs, counters = read(classic(1, [frame, good]))
    assert counters[counter] == 1
    assert len(dgs) == 1  # the good frame after it is still read


def test_truncated_and_garbage_files() -> None:
    data = classic(1, [eth(ipv4(udp()))] * 3)
    dgs, counters = read(data[:-5])
    assert len(dgs) == 2 and counters["malformed.truncated_record"] == 1
    dgs, counters = read(b"not a capture at all")
    assert dgs == [] and counters["malformed.file_header"] == 1
    dgs, counters = read(pcapng(1, [eth(ipv4(udp()))] * 2)[:-7])
    assert len(dgs) == 1 and counters["malformed.truncated_block"] == 1
    _, counters = read(classic(147, [b"\0" * 30]))
    assert counters["skipped.linktype"] == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["pcap", "pcapng"]))
def test_random_bytes_never_raise(blob: bytes, kind: str) -> None:
    head = classic(1, [])[:24] if kind == "pcap" else pcapng(1, [])
    read(head + blob)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_frames_never_raise(data: st.DataObject) -> None:
    frame = bytearray(data.draw(st.sampled_from([f for _, _, f in LINKS])))
    for _ in range(data.draw(st.integers(1, 6))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    read(classic(1, [bytes(frame[:cut])]))
    read(pcapng(229, [bytes(frame)]))


@pytest.mark.parametrize("path", sorted(DATA.glob("*.pcap")), ids=lambda p: p.name[:20])
def test_fixture_captures_are_all_udp(path: Path) -> None:
    c: Counter[str] = Counter()
    dgs = list(read_udp(path, c))
    assert dgs and c["udp"] == c["frames"] == len(dgs)
