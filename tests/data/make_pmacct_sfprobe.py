"""Regenerate pmacct_sfprobe_marked.{pcap,bin} (see README.md in this folder).

Usage (needs Debian's pmacct; run as a user that may bind UDP on 127.0.0.1):
    python tests/data/make_pmacct_sfprobe.py ../shared/data/captures/test7-malicious.pcap tests/data

1. Copies the first 400 packets of the source pcap, overwriting the start of every TCP/UDP payload
   of at least len(MARKER) bytes (within the first 128 bytes of the frame, so it lands in sFlow's
   sampled header) with MARKER. FILLERS small UDP packets 198.51.100.1:9 → 198.51.100.2:9 are
   appended, because pmacctd does not export the last few packets of a savefile (still in its
   core-to-plugin buffer at end of file); tests ignore those addresses.
2. Runs ``pmacctd`` with the ``sfprobe`` plugin, sampling rate 1, on that pcap, exporting to a UDP
   socket on 127.0.0.1, and writes every received datagram as [u16 big-endian length][payload].
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

MARKER = b"MAMORI-PAYLOAD-MARKER-7f3a"
PACKETS = 400
FILLERS = 32
FILLER_SRC, FILLER_DST = "198.51.100.1", "198.51.100.2"
CONFIG = """daemonize: false
pcap_savefile: {pcap}
plugins: sfprobe
sfprobe_receiver: 127.0.0.1:{port}
sfprobe_agentip: 192.0.2.1
sampling_rate: 1
"""


def plant(frame: bytes) -> bytes:
    f = bytearray(frame)
    et = f[12] << 8 | f[13]
    if et == 0x0800:
        ihl = (f[14] & 15) * 4
        proto, l4 = f[23], 14 + ihl
        total = 14 + (f[16] << 8 | f[17])
    elif et == 0x86DD:
        proto, l4 = f[20], 54
        total = 54 + (f[18] << 8 | f[19])
    else:
        return frame
    if proto == 6:
        start = l4 + (f[l4 + 12] >> 4) * 4
    elif proto == 17:
        start = l4 + 8
    else:
        return frame
    end = min(total, len(f))
    if end - start >= len(MARKER) and start + len(MARKER) <= 128:
        f[start : start + len(MARKER)] = MARKER
    return bytes(f)


def filler() -> bytes:
    ip = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        28,
        0,
        0,
        64,
        17,
        0,
        socket.inet_aton(FILLER_SRC),
        socket.inet_aton(FILLER_DST),
    )
    return (
        b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
        + ip
        + struct.pack(">HHHH", 9, 9, 8, 0)
    )


def main() -> None:
    source, outdir = Path(sys.argv[1]), Path(sys.argv[2])
    raw = source.read_bytes()
    out = bytearray(raw[:24])
    o, n, ts = 24, 0, 0
    while o < len(raw) and n < PACKETS:
        ts, _, incl = struct.unpack_from("<III", raw, o)
        frame = raw[o + 16 : o + 16 + incl]
        out += raw[o : o + 16] + plant(frame)
        o += 16 + incl
        n += 1
    for i in range(FILLERS):
        out += struct.pack("<IIII", ts + 1, i * 1000, 42, 42) + filler()
    pcap = outdir / "pmacct_sfprobe_marked.pcap"
    pcap.write_bytes(bytes(out))

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    got: list[bytes] = []

    def receive() -> None:
        while True:
            try:
                got.append(sock.recv(65535))
            except TimeoutError:
                return

    t = threading.Thread(target=receive)
    t.start()
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:
        conf.write(CONFIG.format(pcap=pcap.resolve(), port=sock.getsockname()[1]))
        conf.flush()
        subprocess.run(["pmacctd", "-f", conf.name], check=False, timeout=60, capture_output=True)
    t.join()
    (outdir / "pmacct_sfprobe_marked.bin").write_bytes(
        b"".join(struct.pack(">H", len(d)) + d for d in got)
    )
    print(f"{n + FILLERS} packets, {len(got)} datagrams")


if __name__ == "__main__":
    main()
