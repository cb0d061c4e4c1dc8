"""What every feed parser shares: the row builder, value checks, the load report.

A parser walks its file and, for each entry, calls :meth:`Rows.add` (a good row) or
:meth:`Rows.bad` (a malformed one, with the line number and the reason). The good rows around a
bad one are always kept. Feeds are small next to flow data (the largest, a ThreatFox full export,
is about a million lines), so parsing is a plain loop; matching, which is the hot path, runs in
DuckDB.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from mamori.bounds import deep_line, deep_message, load_json
from mamori.config import InputLimitsConfig
from mamori.ingest.textlines import NotText, check_text, decode_text, file_hint, split_lines
from mamori.schemas import FQDN_LEN, REPUTATION

__all__ = [
    "CATEGORIES",
    "LineError",
    "LoadReport",
    "Rows",
    "mangled",
    "parse_time",
    "read_json",
    "text_lines",
]

CATEGORIES = ("c2", "first-stage", "malware-site", "phishing")
MAX_ERRORS = 100  # errors listed in a report; the count covers them all

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class LineError(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: int = Field(description="1-based line number in the file (for JSON: entry number)")
    reason: str


class LoadReport(BaseModel):
    """What a feed load did. ``errors`` lists the first malformed lines; ``rows_bad`` counts all."""

    path: str
    format: str
    source: str
    rows_loaded: int = 0
    rows_bad: int = 0
    #: entries that are well-formed but not usable here (file hashes, to_ids=false attributes …)
    rows_skipped: int = 0
    errors: list[LineError] = []
    by_category: dict[str, int] = {}
    by_type: dict[str, int] = {}
    loaded_at: datetime | None = None
    stored: bool = False


@functools.lru_cache(maxsize=4096)  # feeds repeat their time stamps a lot
def _parse_time_text(s: str) -> datetime | None:
    if not s or s.lower() in ("none", "null", "n/a"):
        return None
    if s.isdigit():
        return datetime.fromtimestamp(int(s), UTC)
    if s.endswith(" UTC"):
        s = s[:-4]
    s = s.replace("Z", "+00:00")
    dt = datetime.fromisoformat(s)
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_time(text: Any) -> datetime | None:
    """abuse.ch ``2026-11-02 00:10:00`` (optionally `` UTC``), ISO 8601, dates, epoch seconds.

    Raises ValueError on text that is none of those; empty/None/"None" gives None.
    """
    if text is None:
        return None
    if isinstance(text, int | float):
        return datetime.fromtimestamp(float(text), UTC)
    return _parse_time_text(str(text).strip())


_V4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")


def norm_ip(text: str) -> str:
    t = text.strip()
    if _V4.fullmatch(t):  # the common case, without building an address object
        return t
    return str(ipaddress.ip_address(t.strip("[]")))


def norm_port(value: Any) -> int | None:
    if value is None:
        return None
    s = str(value).strip()
    if not s:
        return None
    port = int(s)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return port


def norm_domain(text: str) -> str:
    d = text.strip().rstrip(".").lower()
    if d.startswith("*."):
        d = d[2:]
    if not d.isascii():
        d = d.encode("idna").decode("ascii")
    if len(d) > FQDN_LEN or "." not in d:
        raise ValueError(f"not a domain name: {text!r}")
    if not all(_LABEL.match(part) for part in d.split(".")) or d.replace(".", "").isdigit():
        raise ValueError(f"not a domain name: {text!r}")
    return d  # (an address never gets here: all-digit names and ':' are refused above)


def split_host(text: str) -> tuple[str | None, str | None]:
    """A host text to (ip, domain): exactly one is set."""
    try:
        return norm_ip(text), None
    except ValueError:
        return None, norm_domain(text)


def split_ip_port(text: str) -> tuple[str, int]:
    """``1.2.3.4:443`` or ``[2001:db8::1]:443``."""
    s = text.strip()
    if s.startswith("["):
        host, _, port = s[1:].partition("]:")
    else:
        host, _, port = s.rpartition(":")
    if not host or not port:
        raise ValueError(f"not address:port: {text!r}")
    p = norm_port(port)
    assert p is not None
    return norm_ip(host), p


class Rows:
    """Column lists for a reputation table, filled entry by entry."""

    def __init__(
        self,
        *,
        category: str | None,
        confidence: float | None,
        default_category: str,
        default_confidence: float,
        limits: InputLimitsConfig | None = None,
    ) -> None:
        if category is not None and category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence {confidence} is outside 0..1")
        self.category = category
        self.confidence = confidence
        self.default_category = default_category
        self.default_confidence = default_confidence
        self.limits = limits or InputLimitsConfig()
        self._cut = False  # the last JSON read had nesting cut (see read_json)
        self.cols: dict[str, list[Any]] = {
            c: []
            for c in (
                "indicator_type",
                "ip",
                "port",
                "protocol",
                "domain",
                "url",
                "category",
                "malware",
                "confidence",
                "first_seen",
                "last_seen",
                "expires",
            )
        }
        self.errors: list[LineError] = []
        self.n_bad = 0
        self.n_skipped = 0

    def __len__(self) -> int:
        return len(self.cols["indicator_type"])

    def bad(self, line: int, reason: str) -> None:
        self.n_bad += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(LineError(line=line, reason=reason[:300]))

    def skip(self) -> None:
        self.n_skipped += 1

    def read_json(self, path: Path) -> tuple[Any, bool]:
        """The file's JSON (:func:`read_json`'s text rules) with nesting past
        ``limits.max_json_depth`` cut before parsing (:mod:`mamori.bounds`), and whether it was
        clean UTF-8. :meth:`too_deep` then finds the entries that held deep nesting, and
        :func:`mangled` (when not clean) those that held damaged text."""
        data, clean, cut = read_json(path, self.limits.max_json_depth)
        self._cut = bool(cut)
        return data, clean

    def too_deep(self, value: Any) -> str | None:
        """Why ``value`` (an entry of the last :meth:`read_json`) must be refused for its
        nesting, or ``None``."""
        line = deep_line(value) if self._cut else None
        return None if line is None else deep_message(line, self.limits.max_json_depth)

    def add(
        self,
        indicator_type: str,
        *,
        ip: str | None = None,
        port: int | None = None,
        protocol: str | None = None,
        domain: str | None = None,
        url: str | None = None,
        category: str | None = None,
        malware: str | None = None,
        confidence: float | None = None,
        first_seen: datetime | None = None,
        last_seen: datetime | None = None,
        expires: datetime | None = None,
    ) -> None:
        """One good entry. The ``--category``/``--confidence`` the operator gave win over what
        the feed says; what the feed says wins over the format's default."""
        cat = self.category or category or self.default_category
        if cat not in CATEGORIES:
            raise ValueError(f"unknown category {cat!r}")
        conf = self.confidence if self.confidence is not None else confidence
        if conf is None:
            conf = self.default_confidence
        c = self.cols
        c["indicator_type"].append(indicator_type)
        c["ip"].append(ip)
        c["port"].append(port)
        c["protocol"].append(protocol)
        c["domain"].append(domain)
        c["url"].append(url[:2048] if url else None)
        c["category"].append(cat)
        c["malware"].append(malware[:128] if malware else None)
        c["confidence"].append(min(max(float(conf), 0.0), 1.0))
        c["first_seen"].append(first_seen)
        c["last_seen"].append(last_seen)
        c["expires"].append(expires)

    def add_url(self, text: str, **kw: Any) -> None:
        """A URL entry; the host (and an explicit port) are kept so names and addresses in it can
        be matched."""
        u = text.strip()
        parts = urlsplit(u)
        if parts.scheme.lower() not in ("http", "https", "ftp", "tcp", "udp") or not parts.hostname:
            raise ValueError(f"not a URL: {text!r}")
        ip, domain = split_host(parts.hostname)
        port = parts.port  # raises ValueError on a bad port
        self.add("url", ip=ip, domain=domain, port=port, url=u, **kw)

    def add_value(self, text: str, **kw: Any) -> None:
        """An IP, IP:port, domain or URL, whichever the text is."""
        s = text.strip()
        if "://" in s:
            self.add_url(s, **kw)
            return
        if s[-1:].isalpha():  # a name (addresses end in a digit or ']')
            self.add("domain", domain=norm_domain(s), **kw)
            return
        try:
            self.add("ip", ip=norm_ip(s), **kw)
            return
        except ValueError:
            pass
        if ":" in s and (s.startswith("[") or s.count(":") == 1):
            ip, port = split_ip_port(s)
            self.add("ip-port", ip=ip, port=port, **kw)
            return
        self.add("domain", domain=norm_domain(s), **kw)

    def table(self, source: str, loaded: datetime) -> pa.Table:
        n = len(self)
        schema = REPUTATION.arrow
        arrays = {
            "loaded": pa.array([loaded] * n, schema.field("loaded").type),
            **{name: pa.array(vals, schema.field(name).type) for name, vals in self.cols.items()},
            "source": pa.array([source] * n, pa.string()),
        }
        return pa.table([arrays[f.name] for f in schema], schema=schema)

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        return (
            dict(Counter(self.cols["category"])),
            dict(Counter(self.cols["indicator_type"])),
        )


