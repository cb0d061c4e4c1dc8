"""How every line-based input file is read, so that every format treats damage alike.

The rules (README, "Loading files"): a UTF-8 byte-order mark is accepted; a line that is not
UTF-8 text (invalid bytes, or a NUL byte — binary data) or is longer than :data:`MAX_LINE` bytes
is bad: it is counted with its line number and skipped, and the lines around it are kept. Line
ends are ``\\n`` or ``\\r\\n``. A file with no usable line at all is :class:`NotText`, and
:func:`file_hint` says what it looks like (UTF-16, binary) for the message.

The file is validated once and split with NumPy over its bytes into one Arrow array, without a
Python object per line; only lines that hold a replacement character are looked at one by one (to
tell corrupt bytes from a U+FFFD that really is in the text), and those are rare in text worth
loading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "MAX_LINE",
    "UTF8_BOM",
    "Lines",
    "NotText",
    "check_text",
    "decode_text",
    "file_hint",
    "split_lines",
]

#: longest line accepted, in bytes: far above any record of the formats read (a Kea lease with a
#: user context, a long URL), far below what makes a parser's block handling fail
MAX_LINE = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"
_SMALL_OFFSETS = (1 << 31) - 1  # characters (≤ bytes): the 32-bit offsets of pa.string() suffice
_KEPT_OF_LONG = 1024  # characters kept of a too-long line, so structure (indentation) still shows


class NotText(ValueError):
    """No line of the file is usable text (binary data, UTF-16 …): nothing in it can be read."""


def decode_text(data: bytes) -> tuple[str, bool]:
    """``data`` as text without a leading UTF-8 byte-order mark, bytes that are not UTF-8
    replaced by U+FFFD; and whether it was clean UTF-8."""
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), False


def file_hint(data: bytes) -> str:
    """What a file that is not usable text looks like, as a clause for an error message
    (empty when it looks like ordinary text)."""
    if not data:
        return "the file is empty"
    head = data[:4096]
    nul = head.count(0) / len(head)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or nul > 0.2:
        if head[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
            return "the file looks like UTF-32 text: convert it to UTF-8"
        return "the file looks like UTF-16 text: convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)"
    # a damaged line or two does not make a binary file: the share of bytes that are not text does
    replaced = head.decode("utf-8", errors="replace").count("\ufffd") / len(head)
    if nul > 0.01 or replaced > 0.05:
        return "the file looks binary, not text"
    return ""


@dataclass(frozen=True)
class Lines:
    """Every line of a file. ``text[i]`` is line ``i + 1`` without its line end; a bad line's
    text is what decoding with replacement gives (cut to 1,024 characters when too long), so
    parsers that read structure from lines (indentation, blank separators) still see it, but
    must leave the line out (``bad[i]``): it is already reported."""

    text: pa.Array  # string (large_string for a file over 2 GiB), one per line
    bad: npt.NDArray[np.bool_]
    reasons: tuple[tuple[npt.NDArray[np.int64], str], ...]  # (1-based line numbers, why)

    def __len__(self) -> int:
        return len(self.text)

    @property
    def numbers(self) -> npt.NDArray[np.int64]:
        return np.arange(1, len(self.text) + 1, dtype=np.int64)

    @property
    def n_bad(self) -> int:
        return int(self.bad.sum())

    def good(self) -> tuple[pa.Array, npt.NDArray[np.int64]]:
        """The lines that are not bad, with their line numbers."""
        keep = ~self.bad
        return pc.filter(self.text, pa.array(keep)), self.numbers[keep]

    def first_bad(self, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (line number, why) of the bad lines, in file order."""
        pairs = [(int(n), why) for numbers, why in self.reasons for n in numbers[:limit]]
        return sorted(pairs)[:limit]


