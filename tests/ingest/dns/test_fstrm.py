"""Frame Streams reading: data frames come back as bytes, cuts are reported with their offset."""

from __future__ import annotations

import io
import struct

import pytest

from mamori.ingest.dns.fstrm import (
    START,
    STOP,
    ControlFrame,
    FrameError,
    control_frame,
    read_frames,
)

STREAM = (
    control_frame(START, (b"protobuf:dnstap.Dnstap",))
    + struct.pack(">I", 3)
    + b"abc"
    + struct.pack(">I", 2)
    + b"de"
    + control_frame(STOP)
)
FIRST_DATA = len(control_frame(START, (b"protobuf:dnstap.Dnstap",)))


class _ByteArrays(io.RawIOBase):
    """A reader that hands out bytearrays (as some file-likes do)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, n: int = -1) -> bytearray:  # type: ignore[override]
        return bytearray(self._data.read(n))


@pytest.mark.parametrize(
    ("cut", "kept", "error"),
    [
        (len(STREAM), [b"abc", b"de"], None),
        (FIRST_DATA + 2, [], f"cut inside a frame length at byte {FIRST_DATA}"),
        (FIRST_DATA + 5, [], f"cut inside a data frame at byte {FIRST_DATA}"),
        (FIRST_DATA + 12, [b"abc"], f"cut inside a data frame at byte {FIRST_DATA + 7}"),
        (len(STREAM) - 2, [b"abc", b"de"], "cut inside a control frame"),
    ],
)
def test_cuts(cut: int, kept: list[bytes], error: str | None) -> None:
    got: list[bytes | ControlFrame] = []
    if error is None:
        got.extend(read_frames(io.BytesIO(STREAM[:cut])))
    else:
        with pytest.raises(FrameError, match=error):
            for frame in read_frames(io.BytesIO(STREAM[:cut])):
                got.append(frame)
    assert [f for f in got if isinstance(f, bytes)] == kept


def test_data_frames_are_bytes_whatever_the_reader_returns() -> None:
    frames = list(read_frames(_ByteArrays(STREAM)))  # type: ignore[arg-type]
    data = [f for f in frames if not isinstance(f, ControlFrame)]
    assert data == [b"abc", b"de"] and all(type(f) is bytes for f in data)