def text_lines(path: Path, rows: Rows) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line that is text (:mod:`mamori.ingest.textlines`); the
    others are reported bad with their numbers. Raises ``NotText`` when no line is text."""
    data = path.read_bytes()
    lines = split_lines(data)
    check_text(lines, data, str(path))
    for no, why in lines.first_bad(lines.n_bad):
        rows.bad(no, why)
    good, numbers = lines.good()
    yield from zip(numbers.tolist(), good.to_pylist(), strict=True)


def read_json(path: Path, max_depth: int) -> tuple[Any, bool, list[int]]:
    """A JSON document (a leading byte-order mark is accepted), whether it was clean UTF-8, and
    the lines where nesting past ``max_depth`` was cut (:func:`mamori.bounds.load_json`). When
    it was not clean, the entries holding the damaged text are bad (:func:`mangled`), the others
    are kept. Raises ``NotText`` for a file that is not text at all."""
    data = path.read_bytes()
    hint = file_hint(data)
    if hint:
        raise NotText(f"{path}: {hint}")
    text, clean = decode_text(data)
    parsed, cut = load_json(text, max_depth)
    return parsed, clean, cut


def mangled(entry: Any) -> bool:
    """Whether a JSON entry of a document that was not clean UTF-8 holds the replaced text."""
    try:
        return "\ufffd" in json.dumps(entry, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        return True
