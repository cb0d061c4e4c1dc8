"""The receive path: a child process that only reads UDP sockets.

Reading sockets from a thread of the decoding process loses packets at high rates: every
``recvfrom`` gives the interpreter lock away and waits up to a switch interval to get it back. A
child process has no such contention. It packs datagrams into chunks and sends each chunk through
a pipe when it reaches ``chunk_bytes`` or is ``chunk_s`` old.

Chunk layout: ``f64`` receive time of the first datagram, then per datagram
``u8 address length, u16 payload length, address (ASCII), payload``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Event

from mamori.ingest.netflow.decoder import Datagram

__all__ = ["Receiver"]

_HEAD = struct.Struct("!d")
_REC = struct.Struct("!BH")
_END = b""  # sent once the child has drained its sockets after a stop request


def _receive_loop(
    socks: Sequence[socket.socket],
    conn: multiprocessing.connection.Connection,
    stop: Event,
    chunk_bytes: int,
    chunk_s: float,
) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when the child stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    buf = bytearray()
    first = 0.0
    pack = _REC.pack
    addr_cache: dict[str, bytes] = {}

    def send() -> None:
        nonlocal buf
        if buf:
            conn.send_bytes(_HEAD.pack(first) + buf)
            buf = bytearray()

    def drain(sock: socket.socket, limit: int) -> None:
        nonlocal first
        recv = sock.recvfrom
        for _ in range(limit):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            host = addr_cache.get(addr[0])
            if host is None:
                host = addr_cache.setdefault(addr[0], addr[0].encode("ascii"))
            if not buf:
                first = time.time()
            buf.extend(pack(len(host), len(data)))
            buf.extend(host)
            buf.extend(data)
            if len(buf) >= chunk_bytes:
                send()

    while True:
        if stop.is_set():
            for s in socks:
                drain(s, 1 << 30)
            send()
            conn.send_bytes(_END)
            return
        for key, _ in sel.select(timeout=chunk_s):
            drain(key.fileobj, 1024)  # type: ignore[arg-type]
        if buf and time.time() - first >= chunk_s:
            send()
        if os.getppid() != parent:  # the collector died (kill -9): nothing to hand over to
            return


class Receiver:
    def __init__(
        self, socks: Sequence[socket.socket], chunk_bytes: int = 1 << 20, chunk_s: float = 0.02
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self._stop = ctx.Event()
        self._proc = ctx.Process(
            target=_receive_loop,
            args=(list(socks), child_conn, self._stop, chunk_bytes, chunk_s),
            name="mamori-receiver",
            daemon=True,
        )
        self._child_conn = child_conn
        self._finished = False

    def start(self) -> None:
        self._proc.start()
        self._child_conn.close()

    def request_stop(self) -> None:
        self._stop.set()

    def take(self, max_datagrams: int, wait_s: float) -> tuple[list[Datagram], bool]:
        """Datagrams received so far (at least one chunk's worth if any arrived within
        ``wait_s``), and whether the child has finished."""
        out: list[Datagram] = []
        if self._finished:
            return out, True
        conn = self._conn
        if not conn.poll(wait_s):
            if not self._proc.is_alive() and not conn.poll(0):
                self._finished = True
            return out, self._finished
        while len(out) < max_datagrams and conn.poll(0):
            try:
                chunk = conn.recv_bytes()
            except EOFError:
                self._finished = True
                break
            if chunk == _END:
                self._finished = True
                break
            _unpack(chunk, out)
        return out, self._finished

    def join(self, timeout: float = 10.0) -> None:
        self._proc.join(timeout)

    def kill(self) -> None:
        if self._proc.is_alive():
            self._stop.set()
            self._proc.join(2.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(2.0)
        with contextlib.suppress(OSError):
            self._conn.close()


def _unpack(chunk: bytes, out: list[Datagram]) -> None:
    (when,) = _HEAD.unpack_from(chunk, 0)
    view = memoryview(chunk)
    pos = _HEAD.size
    end = len(chunk)
    unpack = _REC.unpack_from
    hosts: dict[bytes, str] = {}
    append = out.append
    while pos < end:
        alen, plen = unpack(chunk, pos)
        pos += 3
        raw = bytes(view[pos : pos + alen])
        host = hosts.get(raw)
        if host is None:
            host = hosts.setdefault(raw, raw.decode("ascii"))
        pos += alen
        append(Datagram(host, bytes(view[pos : pos + plen]), when))
        pos += plen
