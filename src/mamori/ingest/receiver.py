"""The receive path: a child process that only reads UDP sockets.

Reading sockets from a thread of the decoding process loses packets at high rates: every
``recvfrom`` gives the interpreter lock away and waits up to a switch interval to get it back. A
child process has no such contention. It receives straight into a large buffer and sends the
buffer through a pipe when it holds ``chunk_bytes`` or is ``chunk_s`` old.

A chunk is laid out for NumPy, so that the decoding side makes no Python object per datagram::

    header  !dIII  receive time of the first datagram, datagram count n, exporter-list bytes,
                   payload bytes
    exporters      JSON list of exporter addresses (index = exporter id)
    lengths        n × uint32, payload lengths
    exporter ids   n × uint16
    payloads       concatenated
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import selectors
import signal
import socket
import struct
import sys
import time
from array import array
from collections.abc import Sequence
from multiprocessing.synchronize import Event
from typing import NamedTuple

import numpy as np

from mamori.ingest.netflow.decoder import Datagram

__all__ = ["Chunk", "Receiver"]

_HEAD = struct.Struct("!dIII")
_END = b""  # sent once the child has drained its sockets after a stop request
_MAX_DATAGRAM = 65535


class Chunk(NamedTuple):
    data: bytes  # payloads concatenated
    lengths: np.ndarray  # int64
    exporter: np.ndarray  # int32 index into exporters
    exporters: list[str]
    received: float  # receive time of the first datagram

    @property
    def offsets(self) -> np.ndarray:
        starts: np.ndarray = np.cumsum(self.lengths) - self.lengths
        return starts

    def datagrams(self) -> list[Datagram]:
        ends = np.cumsum(self.lengths).tolist()
        starts = [0, *ends[:-1]]
        names = [self.exporters[i] for i in self.exporter.tolist()]
        data, when = self.data, self.received
        return [Datagram(n, data[a:b], when) for n, a, b in zip(names, starts, ends, strict=True)]


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
    buf = bytearray(chunk_bytes + _MAX_DATAGRAM)
    view = memoryview(buf)
    pos = 0
    lengths = array("I")
    ids = array("H")
    exporter_ids: dict[str, int] = {}
    exporters: list[str] = []
    exporters_json = b"[]"
    first = 0.0

    def send() -> None:
        nonlocal pos, lengths, ids
        if not lengths:
            return
        head = _HEAD.pack(first, len(lengths), len(exporters_json), pos)
        conn.send_bytes(
            b"".join((head, exporters_json, lengths.tobytes(), ids.tobytes(), view[:pos]))
        )
        pos = 0
        lengths = array("I")
        ids = array("H")

    def drain(sock: socket.socket, limit: int) -> None:
        nonlocal pos, first, exporters_json
        recv = sock.recvfrom_into
        for _ in range(limit):
            try:
                n, addr = recv(view[pos:], _MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            eid = exporter_ids.get(addr[0])
            if eid is None:
                if len(exporters) >= 65535:  # more exporters than ids: refuse, never mix up
                    continue
                eid = exporter_ids[addr[0]] = len(exporters)
                exporters.append(addr[0])
                exporters_json = json.dumps(exporters).encode()
            if not lengths:
                first = time.time()
            lengths.append(n)
            ids.append(eid)
            pos += n
            if pos >= chunk_bytes:
                send()

    while True:
        if stop.is_set():
            for s in socks:
                drain(s, 1 << 30)
            send()
            conn.send_bytes(_END)
            return
        for key, _ in sel.select(timeout=chunk_s):
            drain(key.fileobj, 4096)  # type: ignore[arg-type]
        if lengths and time.time() - first >= chunk_s:
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

    def take(self, max_datagrams: int, wait_s: float) -> tuple[list[Chunk], bool]:
        """Chunks received so far (waiting up to ``wait_s`` for the first), and whether the child
        has finished."""
        out: list[Chunk] = []
        if self._finished:
            return out, True
        conn = self._conn
        if not conn.poll(wait_s):
            if not self._proc.is_alive() and not conn.poll(0):
                self._finished = True
            return out, self._finished
        count = 0
        while count < max_datagrams and conn.poll(0):
            try:
                raw = conn.recv_bytes()
            except EOFError:
                self._finished = True
                break
            if raw == _END:
                self._finished = True
                break
            chunk = _unpack(raw)
            count += len(chunk.lengths)
            out.append(chunk)
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


def _unpack(raw: bytes) -> Chunk:
    when, n, exp_len, data_len = _HEAD.unpack_from(raw, 0)
    pos = _HEAD.size
    exporters = json.loads(raw[pos : pos + exp_len])
    pos += exp_len
    lengths = np.frombuffer(raw, dtype="<u4" if _NATIVE_LITTLE else ">u4", count=n, offset=pos)
    pos += 4 * n
    ids = np.frombuffer(raw, dtype="<u2" if _NATIVE_LITTLE else ">u2", count=n, offset=pos)
    pos += 2 * n
    return Chunk(
        raw[pos : pos + data_len], lengths.astype(np.int64), ids.astype(np.int32), exporters, when
    )


_NATIVE_LITTLE = sys.byteorder == "little"  # array("I") writes native byte order
