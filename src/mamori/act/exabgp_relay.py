"""The helper process ExaBGP runs for Mamori: a relay between a unix socket and ExaBGP's text API.

ExaBGP reads API commands from its helper's standard output and, with ``api.ack`` (the default),
answers each with ``done`` or ``error`` on the helper's standard input. Mamori's BGP back end
(:mod:`mamori.act.bgp`) connects to the socket, sends one command per line and reads the
answer; commands are relayed one at a time, so each answer belongs to its command. The relay ends
when ExaBGP closes its standard input (ExaBGP stopped).

In ``exabgp.conf`` (``mamori act bgp exabgp-config`` prints it)::

    process mamori { run /path/to/python -m mamori.act.exabgp_relay /run/mamori/exabgp.sock;
                     encoder text; }

Standard library only, so ExaBGP starts it fast and it needs neither the store nor the
configuration.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TextIO

__all__ = ["relay"]


def relay(path: str, commands_out: TextIO, acks_in: TextIO) -> None:
    if os.path.exists(path):
        os.unlink(path)  # a stale socket from an ExaBGP that died
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o660)
    srv.listen(8)
    try:
        while True:
            conn, _ = srv.accept()
            with conn, conn.makefile("rwb") as f:
                for raw in f:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line:
                        continue
                    commands_out.write(line + "\n")
                    commands_out.flush()
                    ack = acks_in.readline()
                    if not ack:  # ExaBGP is gone
                        f.write(b"error exabgp stopped\n")
                        f.flush()
                        return
                    f.write(ack.strip().encode() + b"\n")
                    f.flush()
    finally:
        srv.close()
        if os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    relay(sys.argv[1], sys.stdout, sys.stdin)
