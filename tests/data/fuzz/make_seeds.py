"""Write the binary seed corpus of the fuzz harnesses (``tests/fuzz``) from real captures.

    python tests/data/fuzz/make_seeds.py ../shared/data tests/data/fuzz

Datagram seeds are in the harnesses' input layout: repeated [2-byte big-endian length][UDP
payload] (the layout of softflowd's ``*_packets.bin``), a few datagrams each so a template and
the data that needs it travel together. See README.md beside this script for each file's origin.
"""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

from mamori.ingest.pcapfile import read_udp
from mamori.sim.dnstap import client_query, write_frame_stream


def _framed(payloads: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(p)) + p for p in payloads)


def _first_udp(pcap: Path, n: int) -> list[bytes]:
    return [dg.payload for _, dg in zip(range(n), read_udp(pcap), strict=False)]


def _first_framed(path: Path, n: int) -> list[bytes]:
    data, out, pos = path.read_bytes(), [], 0
    while pos + 2 <= len(data) and len(out) < n:
        (size,) = struct.unpack_from(">H", data, pos)
        out.append(data[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return out


def _pcapng(payloads: list[bytes]) -> bytes:
    """Little-endian pcapng, raw IPv4 link type, one enhanced packet block per UDP payload."""

    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 101, 0, 65535))
    for i, p in enumerate(payloads):
        udp = struct.pack("!HHHH", 40000, 2055, 8 + len(p), 0) + p
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                         bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])) + udp  # fmt: skip
        ts = (1_700_000_000 + i) * 1_000_000
        out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(ip), len(ip)) + ip)
    return out


def main(shared: Path, out: Path) -> None:
    ff = shared / "flow-fixtures"
    g2 = ff / "goflow2"
    project = Path(__file__).resolve().parents[1]
    seeds: dict[str, bytes] = {
        "netflow/goflow2-v9-template-data.bin": _framed(
            [
                (
                    g2 / "decoders_netflow_netflow_test__TestDecodeNetFlowV9_template_0.bin"
                ).read_bytes(),
                (g2 / "decoders_netflow_netflow_test__TestDecodeNetFlowV9_data_1.bin").read_bytes(),
            ]
        ),
        "netflow/goflow2-v5.bin": _framed(
            [
                (
                    g2 / "decoders_netflowlegacy_netflow_test__TestDecodeNetFlowV5_data_0.bin"
                ).read_bytes()
            ]
        ),
        "netflow/pmacct-100-ipfix.bin": _framed(
            _first_udp(ff / "100-IPFIXv10-CISCO__traffic-00.pcap", 4)
        ),
        "netflow/pmacct-102-v9-sampling.bin": _framed(
            _first_udp(ff / "102-NFv9-CISCO-f2rd-pretag-sampling-reload__traffic-00.pcap", 4)
        ),
        "netflow/pmacct-104-ipfix-sampling-option.bin": _framed(
            _first_udp(ff / "104-IPFIXv10-IPv6-CISCO-sampling_option__traffic-00.pcap", 4)
        ),
        "netflow/pmacct-111-v9-ipfix-mix.bin": _framed(
            _first_udp(ff / "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources__traffic-00.pcap", 6)
        ),
        "netflow/softflowd-v9.bin": _framed(_first_framed(ff / "softflowd_v9_packets.bin", 2)),
        "netflow/softflowd-v10.bin": _framed(_first_framed(ff / "softflowd_v10_packets.bin", 2)),
        "sflow/pmacct-sfprobe.bin": _framed(
            _first_framed(project / "pmacct_sfprobe_marked.bin", 2)
        ),
        "pcap/106-IPFIXv10-HUAWEI-vrf_name.pcap": (
            ff / "106-IPFIXv10-HUAWEI-vrf_name__traffic-00.pcap"
        ).read_bytes(),
        "pcap/goflow2-netflowlegacy.pcap": (
            g2 / "decoders_netflowlegacy_netflow_test.pcap"
        ).read_bytes(),
        "pcap/test12-icmp-portscan.pcap": (
            shared / "captures" / "test12-icmp-portscan.pcap"
        ).read_bytes(),
        "pcap/ipfix-raw-ip.pcapng": _pcapng(
            _first_udp(ff / "100-IPFIXv10-CISCO__traffic-00.pcap", 2)
        ),
    }
    for name in sorted(p.name for p in g2.glob("decoders_sflow_sflow_test__*_data_0.bin")):
        short = name.removeprefix("decoders_sflow_sflow_test__").removesuffix("_data_0.bin")
        seeds[f"sflow/goflow2-{short}.bin"] = _framed([(g2 / name).read_bytes()])
    for rel, data in seeds.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    queries = [
        client_query(1793577600.25 + i, socket.inet_aton(f"10.16.0.{5 + i}"), 40000 + i,
                     socket.inet_aton("10.0.0.53"), name, qtype, 7 + i, b"resolver1", b"unbound")
        for i, (name, qtype) in enumerate(
            [("www.example.jp", "A"), ("mail.example.jp", "MX"), ("x.example", "AAAA")]
        )
    ]  # fmt: skip
    (out / "dnstap").mkdir(parents=True, exist_ok=True)
    write_frame_stream(out / "dnstap" / "sim-client-queries.fstrm", queries)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
