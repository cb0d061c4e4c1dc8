"""UDP ends for the network-namespace tests, run inside a namespace with ``ip netns exec``.

    listen ADDR PORT [--echo]          print "src_ip src_port" per datagram (and echo it back)
    send SRC SPORT DST DPORT COUNT     send COUNT datagrams from SRC:SPORT
    ask SRC DST DPORT                  send one query, exit 0 if an answer comes within 2 s
    tcp-connect SRC DST DPORT          exit 0 if a TCP connection opens within 2 s
    tcp-listen ADDR PORT               accept connections (and close them)

Standard library only: it runs under whatever Python runs the tests.
"""

from __future__ import annotations

import socket
import sys
import time


def _udp(src: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, port))
    return s


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "listen":
        s = _udp(argv[1], int(argv[2]))
        echo = "--echo" in argv
        print("ready", flush=True)
        while True:
            data, peer = s.recvfrom(65535)
            print(f"{peer[0]} {peer[1]}", flush=True)
            if echo:
                s.sendto(b"answer:" + data, peer)
    if cmd == "send":
        s = _udp(argv[1], int(argv[2]))
        for i in range(int(argv[5])):
            s.sendto(f"probe {i}".encode(), (argv[3], int(argv[4])))
            time.sleep(0.01)
        return 0
    if cmd == "ask":
        s = _udp(argv[1], 0)
        s.settimeout(2.0)
        s.sendto(b"query", (argv[2], int(argv[3])))
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError:
            return 1
        return 0 if data.startswith(b"answer:") else 1
    if cmd == "tcp-listen":
        fam = socket.AF_INET6 if ":" in argv[1] else socket.AF_INET
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((argv[1], int(argv[2])))
        srv.listen(16)
        print("ready", flush=True)
        while True:
            conn, _ = srv.accept()
            conn.close()
    if cmd == "tcp-connect":
        fam = socket.AF_INET6 if ":" in argv[1] else socket.AF_INET
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.bind((argv[1], 0))
        c.settimeout(2.0)
        try:
            c.connect((argv[2], int(argv[3])))
        except OSError:
            return 1
        return 0
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
