"""The receive path: a child process that only reads UDP sockets.

Reading sockets from a thread of the decoding process loses packets at high rates: every
``recvfrom`` gives the interpreter lock away and waits up to a switch interval to get it back. A
child process has no such contention. It receives straight into a large buffer and sends the
buffer through a pipe when it holds ``chunk_bytes`` or is ``chunk_s`` old.

A chunk is laid out for NumPy, so that the decoding side makes no Python object per datagram::

    header  !dIIII receive time of the first datagram, datagram count n, exporter-list bytes,
                   payload bytes, datagrams the receiver had to drop since the last chunk
    exporters      JSON list of exporter addresses (index = exporter id)
    lengths        n × uint32, payload lengths
    exporter ids   n × uint16
    payloads       concatenated
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import json
import multiprocessing
import multiprocessing.connection
import os
import queue
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mamori.ingest.netflow.decoder import PackedDatagrams

__all__ = ["Chunk", "Receiver", "join_chunks"]

_HEAD = struct.Struct("!dIIII")
_QUEUE_CHUNKS = 256  # chunks waiting for the decoder before the receiver drops (64 MiB)
_END = b""  # sent once the child has drained its sockets after a stop request
_MAX_DATAGRAM = 65535
_F_SETPIPE_SZ = 1031  # Linux


def _pipe_max() -> int:
    try:
        return int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return 1 << 20


class Chunk(NamedTuple):
    data: bytes  # payloads concatenated
    lengths: np.ndarray  # int64
    exporter: np.ndarray  # int32 index into exporters
    exporters: list[str]
    received: float  # receive time of the first datagram
    dropped: int = 0  # datagrams the receiver dropped before this chunk (decoder far behind)


def join_chunks(chunks: Sequence[Chunk]) -> PackedDatagrams:
    """Chunks from one receiver as one decoder batch. Exporter ids are stable within a receiver
    and its exporter list only grows, so the last chunk's list names them all."""
    if len(chunks) == 1:
        c = chunks[0]
        lengths, ids, data = c.lengths, c.exporter, c.data
        received = np.full(len(lengths), c.received)
    else:
        lengths = np.concatenate([c.lengths for c in chunks])
        ids = np.concatenate([c.exporter for c in chunks])
        data = b"".join(c.data for c in chunks)
        received = np.repeat([c.received for c in chunks], [len(c.lengths) for c in chunks])
    offsets = np.cumsum(lengths) - lengths
    return PackedDatagrams(
        data, offsets, lengths, ids, chunks[-1].exporters, received.astype(np.float64)
    )


class _Packer:
    """Builds chunks (see the module docstring) and sends them through the pipe."""

    def __init__(self, conn: multiprocessing.connection.Connection, chunk_bytes: int) -> None:
        self.conn = conn
        self.chunk_bytes = chunk_bytes
        # room for a full chunk plus one recvmmsg call's worth of the largest datagrams
        self.buf = bytearray(chunk_bytes + _MultiReader.VLEN * _MAX_DATAGRAM)
        self.view = memoryview(self.buf)
        self.pos = 0
        self.lengths = array("I")
        self.ids = array("H")
        self.exporter_ids: dict[object, int] = {}
        self.exporters: list[str] = []
        self.exporters_json = b"[]"
        self.first = 0.0
        self.dropped = 0
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._sender, name="mamori-receiver-send")
        self.thread.start()

    def exporter_id(self, key: object, text: str) -> int | None:
        eid = self.exporter_ids.get(key)
        if eid is None:
            if len(self.exporters) >= 65535:  # more exporters than ids: refuse, never mix up
                return None
            eid = self.exporter_ids[key] = len(self.exporters)
            self.exporters.append(text)
            self.exporters_json = json.dumps(self.exporters).encode()
        return eid

    def added(self, n: int, eid: int) -> None:
        """Record a datagram of ``n`` bytes already copied to ``buf[pos:]``."""
        if not self.lengths:
            self.first = time.time()
        self.lengths.append(n)
        self.ids.append(eid)
        self.pos += n
        if self.pos >= self.chunk_bytes:
            self.send()

    def added_many(self, lengths: np.ndarray, ids: np.ndarray, pos: int) -> None:
        """Record datagrams already copied to ``buf`` up to ``pos``."""
        if not len(lengths):
            return
        if not self.lengths:
            self.first = time.time()
        self.lengths.frombytes(lengths.astype(np.uint32).tobytes())
        self.ids.frombytes(ids.astype(np.uint16).tobytes())
        self.pos = pos
        if self.pos >= self.chunk_bytes:
            self.send()

    def send(self) -> None:
        """Queue the chunk for the sender thread; the receive loop never waits on the pipe."""
        if not self.lengths:
            return
        if self.queue.qsize() >= _QUEUE_CHUNKS:
            self.dropped += len(self.lengths)
        else:
            head = _HEAD.pack(
                self.first, len(self.lengths), len(self.exporters_json), self.pos, self.dropped
            )
            self.dropped = 0
            self.queue.put(
                b"".join(
                    (
                        head,
                        self.exporters_json,
                        self.lengths.tobytes(),
                        self.ids.tobytes(),
                        self.view[: self.pos],
                    )
                )
            )
        self.pos = 0
        self.lengths = array("I")
        self.ids = array("H")

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _sender(self) -> None:
        while (item := self.queue.get()) is not None:
            self.conn.send_bytes(item)


