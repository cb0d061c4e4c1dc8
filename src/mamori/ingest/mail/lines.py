"""Log bytes to Arrow lines, and log time stamps to UTC, without a per-line Python loop.

A block of bytes becomes one Arrow string array by finding the line ends with NumPy and handing
the buffer to Arrow as it is (each value keeps its ``\\n``; the parsers' patterns ignore it). Only
a block that is not valid UTF-8 is copied, with the bad bytes replaced, so a corrupt line is
counted as malformed instead of stopping the load.

Time stamps, in the forms mail servers write:

* RFC 3164 syslog, ``Nov  2 09:00:01`` (no year, the server's local time): the year is that of a
  reference time (the file's last change, or now when following), less one for months after the
  reference month (a December line read in January);
* ISO 8601, ``2026-11-02 09:00:01`` or ``2026-11-02T09:00:01.123+09:00`` (Exim, rsyslog's
  high-precision format, Dovecot's ``log_timestamp``); local time unless a zone is given;
* TAI64N labels, ``@400000004c91b044077a9e94`` (daemontools' multilog, which Dovecot is sometimes
  run under).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["HEAD", "MONTHS", "head_times", "split_lines"]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# the time stamp at the start of a line (after an optional <PRI>); groups read by head_times
HEAD = (
    r"^(?:<\d{1,3}>)?(?:"
    r"(?P<mon>" + "|".join(MONTHS) + r") +(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)(?:\.\d+)?"
    r"|(?P<date>\d{4}-\d\d-\d\d)[T ](?P<hms2>\d\d:\d\d:\d\d)(?:[.,]\d+)?"
    r"(?: ?(?P<zone>Z|[+-]\d\d:?\d\d))?"
    r"|@40000000(?P<tai>[0-9a-f]{8})[0-9a-f]{8}"
    r")"
)
# daemontools' TAI64 labels count TAI seconds, 10 s ahead of UTC in its convention (tai64nlocal)
_TAI_OFFSET_S = 10
_HEX = np.zeros(256, dtype=np.int64)
for _i, _c in enumerate("0123456789abcdef"):
    _HEX[ord(_c)] = _i


def split_lines(data: bytes) -> pa.StringArray:
    """Every complete line of ``data`` (each ending in ``\\n``; a last line without one is left
    out — the caller keeps it for the next block)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    if ends.size == 0:
        return pa.array([], pa.string())
    offsets = np.empty(ends.size + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    size = int(offsets[-1])
    if size >= 2**31:  # a 32-bit offset array holds up to 2 GiB; blocks are far smaller
        raise ValueError("a block of a log is larger than 2 GiB")
    arr = pa.StringArray.from_buffers(
        int(ends.size),
        pa.py_buffer(offsets.astype(np.int32).tobytes()),
        pa.py_buffer(data[:size]),
    )
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        fixed = data[:size].decode("utf-8", errors="replace").encode("utf-8")
        return split_lines(fixed)
    return arr


def _ints(values: pa.Array, start: int, length: int) -> np.ndarray:
    """Digits at [start, start+length) of each value as integers (-1 where not digits)."""
    part = pc.utf8_slice_codeunits(values, start, start + length)
    num = pc.cast(pc.if_else(pc.match_substring_regex(part, r"^\d+$"), part, None), pa.int64())
    return np.asarray(pc.fill_null(num, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _civil(
    year: np.ndarray, month: np.ndarray, day: np.ndarray, hms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Naive seconds since the epoch from calendar fields, and which rows are real dates."""
    ok = (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (year >= 1970)
    y = np.where(ok, year, 1970) - 1970
    m = np.where(ok, month, 1) - 1
    d = np.where(ok, day, 1) - 1
    months = y.astype("datetime64[Y]").astype("datetime64[M]") + m.astype("timedelta64[M]")
    days = months.astype("datetime64[D]") + d.astype("timedelta64[D]")
    ok &= days.astype("datetime64[M]") == months  # 31 November rolls into December: refused
    hh, mm, ss = hms[:, 0], hms[:, 1], hms[:, 2]
    ok &= (hh >= 0) & (hh < 24) & (mm >= 0) & (mm < 60) & (ss >= 0) & (ss < 61)
    secs = days.astype("datetime64[s]").astype(np.int64) + hh * 3600 + mm * 60 + ss
    return np.where(ok, secs, 0), ok


def _hms(values: pa.Array) -> np.ndarray:
    return np.stack([_ints(values, 0, 2), _ints(values, 3, 2), _ints(values, 6, 2)], axis=1)


def _local_to_utc(naive_s: np.ndarray, tz: str) -> np.ndarray:
    if tz == "UTC" or naive_s.size == 0:
        return naive_s
    local = pa.array(naive_s * 1000, pa.timestamp("ms"))
    # a repeated hour (the autumn change) is read as its first occurrence
    utc = pc.assume_timezone(local, timezone=tz, ambiguous="earliest", nonexistent="earliest")
    return np.asarray(utc.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64) // 1000


def _heads(text: pa.Array, width: int) -> np.ndarray:
    """The first ``width`` bytes of each value as a matrix (0 past a value's end)."""
    n = len(text)
    bufs = text.buffers()
    offs = np.frombuffer(bufs[1], dtype=np.int32)[text.offset : text.offset + n + 1]
    raw = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    end = int(offs[-1]) if n else 0
    data = np.zeros(end + width, dtype=np.uint8)
    data[:end] = raw[:end]
    windows = np.lib.stride_tricks.sliding_window_view(data, width)
    mat = windows[offs[:-1]]  # one row of ``width`` bytes per value (a copy)
    mat[np.arange(width)[None, :] >= (offs[1:] - offs[:-1])[:, None]] = 0
    return mat


def _digits(mat: np.ndarray, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    part = mat[:, start : start + count].astype(np.int64) - 48
    ok = np.asarray(((part >= 0) & (part <= 9)).all(axis=1), dtype=bool)
    value = np.asarray((part * (10 ** np.arange(count - 1, -1, -1))[None, :]).sum(axis=1))
    return value, ok


def _clock(mat: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HH:MM:SS starting at column ``at`` (per row): ([h, m, s] rows, ok)."""
    rows = np.arange(mat.shape[0])
    cols = at[:, None] + np.arange(8)[None, :]
    part = mat[rows[:, None], np.minimum(cols, mat.shape[1] - 1)].astype(np.int64)
    colon = (part[:, 2] == 58) & (part[:, 5] == 58)
    d = part[:, [0, 1, 3, 4, 6, 7]] - 48
    ok = colon & ((d >= 0) & (d <= 9)).all(axis=1)
    return np.stack([d[:, 0] * 10 + d[:, 1], d[:, 2] * 10 + d[:, 3], d[:, 4] * 10 + d[:, 5]], 1), ok


_MONTH_CODES = np.array([(ord(m[0]) << 16) | (ord(m[1]) << 8) | ord(m[2]) for m in MONTHS])
_MONTH_ORDER = np.argsort(_MONTH_CODES)
_MONTH_SORTED = _MONTH_CODES[_MONTH_ORDER]


def _fast(text: pa.Array, tz: str, reference: datetime) -> tuple[np.ndarray, np.ndarray]:
    """The two common forms read from fixed columns with NumPy: ``Mon dd HH:MM:SS`` (day padded
    with a space, or not) and ``YYYY-MM-DD[T ]HH:MM:SS`` followed by a space. Returns (naive
    local seconds, which rows it read)."""
    mat = _heads(text, 20)
    n = mat.shape[0]
    secs = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    code = (mat[:, 0].astype(np.int64) << 16) | (mat[:, 1].astype(np.int64) << 8) | mat[:, 2]
    pos = np.minimum(np.searchsorted(_MONTH_SORTED, code), 11)
    hit = (_MONTH_SORTED[pos] == code) & (mat[:, 3] == 32)
    if hit.any():
        m = _MONTH_ORDER[pos] + 1
        sp4, sp5 = mat[:, 4] == 32, mat[:, 5] == 32
        d4 = (mat[:, 4] >= 48) & (mat[:, 4] <= 57)
        d5 = (mat[:, 5] >= 48) & (mat[:, 5] <= 57)
        # "Nov  2", "Nov 12" → clock at 7; "Nov 2" (unpadded, seen in the wild) → clock at 6
        day = np.where(sp4, mat[:, 5].astype(np.int64) - 48, (mat[:, 4].astype(np.int64) - 48))
        day = np.where(d4 & d5, day * 10 + mat[:, 5] - 48, day)
        shape = (sp4 & d5) | (d4 & d5 & (mat[:, 6] == 32)) | (d4 & sp5)
        at = np.where(d4 & sp5, 6, 7)
        clock, cok = _clock(mat, at)
        rows = hit & shape & cok
        ref = reference.astimezone(ZoneInfo(tz))
        year = np.where(m > ref.month, ref.year - 1, ref.year)
        s, good = _civil(year[rows], m[rows], day[rows], clock[rows])
        secs[rows] = s
        done[rows] = good
    rest = ~hit
    if rest.any():
        y, yok = _digits(mat, 0, 4)
        mo, mok = _digits(mat, 5, 2)
        dd, dok = _digits(mat, 8, 2)
        sep = (mat[:, 4] == 45) & (mat[:, 7] == 45) & ((mat[:, 10] == 84) | (mat[:, 10] == 32))
        clock, cok = _clock(mat, np.full(n, 11))
        # a fraction or a zone after the seconds: left to the full pattern
        plain = (mat[:, 19] == 32) | (mat[:, 19] == 0)
        rows = rest & yok & mok & dok & sep & cok & plain
        s, good = _civil(y[rows], mo[rows], dd[rows], clock[rows])
        secs[rows] = s
        done[rows] = good
    return secs, done


def head_times(text: pa.Array, *, tz: str, reference: datetime) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds since the epoch (UTC) of the time stamp each line starts with, and which
    lines have a usable one. ``reference`` (aware) dates year-less syslog stamps."""
    n = len(text)
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out, np.zeros(0, dtype=bool)
    naive, ok = _fast(text, tz, reference)
    out[ok] = _local_to_utc(naive[ok], tz) * 1000
    left = ~ok
    if left.any():
        ms, good = _parsed(pc.extract_regex(pc.filter(text, pa.array(left)), HEAD), tz, reference)
        out[left] = ms
        ok[left] = good
    return out, ok


def _parsed(head: pa.StructArray, tz: str, reference: datetime) -> tuple[np.ndarray, np.ndarray]:
    """Times from the groups of :data:`HEAD` (the forms the fixed-column reader leaves)."""
    n = len(head)
    out = np.zeros(n, dtype=np.int64)
    valid = pc.is_valid(head).to_numpy(zero_copy_only=False)
    ok = np.zeros(n, dtype=bool)
    if not valid.any():
        return out, ok
    field = {name: pc.fill_null(pc.struct_field(head, name), "") for name in
             ("mon", "day", "hms", "date", "hms2", "zone", "tai")}  # fmt: skip

    def present(name: str) -> np.ndarray:
        there = pc.not_equal(field[name], "").to_numpy(zero_copy_only=False)
        return np.asarray(valid & there, dtype=bool)

    syslog, iso, tai = present("mon"), present("date"), present("tai")
    if syslog.any():
        sel = pa.array(syslog)
        mon = pc.index_in(pc.filter(field["mon"], sel), value_set=pa.array(MONTHS))
        month = np.asarray(pc.fill_null(mon, -1).to_numpy(zero_copy_only=False), np.int64) + 1
        day = _ints(pc.filter(field["day"], sel), 0, 2)
        ref = reference.astimezone(ZoneInfo(tz))
        year = np.where(month > ref.month, ref.year - 1, ref.year)
        secs, good = _civil(year, month, day, _hms(pc.filter(field["hms"], sel)))
        out[syslog] = _local_to_utc(secs, tz) * 1000
        ok[syslog] = good
    if iso.any():
        sel = pa.array(iso)
        date = pc.filter(field["date"], sel)
        secs, good = _civil(
            _ints(date, 0, 4),
            _ints(date, 5, 2),
            _ints(date, 8, 2),
            _hms(pc.filter(field["hms2"], sel)),
        )
        zone = pc.filter(field["zone"], sel)
        zoned = pc.not_equal(zone, "").to_numpy(zero_copy_only=False)
        utc = secs.copy()
        if (~zoned).any():
            utc[~zoned] = _local_to_utc(secs[~zoned], tz)
        if zoned.any():
            z = pc.filter(zone, pa.array(zoned))
            z = pc.replace_substring(pc.replace_substring(z, ":", ""), "Z", "+0000")
            sign = np.where(pc.starts_with(z, "-").to_numpy(zero_copy_only=False), -1, 1)
            offset = sign * (_ints(z, 1, 2) * 3600 + _ints(z, 3, 2) * 60)
            utc[zoned] = secs[zoned] - offset
        out[iso] = utc * 1000
        ok[iso] = good
    if tai.any():
        digits = pc.filter(field["tai"], pa.array(tai)).cast(pa.binary())
        raw = np.frombuffer(digits.buffers()[2], dtype=np.uint8)
        starts = np.frombuffer(digits.buffers()[1], dtype=np.int32)[: len(digits)]
        vals = (
            _HEX[raw[starts[:, None] + np.arange(8)[None, :]]] << (4 * np.arange(7, -1, -1))
        ).sum(axis=1)
        out[tai] = (vals - _TAI_OFFSET_S) * 1000
        ok[tai] = True
    return out, ok
