"""Frame Streams (https://farsightsec.github.io/fstrm/), the transport of dnstap.

A stream is a sequence of frames, each a 32-bit big-endian length and that many bytes. A length of
0 escapes a *control* frame: a 32-bit length, a 32-bit type and fields (type, length, value). A
file is START … data … STOP. Over a socket the writer (the resolver) and the reader (us) first
agree on the content type: the writer sends READY, we answer ACCEPT, then START, data frames,
STOP, and we answer FINISH.

Written here rather than taken from the PyPI ``fstrm`` package: the protocol is a page long, the
package is asyncio-only and would add a dependency for ~100 lines.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = [
    "ACCEPT",
    "FINISH",
    "READY",
    "START",
    "STOP",
    "ControlFrame",
    "FrameError",
    "SocketReader",
    "control_frame",
    "read_frames",
]

ACCEPT, START, STOP, READY, FINISH = 0x01, 0x02, 0x03, 0x04, 0x05
FIELD_CONTENT_TYPE = 0x01
MAX_CONTROL = 512
MAX_FRAME = 1 << 20  # a DNS message in a dnstap envelope is far below this
_U32 = struct.Struct(">I")


class FrameError(ValueError):
    """The stream is not Frame Streams (or was cut); the message says where."""


@dataclass(frozen=True)
class ControlFrame:
    kind: int
    content_types: tuple[bytes, ...] = field(default=())


def control_frame(kind: int, content_types: tuple[bytes, ...] = ()) -> bytes:
    body = struct.pack(">I", kind) + b"".join(
        struct.pack(">II", FIELD_CONTENT_TYPE, len(ct)) + ct for ct in content_types
    )
    return struct.pack(">II", 0, len(body)) + body


def _parse_control(body: bytes) -> ControlFrame:
    if len(body) < 4:
        raise FrameError("control frame shorter than its type")
    (kind,) = struct.unpack_from(">I", body)
    types: list[bytes] = []
    pos = 4
    while pos + 8 <= len(body):
        ftype, flen = struct.unpack_from(">II", body, pos)
        pos += 8
        if pos + flen > len(body):
            raise FrameError("control field runs past its frame")
        if ftype == FIELD_CONTENT_TYPE:
            types.append(body[pos : pos + flen])
        pos += flen
    return ControlFrame(kind, tuple(types))


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if data is None:
        return b""
    return bytes(data)


def read_frames(fh: BinaryIO) -> Iterator[bytes | ControlFrame]:
    """Frames of a stream: ``bytes`` for data, :class:`ControlFrame` for control. Raises
    :class:`FrameError` (with the byte offset) on a truncated or impossible frame."""
    offset = 0
    read = fh.read  # the data-frame path runs once per message: kept to plain calls
    u32 = _U32.unpack
    while True:
        head = read(4)
        if not head:
            return
        if len(head) < 4:
            raise FrameError(f"stream cut inside a frame length at byte {offset}")
        (length,) = u32(head)
        if length == 0:
            clen_b = _read_exact(fh, 4)
            if len(clen_b) < 4:
                raise FrameError(f"stream cut inside a control frame at byte {offset}")
            (clen,) = struct.unpack(">I", clen_b)
            if clen > MAX_CONTROL:
                raise FrameError(f"control frame of {clen} bytes at byte {offset}")
            body = _read_exact(fh, clen)
            if len(body) < clen:
                raise FrameError(f"stream cut inside a control frame at byte {offset}")
            offset += 8 + clen
            yield _parse_control(body)
            continue
        if length > MAX_FRAME:
            raise FrameError(f"data frame of {length} bytes at byte {offset}: not Frame Streams")
        data = read(length)
        if data is None or len(data) < length:
            raise FrameError(f"stream cut inside a data frame at byte {offset}")
        offset += 4 + length
        yield data if type(data) is bytes else bytes(data)


class _SockFile:
    """The minimal file interface ``read_frames`` needs, over a connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)


class SocketReader:
    """The reading end of a bidirectional Frame Streams connection (handshake included)."""

    def __init__(self, sock: socket.socket, content_type: bytes) -> None:
        self.sock = sock
        self.content_type = content_type

    def frames(self) -> Iterator[bytes]:
        """Data frames until the writer stops (then FINISH is sent) or disconnects."""
        started = False
        for frame in read_frames(_SockFile(self.sock)):  # type: ignore[arg-type]
            if isinstance(frame, bytes):
                if started:
                    yield frame
                continue
            if frame.kind == READY:
                if frame.content_types and self.content_type not in frame.content_types:
                    raise FrameError(
                        f"writer offers {frame.content_types!r}, not {self.content_type!r}"
                    )
                self.sock.sendall(control_frame(ACCEPT, (self.content_type,)))
            elif frame.kind == START:
                started = True
            elif frame.kind == STOP:
                self.sock.sendall(control_frame(FINISH))
                return