class _SingleReader:
    """Portable: one recvfrom_into per datagram, straight into the chunk buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def drain(self, packer: _Packer, limit: int) -> int:
        recv = self.sock.recvfrom_into
        for count in range(limit):
            try:
                n, addr = recv(packer.view[packer.pos :], _MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return count
            eid = packer.exporter_id(addr[0], addr[0])
            if eid is not None:
                packer.added(n, eid)
        return limit


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


class _MultiReader:
    """Linux recvmmsg(2) through ctypes: up to ``VLEN`` datagrams per system call, which cuts
    the per-datagram cost of the receive loop by about three."""

    VLEN = 128
    SLOT = 65536
    NAME = 28  # sizeof(struct sockaddr_in6)
    MSG_DONTWAIT = 0x40

    def __init__(self, sock: socket.socket) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._recvmmsg = libc.recvmmsg
        self._recvmmsg.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(_MMsgHdr),
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        self._recvmmsg.restype = ctypes.c_int
        self.fd = sock.fileno()
        vlen, slot, name = self.VLEN, self.SLOT, self.NAME
        self.scratch = (ctypes.c_char * (vlen * slot))()
        self.names = (ctypes.c_char * (vlen * name))()
        self.iov = (_IOVec * vlen)()
        self.msgs = (_MMsgHdr * vlen)()
        base_s, base_n = ctypes.addressof(self.scratch), ctypes.addressof(self.names)
        for i in range(vlen):
            self.iov[i].iov_base = base_s + i * slot
            self.iov[i].iov_len = slot
            hdr = self.msgs[i].msg_hdr
            hdr.msg_name = base_n + i * name
            hdr.msg_namelen = name
            hdr.msg_iov = ctypes.pointer(self.iov[i])
            hdr.msg_iovlen = 1
        fields = np.dtype(
            {
                "names": ["namelen", "len"],
                "formats": ["u4", "u4"],
                "offsets": [_MsgHdr.msg_namelen.offset, _MMsgHdr.msg_len.offset],
                "itemsize": ctypes.sizeof(_MMsgHdr),
            }
        )
        self.table = np.frombuffer(self.msgs, dtype=fields)  # type: ignore[call-overload]
        self.scratch_view = memoryview(self.scratch).cast("B")

    def drain(self, packer: _Packer, limit: int) -> int:
        done = 0
        slot, name = self.SLOT, self.NAME
        names_np = np.frombuffer(memoryview(self.names).cast("B"), np.uint8).reshape(
            self.VLEN, name
        )
        scratch = self.scratch_view
        while done < limit:
            self.table["namelen"] = name
            m = self._recvmmsg(self.fd, self.msgs, self.VLEN, self.MSG_DONTWAIT, None)
            if m <= 0:
                err = ctypes.get_errno()
                if m == 0 or err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    return done
                raise OSError(err, os.strerror(err))
            lens = self.table["len"][:m].astype(np.int64)
            ids = self._exporter_ids(packer, names_np[:m])
            keep = ids >= 0
            if not keep.all():  # exporters beyond the id space: dropped, never mixed up
                packer.dropped += int((~keep).sum())
            buf, pos = packer.buf, packer.pos
            lens_list = lens.tolist()
            for i in range(m) if keep.all() else np.flatnonzero(keep).tolist():
                n = lens_list[i]
                buf[pos : pos + n] = scratch[i * slot : i * slot + n]
                pos += n
            packer.added_many(lens[keep], ids[keep], pos)
            done += int(m)
            if m < self.VLEN:
                break
        return done

    @staticmethod
    def _exporter_ids(packer: _Packer, names: np.ndarray) -> np.ndarray:
        """Exporter id per received datagram, from the raw socket addresses (port ignored)."""
        family = np.ascontiguousarray(names[:, :2]).view(np.uint16).ravel()  # sa_family, native
        if (family == socket.AF_INET).all():
            # The common case: IPv4 exporters, often one router per burst.
            addr = np.ascontiguousarray(names[:, 4:8]).view(np.uint32).ravel()
            if (addr == addr[0]).all():
                return np.full(len(addr), _v4_id(packer, int(addr[0])), np.int64)
            uniq, inverse = np.unique(addr, return_inverse=True)
            eids = np.array([_v4_id(packer, int(u)) for u in uniq.tolist()], np.int64)
            out: np.ndarray = eids[inverse.ravel()]
            return out
        key = np.zeros((len(names), 17), np.uint8)
        v4 = family == socket.AF_INET
        key[~v4, 0] = 1
        key[v4, 1:5] = names[v4, 4:8]
        key[~v4, 1:17] = names[~v4, 8:24]
        uniq_v, inverse = np.unique(key.view("V17").ravel(), return_inverse=True)
        eids = np.empty(len(uniq_v), np.int64)
        for j, u in enumerate(uniq_v.tolist()):
            raw = bytes(u)
            family_ = socket.AF_INET6 if raw[0] else socket.AF_INET
            text = socket.inet_ntop(family_, raw[1:17] if raw[0] else raw[1:5])
            eid = packer.exporter_id(raw[:17] if raw[0] else raw[:5], text)
            eids[j] = -1 if eid is None else eid
        out = eids[inverse.ravel()]
        return out


def _v4_id(packer: _Packer, native: int) -> int:
    """Exporter id of an IPv4 address given as the native-order integer of its 4 raw bytes."""
    raw = b"\x00" + native.to_bytes(4, sys.byteorder)
    eid = packer.exporter_ids.get(raw)
    if eid is None:
        eid = packer.exporter_id(raw, socket.inet_ntop(socket.AF_INET, raw[1:]))
    return -1 if eid is None else eid


def _reader(sock: socket.socket) -> _SingleReader | _MultiReader:
    if sys.platform.startswith("linux"):
        try:
            return _MultiReader(sock)
        except (OSError, AttributeError):  # no recvmmsg in this libc
            pass
    return _SingleReader(sock)


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
    readers = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        readers[s.fileno()] = _reader(s)
    packer = _Packer(conn, chunk_bytes)
    while True:
        if stop.is_set():
            for r in readers.values():
                r.drain(packer, 1 << 30)
            packer.send()
            packer.close()
            conn.send_bytes(_END)
            return
        got = 0
        for key, _ in sel.select(timeout=chunk_s):
            got += readers[key.fd].drain(packer, 4096)
        if 0 < got < _MultiReader.VLEN:
            # A trickle: let datagrams gather in the socket buffer (16 MiB, far more than two
            # milliseconds hold) so the next call takes many at once instead of waking per packet.
            time.sleep(0.002)
        if packer.lengths and time.time() - packer.first >= chunk_s:
            packer.send()
        if os.getppid() != parent:  # the collector died (kill -9): nothing to hand over to
            os._exit(0)


class Receiver:
    def __init__(
        self, socks: Sequence[socket.socket], chunk_bytes: int = 256 << 10, chunk_s: float = 0.02
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
        # A pipe big enough for a few chunks: the child then rarely waits for the decoder.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._conn.fileno(), _F_SETPIPE_SZ, _pipe_max())
        self._proc.start()
        self._child_conn.close()
        # However this process ends: multiprocessing's own exit hook (registered earlier, so run
        # later) would only SIGTERM the child, which ignores it, and then wait for it forever.
        atexit.register(self.kill)

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

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def kill(self, timeout: float = 2.0) -> bool:
        """Stop the child: asked first (``timeout`` seconds to drain), then SIGKILL. Returns
        whether it had to be killed. Bounded in time whatever state the child is in (a child
        whose parent stopped reading waits on the pipe for ever)."""
        killed = False
        if self._proc.pid is not None and self._proc.is_alive():
            self._stop.set()
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5.0)
                killed = True
        with contextlib.suppress(OSError):
            self._conn.close()
        atexit.unregister(self.kill)
        return killed


def _unpack(raw: bytes) -> Chunk:
    when, n, exp_len, data_len, dropped = _HEAD.unpack_from(raw, 0)
    pos = _HEAD.size
    exporters = json.loads(raw[pos : pos + exp_len])
    pos += exp_len
    lengths = np.frombuffer(raw, dtype="<u4" if _NATIVE_LITTLE else ">u4", count=n, offset=pos)
    pos += 4 * n
    ids = np.frombuffer(raw, dtype="<u2" if _NATIVE_LITTLE else ">u2", count=n, offset=pos)
    pos += 2 * n
    return Chunk(
        raw[pos : pos + data_len],
        lengths.astype(np.int64),
        ids.astype(np.int32),
        exporters,
        when,
        dropped,
    )


_NATIVE_LITTLE = sys.byteorder == "little"  # array("I") writes native byte order
