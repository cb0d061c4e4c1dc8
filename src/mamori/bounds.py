"""Bounds on hostile input: JSON nesting, measured before parsing, and STIX pattern size.

``json.loads`` recurses once per nesting level, and so do the ``stix2``/``stix2-patterns`` code
and the validators behind it; a feed, report or TAXII body nested 100,000 deep ends in
``RecursionError`` and loses the whole file. :func:`load_json` therefore scans the raw text first
(with NumPy, over the positions of quotes and brackets only) and replaces every subtree that goes
past ``max_depth`` with a small marker object before parsing. The document then parses; each
parser asks :func:`deep_line` of every record it reads (only when something was cut) and refuses
the records that hold a marker, with their position, keeping the others.

The scan follows JSON's own lexer (a string starts at an unescaped quote outside a string; a
backslash escapes the next character), so up to the first place where the text is not JSON it
sees the same nesting the parser would; past that place the parser stops anyway.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from mamori.config import InputLimitsConfig

__all__ = [
    "TOO_DEEP",
    "as_utf8",
    "check_pattern",
    "deep_line",
    "deep_message",
    "load_json",
    "prune_deep",
]

#: key of the marker object that replaces a subtree nested too deep; its value is the line the
#: subtree started on. A document may carry the key itself: its record is then refused, no more.
TOO_DEEP = "\x00mamori:too-deep"
_MARKER = b'{"\\u0000mamori:too-deep":%d}'

_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))


def _positions(b: np.ndarray, chars: tuple[int, ...]) -> np.ndarray:
    mask = b == chars[0]
    for c in chars[1:]:
        mask |= b == c
    return np.flatnonzero(mask)


def _real_quotes(b: np.ndarray) -> np.ndarray:
    """Positions of the quotes that open or close a string (not preceded by an odd number of
    backslashes)."""
    quotes = np.flatnonzero(b == ord('"'))
    slashes = np.flatnonzero(b == ord("\\"))
    if not len(quotes) or not len(slashes):
        return quotes
    # runs of consecutive backslashes: where each ends and how long it is
    breaks = np.flatnonzero(np.diff(slashes) != 1)
    ends = np.append(slashes[breaks], slashes[-1])
    starts = np.insert(slashes[breaks + 1], 0, slashes[0])
    lengths = ends - starts + 1
    i = np.searchsorted(ends, quotes - 1)
    i_ok = np.minimum(i, len(ends) - 1)
    escaped = (i < len(ends)) & (ends[i_ok] == quotes - 1) & (lengths[i_ok] % 2 == 1)
    real: np.ndarray = quotes[~escaped]
    return real


def prune_deep(data: bytes, max_depth: int) -> tuple[bytes, list[int]]:
    """``data`` (UTF-8 JSON) with every subtree deeper than ``max_depth`` replaced by a marker
    object, and the 1-based line each replaced subtree started on."""
    b = np.frombuffer(data, dtype=np.uint8)
    opens = _positions(b, _OPEN)
    if len(opens) <= max_depth:  # cannot nest deeper than it has openers
        return data, []
    closes = _positions(b, _CLOSE)
    quotes = _real_quotes(b)
    # a bracket is structural when an even number of string quotes come before it
    opens = opens[np.searchsorted(quotes, opens) % 2 == 0]
    closes = closes[np.searchsorted(quotes, closes) % 2 == 0]
    pos = np.concatenate([opens, closes])
    step = np.concatenate([np.ones(len(opens), np.int64), -np.ones(len(closes), np.int64)])
    order = np.argsort(pos, kind="stable")
    pos, step = pos[order], step[order]
    depth = np.cumsum(step)  # depth after each bracket
    if not len(depth) or int(depth.max()) <= max_depth:
        return data, []
    starts = pos[(step == 1) & (depth == max_depth + 1)]
    # a sentinel past the end: a subtree never closed is cut to the end of the text
    ends = np.append(pos[(step == -1) & (depth == max_depth)], len(data) - 1)
    k = np.searchsorted(ends, starts)
    stops = ends[k] + 1
    lines = (np.searchsorted(np.flatnonzero(b == ord("\n")), starts) + 1).tolist()
    pieces: list[bytes] = []
    kept: list[int] = []
    done = 0
    for s, e, line in zip(starts.tolist(), stops.tolist(), lines, strict=True):
        if s < done:  # inside an unclosed cut (malformed text): already gone
            continue
        pieces += [data[done:s], _MARKER % line]
        kept.append(line)
        done = e
    pieces.append(data[done:])
    return b"".join(pieces), kept


def as_utf8(data: bytes | str) -> bytes:
    """JSON text as UTF-8 bytes, whatever JSON encoding (UTF-8/16/32, BOM) it came in: the scan
    reads bytes, and only in UTF-8 is every ``[`` byte a bracket."""
    if isinstance(data, str):
        return data.encode("utf-8", errors="surrogatepass")
    raw = bytes(data)
    encoding = json.detect_encoding(raw)
    if encoding == "utf-8":
        return raw
    return raw.decode(encoding).encode("utf-8", errors="surrogatepass")


def load_json(data: bytes | str, max_depth: int) -> tuple[Any, list[int]]:
    """``json.loads`` that cannot recurse past ``max_depth``: the parsed document (deeper
    subtrees replaced by markers, see :func:`deep_line`) and the lines where that happened.
    Raises ``ValueError`` (``JSONDecodeError``, ``UnicodeDecodeError``) like ``json.loads``."""
    pruned, lines = prune_deep(as_utf8(data), max_depth)
    return json.loads(pruned), lines


def deep_line(value: Any) -> int | None:
    """The line of the first too-deep subtree that :func:`load_json` cut inside ``value``;
    ``None`` when there is none. Iterative: ``value`` is at most ``max_depth`` deep, but this
    must not be the recursion it guards against."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if TOO_DEEP in v:
                line = v[TOO_DEEP]
                return line if isinstance(line, int) else 0
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def deep_message(line: int, max_depth: int) -> str:
    return f"nested deeper than {max_depth} levels (from line {line})"


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'", re.DOTALL)
# boolean and observation operators, and qualifiers: each is one more level of the parse tree
_OPERATOR = re.compile(r"\b(?:AND|OR|FOLLOWEDBY|WITHIN|REPEATS|START)\b")
_NESTING = re.compile(r"[()\[\]]")


def check_pattern(pattern: str, limits: InputLimitsConfig) -> None:
    """Raise ``ValueError`` (saying which bound) when a STIX pattern is too large to hand to the
    pattern grammar, whose parser and visitors recurse once per operator and bracket."""
    if len(pattern) > limits.max_pattern_length:
        raise ValueError(
            f"STIX pattern of {len(pattern)} characters; at most {limits.max_pattern_length}"
        )
    bare = _QUOTED.sub("''", pattern)  # operators and brackets inside quoted values do not count
    ops = len(_OPERATOR.findall(bare))
    if ops > limits.max_pattern_operators:
        raise ValueError(
            f"STIX pattern with {ops} operators and qualifiers; at most "
            f"{limits.max_pattern_operators}"
        )
    depth = deepest = 0
    for m in _NESTING.finditer(bare):
        depth += 1 if m.group() in "([" else -1
        deepest = max(deepest, depth)
    if deepest > limits.max_pattern_nesting:
        raise ValueError(
            f"STIX pattern nested {deepest} brackets deep; at most {limits.max_pattern_nesting}"
        )
