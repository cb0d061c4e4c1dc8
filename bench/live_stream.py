"""NetFlow v9 and IPFIX streams dated *now*, for runs that keep the collector's clock checks on.

softflowd's fixtures carry the capture's record times (2023) under the export times of the day
they were made; a collector only takes them with its clock checks widened for a replay, and then
garbage with random times is taken too (each such record opens an hour partition of its own).
An operator's collector runs with the checks on, so the soak does: these streams are restamped
before each segment, vectorised (NumPy views into the frames file), so that every record is a
second or two old when it is sent.

Frames file layout: repeated [2-byte big-endian length][datagram] (bench/tools/udpblast.c).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

RECORDS_PER_DATAGRAM = 30
TEMPLATE_ID = 256

# (type, length): src, dst, src port, dst port, proto, TCP flags, ToS, input, output, packets, bytes
_COMMON = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (5, 1),
    (10, 2),
    (14, 2),
    (2, 4),
    (1, 4),
]
_V9 = [*_COMMON, (22, 4), (21, 4)]  # first / last switched: ms of uptime
_IPFIX = [*_COMMON, (152, 8), (153, 8)]  # flowStart/EndMilliseconds: ms since the epoch
UPTIME_MS = 100_000_000


def _dtype(fields: list[tuple[int, int]]) -> np.dtype:
    kinds = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}
    return np.dtype([(f"f{t}", kinds[n]) for t, n in fields])


@dataclass
class LiveStream:
    version: int
    frames: bytearray
    records: int
    datagrams: int
    _time_offsets: np.ndarray  # header export-time (unix seconds) of each datagram
    _start_offsets: np.ndarray  # IPFIX: flowStartMilliseconds of each record
    _end_offsets: np.ndarray

    def restamp(self, now: float | None = None) -> None:
        """Date every datagram's export now and (IPFIX) every record a second or two before."""
        now = time.time() if now is None else now
        buf = np.frombuffer(self.frames, dtype=np.uint8)
        secs = np.array([int(now)], dtype=">u4").view(np.uint8)
        for k in range(4):
            buf[self._time_offsets + k] = secs[k]
        if self.version == 10:
            for offsets, ms in ((self._start_offsets, now - 2.0), (self._end_offsets, now - 1.0)):
                b = np.array([int(ms * 1000)], dtype=">u8").view(np.uint8)
                for k in range(8):
                    buf[offsets + k] = b[k]


def build(version: int, datagrams: int = 2000, template_every: int = 20) -> LiveStream:
    """``datagrams`` export packets of 30 records each from one exporter; the template goes in
    every ``template_every``-th packet (and the first)."""
    fields = _V9 if version == 9 else _IPFIX
    dt = _dtype(fields)
    n = datagrams * RECORDS_PER_DATAGRAM
    i = np.arange(n, dtype=np.uint64)
    recs = np.zeros(n, dtype=dt)
    recs["f8"] = (10 << 24) + (i % 60000) + 1
    recs["f12"] = (203 << 24) + (113 << 8) + (i * 7919 % 65000)
    recs["f7"] = 1024 + i % 60000
    recs["f11"] = np.where(i % 3 == 0, 443, np.where(i % 3 == 1, 53, 80))
    recs["f4"] = np.where(i % 3 == 1, 17, 6)
    recs["f10"], recs["f14"] = 1, 2
    recs["f2"] = 1 + i % 20
    recs["f1"] = 60 + i % 1400
    if version == 9:
        recs["f22"], recs["f21"] = UPTIME_MS - 2000, UPTIME_MS - 1000
    tmpl_body = (
        np.array([TEMPLATE_ID, len(fields)], dtype=">u2").tobytes()
        + np.array(fields, dtype=">u2").tobytes()
    )
    frames = bytearray()
    time_offsets, start_offsets, end_offsets = [], [], []
    rec_size = dt.itemsize
    start_field = sum(n for t, n in fields[:-2])
    for d in range(datagrams):
        body = recs[d * RECORDS_PER_DATAGRAM : (d + 1) * RECORDS_PER_DATAGRAM].tobytes()
        sets = b""
        if d % template_every == 0:
            set_id = 0 if version == 9 else 2
            sets += np.array([set_id, 4 + len(tmpl_body)], dtype=">u2").tobytes() + tmpl_body
        pad = b"\0" * (-(len(body) + 4) % 4)
        data_set = np.array([TEMPLATE_ID, 4 + len(body) + len(pad)], dtype=">u2").tobytes()
        sets += data_set + body + pad
        if version == 9:
            count = 2 if d % template_every == 0 else 1
            head = (
                np.array([9, count], dtype=">u2").tobytes()
                + np.array([UPTIME_MS, 0, d, 1], dtype=">u4").tobytes()
            )
            time_at = 8
        else:
            head = (
                np.array([10, 16 + len(sets)], dtype=">u2").tobytes()
                + np.array([0, d, 1], dtype=">u4").tobytes()
            )
            time_at = 4
        dg = head + sets
        base = len(frames) + 2
        frames += len(dg).to_bytes(2, "big") + dg
        time_offsets.append(base + time_at)
        if version == 10:
            first_rec = base + len(dg) - len(pad) - len(body)
            for r in range(RECORDS_PER_DATAGRAM):
                start_offsets.append(first_rec + r * rec_size + start_field)
                end_offsets.append(first_rec + r * rec_size + start_field + 8)
    stream = LiveStream(
        version,
        frames,
        n,
        datagrams,
        np.array(time_offsets, dtype=np.int64),
        np.array(start_offsets, dtype=np.int64),
        np.array(end_offsets, dtype=np.int64),
    )
    stream.restamp()
    return stream