def split_lines(data: bytes, *, max_line: int = MAX_LINE) -> Lines:
    """Split a file's bytes into :class:`Lines`, marking the bad ones."""
    body = data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data
    try:
        body.decode("utf-8")
        text, clean = body, True
    except UnicodeDecodeError:
        # a replacement never swallows a line feed: line i of both is the same line
        text, clean = body.decode("utf-8", errors="replace").encode("utf-8"), False
    buf = np.frombuffer(text, dtype=np.uint8)
    size = len(buf) - 1 if text.endswith(b"\n") else len(buf)
    if not size:
        return Lines(pa.array([], pa.string()), np.zeros(0, dtype=bool), ())
    buf = buf[:size]
    nl = np.flatnonzero(buf == 0x0A)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [size]))
    cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 0x0D)  # a CRLF line end
    ends = ends - cr
    keep = np.ones(size, dtype=bool)
    keep[nl] = False
    keep[ends[cr]] = False
    lengths = ends - starts
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    lines: pa.Array = pa.LargeStringArray.from_buffers(
        len(starts), pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(buf[keep]))
    )
    n = len(lines)
    nul = _lines_holding(buf, nl, b"\x00", n)
    not_utf8 = np.zeros(n, dtype=bool)
    if not clean:
        not_utf8 = _corrupt_lines(body, _lines_holding(buf, nl, "\ufffd".encode(), n))
    long_ = (lengths > max_line) & ~not_utf8 & ~nul
    reasons: list[tuple[npt.NDArray[np.int64], str]] = []
    numbers = np.arange(1, n + 1, dtype=np.int64)
    if not_utf8.any():
        reasons.append((numbers[not_utf8], "not UTF-8 text"))
    nul &= ~not_utf8
    if nul.any():
        reasons.append((numbers[nul], "not text (holds a NUL byte: binary data?)"))
    if long_.any():
        reasons.append((numbers[long_], f"longer than {max_line:,} bytes"))
        cut = pc.utf8_slice_codeunits(lines, 0, _KEPT_OF_LONG)
        lines = pc.if_else(pa.array(long_), cut, lines)
    if size < _SMALL_OFFSETS:  # the parsers' kernels and regular expressions want string
        lines = lines.cast(pa.string())
    return Lines(lines, not_utf8 | nul | long_, tuple(reasons))


def _lines_holding(
    buf: npt.NDArray[np.uint8], nl: npt.NDArray[np.intp], needle: bytes, n: int
) -> npt.NDArray[np.bool_]:
    """Per line (split at ``nl``), whether it holds ``needle`` (one to three bytes)."""
    hit = buf[: len(buf) - len(needle) + 1] == needle[0]
    for k, b in enumerate(needle[1:], 1):
        hit &= buf[k : len(buf) - len(needle) + 1 + k] == b
    out = np.zeros(n, dtype=bool)
    out[np.searchsorted(nl, np.flatnonzero(hit))] = True
    return out


def _corrupt_lines(body: bytes, candidates: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Of the lines holding U+FFFD after decoding, those whose bytes are not valid UTF-8 (the
    rest hold a real U+FFFD); looked at one by one, as they are few in text worth loading."""
    n = len(candidates)
    bad = np.zeros(n, dtype=bool)
    ends = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == 0x0A)
    ends = np.append(ends, len(body))[:n]
    starts = np.concatenate(([0], ends[:-1] + 1))
    for i in np.flatnonzero(candidates).tolist():
        try:
            body[int(starts[i]) : int(ends[i])].decode("utf-8")
        except UnicodeDecodeError:
            bad[i] = True
    return bad


def check_text(lines: Lines, data: bytes, name: str) -> None:
    """Raise :class:`NotText` when ``data`` has lines but none is usable text (every line that
    is not blank is bad), saying what the file looks like."""
    if not lines.n_bad:
        return
    good, _ = lines.good()
    if pc.any(pc.not_equal(pc.utf8_trim_whitespace(good), "")).as_py():
        return
    first = "; ".join(f"line {n}: {why}" for n, why in lines.first_bad(3))
    hint = file_hint(data) or "every line is bad"
    raise NotText(f"{name}: no line is usable text ({hint}; {first})")
