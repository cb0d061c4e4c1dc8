"""Third-party reports an ISP receives about its addresses, read into one Arrow shape.

Formats:

* ``shadowserver`` — Shadowserver CSV reports, recognised by their header: the ``event4_*``
  family (``event4_sinkhole``, ``event4_sinkhole_http`` …: ``timestamp, protocol, src_ip,
  src_port, …, infection, family, tag …``) names the infected host by ``src_ip``/``src_port``;
  scan reports (``scan_dns`` open resolvers, ``scan_telnet`` …: ``timestamp, ip, protocol, port,
  hostname, tag …``) by ``ip``/``port``. Times are ``YYYY-MM-DD HH:MM:SS`` in UTC.
* ``xarf`` — X-ARF v4 JSON reports (one object, a JSON array, or one object per line), validated
  by the ``xarf`` library (which also converts v3 reports). ``source_identifier`` and
  ``source_port`` name the host; the time is ``first_seen`` when given, else ``timestamp``.
* ``csv`` — plain CSV with a header: an address column (``ip``, ``src_ip``, ``source``), a time
  column (``timestamp``, ``ts``, ``time``, ``date``), optionally a port (``port``, ``src_port``),
  ``protocol`` and a label (``infection``, ``malware``, ``family``, ``issue``, ``tag``). The
  simulator's reports (infected hosts, a taken-down C&C server's victim log, a NOTICE-style
  vulnerable-device list) are of this kind.
* ``json`` — the same fields as ``csv``, as a JSON array of objects or one object per line.

Every record is checked (address, time, port) with Arrow compute over whole columns; a bad record
is counted and reported with its line number and reason, and the good records around it are kept.
JSON nesting past ``input_limits.max_json_depth`` is cut before parsing (:mod:`mamori.bounds`):
the record that held it is refused, the others are kept.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mamori.bounds import TOO_DEEP, deep_line, deep_message, load_json
from mamori.config import InputLimitsConfig
from mamori.ingest.textlines import Lines, NotText, decode_text, file_hint, split_lines
from mamori.schemas import TS

__all__ = [
    "REPORT_SCHEMA",
    "BadRecord",
    "ReportFormat",
    "ReportKind",
    "ReportParse",
    "parse_report",
    "parse_report_text",
]

log = logging.getLogger(__name__)


class ReportKind(StrEnum):
    INFECTED = "infected"  # M5
    TAKEDOWN = "takedown"  # M6
    VULNERABLE = "vulnerable"  # M9


class ReportFormat(StrEnum):
    SHADOWSERVER = "shadowserver"
    XARF = "xarf"
    CSV = "csv"
    JSON = "json"


REPORT_SCHEMA = pa.schema(
    [
        pa.field("line", pa.uint32(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("ip", pa.string(), nullable=False),
        pa.field("port", pa.uint16()),
        pa.field("protocol", pa.string()),
        pa.field("label", pa.string()),
    ]
)

_IP_ALIASES = ("ip", "src_ip", "source_ip", "source", "source_identifier", "addr", "address")
_TS_ALIASES = ("timestamp", "ts", "time", "date", "observed_at", "first_seen", "datetime")
_PORT_ALIASES = ("src_port", "port", "source_port")
_PROTO_ALIASES = ("protocol", "proto", "transport")
_LABEL_ALIASES = (
    "infection",
    "label",
    "malware",
    "family",
    "issue",
    "tag",
    "vulnerability",
    "bot_name",
)

# Text forms: dotted quad (each octet 0-255) or anything with a colon that Arrow can't judge — the
# colon forms are checked one by one (IPv6 in reports is rare).
_V4 = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
_LABEL_LEN = 48


@dataclass(frozen=True)
class BadRecord:
    line: int
    reason: str


@dataclass
class ReportParse:
    """Good records (``table`` in :data:`REPORT_SCHEMA`) and the bad ones, by line."""

    path: str
    fmt: ReportFormat
    table: pa.Table
    bad: list[BadRecord] = field(default_factory=list)
    records: int = 0  # records seen (good + bad)

    @property
    def good(self) -> int:
        return int(self.table.num_rows)


def _pick(header: Sequence[str], aliases: Iterable[str]) -> str | None:
    lower = {h.strip().lower(): h for h in header}
    for a in aliases:
        if a in lower:
            return lower[a]
    return None


def _texts(values: list[Any]) -> pa.Array:
    """A string array from parsed values (CSV gives strings; JSON may give numbers)."""
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _blank_null(arr: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def _validate(
    lines: list[int],
    ips: list[Any],
    tss: list[Any],
    ports: list[Any],
    protos: list[Any],
    labels: list[Any],
    bad: list[BadRecord],
) -> pa.Table:
    """Check whole columns at once; rows failing any check become :class:`BadRecord`."""
    line_arr = pa.array(lines, pa.uint32())
    ip = pc.utf8_trim_whitespace(
        pa.array([None if v is None else str(v) for v in ips], pa.string())
    )
    ok_v4 = pc.fill_null(pc.match_substring_regex(ip, _V4), False)
    ok_ip = ok_v4.to_numpy(zero_copy_only=False).copy()
    has_colon = pc.fill_null(pc.match_substring(ip, ":"), False).to_numpy(zero_copy_only=False)
    if has_colon.any():
        import ipaddress

        for i in has_colon.nonzero()[0].tolist():
            try:
                ok_ip[i] = ipaddress.ip_address(ip[i].as_py()).version == 6
            except ValueError:
                ok_ip[i] = False
    ts_text = pc.utf8_trim_whitespace(_texts(tss))
    ts = _parse_times(ts_text)
    ok_ts = pc.is_valid(ts).to_numpy(zero_copy_only=False)
    port_text = _blank_null(pc.utf8_trim_whitespace(_texts(ports)))
    port_num = pc.cast(
        pc.if_else(pc.match_substring_regex(port_text, r"^[0-9]{1,5}$"), port_text, None),
        pa.int64(),
    )
    ok_port = (
        pc.or_kleene(pc.is_null(port_text), pc.less_equal(port_num, 65535))
        .fill_null(False)
        .to_numpy(zero_copy_only=False)
    )
    good = ok_ip & ok_ts & ok_port
    if not good.all():
        for i in (~good).nonzero()[0].tolist():
            why = []
            if not ok_ip[i]:
                why.append(f"not an IP address: {_shown(ips[i])}")
            if not ok_ts[i]:
                why.append(f"cannot read time {_shown(tss[i])}")
            if not ok_port[i]:
                why.append(f"bad port {_shown(ports[i])}")
            bad.append(BadRecord(lines[i], "; ".join(why)))
    mask = pa.array(good)
    label = pc.utf8_slice_codeunits(
        pc.utf8_lower(_blank_null(pc.utf8_trim_whitespace(_texts(labels)))), 0, _LABEL_LEN
    )
    proto = pc.utf8_slice_codeunits(
        pc.utf8_lower(_blank_null(pc.utf8_trim_whitespace(_texts(protos)))), 0, 8
    )
    table = pa.table(
        [line_arr, ts, ip, port_num.cast(pa.uint16(), safe=False), proto, label],
        names=REPORT_SCHEMA.names,
    )
    return table.filter(mask).cast(REPORT_SCHEMA)


def _shown(value: Any) -> str:
    """A value for a message: a huge one (a 10 MB field) is cut."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}…"


def _parse_times(text: pa.Array) -> pa.Array:
    """ISO 8601 with ``T`` or a space, with ``Z``, an offset or nothing (= UTC); or epoch seconds."""
    norm = pc.replace_substring_regex(text, r"^(\d{4}-\d\d-\d\d) ", r"\1T")
    norm = pc.replace_substring_regex(norm, r"(Z| UTC| ?\+00:?00)$", "+0000")
    with_tz = pc.fill_null(pc.match_substring_regex(norm, r"[+-]\d\d:?\d\d$"), False)
    norm = pc.if_else(with_tz, norm, pc.binary_join_element_wise(norm, "+0000", ""))
    norm = pc.replace_substring_regex(norm, r"([+-]\d\d):(\d\d)$", r"\1\2")
    # Fractions of a second: milliseconds are the stored unit.
    ms_text = pc.struct_field(pc.extract_regex(pc.fill_null(norm, ""), r"\.(?P<f>\d+)"), "f")
    ms = pc.cast(pc.utf8_slice_codeunits(pc.utf8_rpad(ms_text, 3, "0"), 0, 3), pa.int64())
    whole = pc.replace_substring_regex(norm, r"\.\d+", "")
    base = pc.strptime(whole, format="%Y-%m-%dT%H:%M:%S%z", unit="ms", error_is_null=True)
    base_ms = base.cast(pa.int64())
    iso_ms = pc.add(base_ms, pc.fill_null(ms, 0))
    epoch = pc.if_else(
        pc.fill_null(pc.match_substring_regex(text, r"^\d{9,10}(\.\d+)?$"), False), text, None
    )
    epoch_ms = pc.cast(pc.round(pc.multiply(pc.cast(epoch, pa.float64()), 1000.0)), pa.int64())
    return pc.coalesce(iso_ms, epoch_ms).cast(TS)


def _rows_from_csv(
    text: str, fmt: ReportFormat, bad: list[BadRecord]
) -> tuple[pa.Table | None, int]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    header_line = 0
    try:
        for row in reader:
            if not row or (row[0].startswith("#") and header is None):
                continue
            header = [h.strip() for h in row]
            header_line = reader.line_num
            break
    except csv.Error as exc:
        raise ValueError(f"line {reader.line_num}, the header, is not CSV: {exc}") from None
    if header is None:
        return None, 0
    if fmt is ReportFormat.SHADOWSERVER:
        lower = [h.lower() for h in header]
        if "src_ip" in lower:  # event4_* (sinkhole, honeypot): the infected host is the source
            ip_col: str | None = header[lower.index("src_ip")]
            port_col = header[lower.index("src_port")] if "src_port" in lower else None
        elif "ip" in lower:  # scan_*: the host that answered the scan
            ip_col = header[lower.index("ip")]
            port_col = header[lower.index("port")] if "port" in lower else None
        else:
            raise ValueError(
                "not a Shadowserver report: the header has neither src_ip (event4_*) nor ip "
                f"(scan_*): {header[:8]}"
            )
        ts_col = _pick(header, ("timestamp",))
    else:
        ip_col = _pick(header, _IP_ALIASES)
        ts_col = _pick(header, _TS_ALIASES)
        port_col = _pick(header, _PORT_ALIASES)
    if ip_col is None or ts_col is None:
        raise ValueError(
            f"the header names no {'address' if ip_col is None else 'time'} column "
            f"(expected one of {_IP_ALIASES if ip_col is None else _TS_ALIASES}): {header[:8]}"
        )
    proto_col = _pick(header, _PROTO_ALIASES)
    label_col = _pick(header, _LABEL_ALIASES)
    idx = {h: i for i, h in enumerate(header)}
    width = len(header)
    lines: list[int] = []
    rows: list[list[str]] = []
    records = 0
    # the line a row *starts* on (quoted fields may span lines)
    start = header_line + 1
    while True:
        line = start
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # the reader starts afresh on the next line
            start = reader.line_num + 1
            records += 1
            bad.append(BadRecord(line, f"unreadable CSV: {exc}"))
            continue
        start = reader.line_num + 1
        if len(row) != width:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            records += 1
            bad.append(BadRecord(line, f"{len(row)} fields, the header has {width}"))
            continue
        records += 1
        lines.append(line)
        rows.append(row)

    def column(name: str | None) -> list[Any]:
        if name is None:
            return [None] * len(rows)
        i = idx[name]
        return [r[i] for r in rows]

    cols = {
        "line": lines,
        "ip": column(ip_col),
        "ts": column(ts_col),
        "port": column(port_col),
        "proto": column(proto_col),
        "label": column(label_col),
    }
    table = _validate(
        cols["line"], cols["ip"], cols["ts"], cols["port"], cols["proto"], cols["label"], bad
    )
    return table, records


def _json_objects(src: _Source, bad: list[BadRecord], max_depth: int) -> list[tuple[int, Any]]:
    """(line, object) pairs from a JSON array, a single object, or JSON lines. Nesting past
    ``max_depth`` is cut (:func:`_too_deep` finds the records that held it). In a document
    that was not clean UTF-8, the records holding the damaged text are bad."""
    text = src.text
    stripped = text.lstrip()
    whole: list[tuple[int, Any]] | None = None
    if stripped.startswith("["):
        try:
            data, _ = load_json(text, max_depth)
        except json.JSONDecodeError as exc:
            bad.append(BadRecord(exc.lineno, f"not valid JSON: {exc.msg}"))
            return []
        # Records of a pretty-printed array have no line of their own: number them from 1.
        items = data if isinstance(data, list) else [data]
        whole = [(i + 1, o) for i, o in enumerate(items)]
    else:
        with contextlib.suppress(json.JSONDecodeError):
            whole = [(1, load_json(text, max_depth)[0])]
    if whole is not None:
        if src.clean:
            return whole
        kept = []
        for no, o in whole:
            # a record cut for its nesting is refused for that (_too_deep), not for its text
            if deep_line(o) is None and _mangled(o):
                bad.append(BadRecord(no, "not UTF-8 text"))
            else:
                kept.append((no, o))
        return kept
    # JSON lines: each line is a record, and the rules of every line format apply
    lines = src.lines()
    bad.extend(BadRecord(no, why) for no, why in lines.first_bad(lines.n_bad))
    out: list[tuple[int, Any]] = []
    good, numbers = lines.good()
    for no, line in zip(numbers.tolist(), good.to_pylist(), strict=True):
        if not line.strip():
            continue
        try:
            obj, cut = load_json(line, max_depth)
        except json.JSONDecodeError as exc:
            bad.append(BadRecord(no, f"not valid JSON: {exc.msg}"))
            continue
        # the marker holds the line within this one-line text: make it the file's line
        out.append((no, {TOO_DEEP: no} if cut else obj))
    return out


def _mangled(entry: Any) -> bool:
    try:
        return "\ufffd" in json.dumps(entry, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        return True


def _too_deep(o: Any, line: int, max_depth: int, bad: list[BadRecord]) -> bool:
    """Refuse (as a bad record) a record whose nesting was cut."""
    at = deep_line(o)
    if at is None:
        return False
    bad.append(BadRecord(line, deep_message(at, max_depth)))
    return True


def _rows_from_json(src: _Source, bad: list[BadRecord], max_depth: int) -> tuple[pa.Table, int]:
    before = len(bad)
    objs = _json_objects(src, bad, max_depth)
    unreadable = len(bad) - before
    cols: dict[str, list[Any]] = {k: [] for k in ("line", "ip", "ts", "port", "proto", "label")}
    for line, o in objs:
        if _too_deep(o, line, max_depth, bad):
            continue
        if not isinstance(o, dict):
            bad.append(BadRecord(line, "not a JSON object"))
            continue
        keys = list(o)
        ipk, tsk = _pick(keys, _IP_ALIASES), _pick(keys, _TS_ALIASES)
        if ipk is None or tsk is None:
            bad.append(BadRecord(line, "no address or time field"))
            continue
        pk, prk, lk = (
            _pick(keys, _PORT_ALIASES),
            _pick(keys, _PROTO_ALIASES),
            _pick(keys, _LABEL_ALIASES),
        )
        cols["line"].append(line)
        cols["ip"].append(o[ipk])
        cols["ts"].append(o[tsk])
        cols["port"].append(o.get(pk) if pk else None)
        cols["proto"].append(o.get(prk) if prk else None)
        cols["label"].append(o.get(lk) if lk else None)
    table = _validate(
        cols["line"], cols["ip"], cols["ts"], cols["port"], cols["proto"], cols["label"], bad
    )
    return table, len(objs) + unreadable


def _rows_from_xarf(src: _Source, bad: list[BadRecord], max_depth: int) -> tuple[pa.Table, int]:
    import xarf

    before = len(bad)
    objs = _json_objects(src, bad, max_depth)
    unreadable = len(bad) - before
    cols: dict[str, list[Any]] = {k: [] for k in ("line", "ip", "ts", "port", "proto", "label")}
    for line, o in objs:
        if _too_deep(o, line, max_depth, bad):
            continue
        if not isinstance(o, dict):
            bad.append(BadRecord(line, "not a JSON object"))
            continue
        with warnings.catch_warnings():
            # v3 reports are converted with a DeprecationWarning; it is kept in result.warnings.
            warnings.simplefilter("ignore")
            try:
                result = xarf.parse(o)
            except xarf.XARFError as exc:
                bad.append(BadRecord(line, f"not an X-ARF report: {exc}"))
                continue
        rep = result.report
        if result.errors or rep is None:
            why = "; ".join(f"{e.field}: {e.message}" for e in result.errors[:3]) or "unreadable"
            bad.append(BadRecord(line, f"invalid X-ARF report: {why}"))
            continue
        d = rep.model_dump(mode="json")
        cols["line"].append(line)
        cols["ip"].append(d.get("source_identifier"))
        cols["ts"].append(d.get("first_seen") or d.get("timestamp"))
        cols["port"].append(d.get("source_port"))
        cols["proto"].append(d.get("protocol"))
        label = (
            d.get("bot_name")
            or d.get("malware_family")
            or d.get("cve_id")
            or d.get("service")
            or d.get("type")
        )
        cols["label"].append(label)
    table = _validate(
        cols["line"], cols["ip"], cols["ts"], cols["port"], cols["proto"], cols["label"], bad
    )
    return table, len(objs) + unreadable


@dataclass
class _Source:
    """A report's bytes, its text (decoded once) and, when a format reads it line by line, its
    lines (:mod:`mamori.ingest.textlines`)."""

    raw: bytes
    text: str
    clean: bool
    _lines: Lines | None = None

    @classmethod
    def of(cls, raw: bytes) -> _Source:
        text, clean = decode_text(raw)
        return cls(raw, text, clean)

    def lines(self) -> Lines:
        if self._lines is None:
            self._lines = split_lines(self.raw)
        return self._lines


def _csv_text(src: _Source, bad: list[BadRecord]) -> tuple[str, int]:
    """The text for the CSV reader, with each bad line (reported here) left blank so the line
    numbers of the others do not move; and how many there were."""
    lines = src.lines()
    if not lines.n_bad:
        return src.text, 0
    bad.extend(BadRecord(no, why) for no, why in lines.first_bad(lines.n_bad))
    kept = pc.if_else(pa.array(lines.bad), "", lines.text).cast(pa.large_string())
    joined = pc.binary_join(
        pa.LargeListArray.from_arrays(pa.array([0, len(kept)], pa.int64()), kept),
        pa.scalar("\n", pa.large_string()),
    )
    return str(joined[0].as_py()), lines.n_bad


def parse_report_text(
    text: str,
    fmt: ReportFormat | str,
    *,
    path: str = "-",
    limits: InputLimitsConfig | None = None,
) -> ReportParse:
    """Parse a report held in memory (see :func:`parse_report`)."""
    src = _Source(text.encode("utf-8", errors="surrogatepass"), text, True)
    return _parse(src, ReportFormat(fmt), path, limits)


def _parse(
    src: _Source, fmt: ReportFormat, path: str, limits: InputLimitsConfig | None
) -> ReportParse:
    depth = (limits or InputLimitsConfig()).max_json_depth
    bad: list[BadRecord] = []
    if fmt in (ReportFormat.CSV, ReportFormat.SHADOWSERVER):
        text, n_bad = _csv_text(src, bad)
        table, records = _rows_from_csv(text, fmt, bad)
        records += n_bad
    elif fmt is ReportFormat.JSON:
        table, records = _rows_from_json(src, bad, depth)
    else:
        table, records = _rows_from_xarf(src, bad, depth)
    if table is None:
        table = REPORT_SCHEMA.empty_table()
    bad.sort(key=lambda b: b.line)
    for b in bad[:20]:
        log.warning("%s line %d: %s", path, b.line, b.reason)
    if len(bad) > 20:
        log.warning("%s: %d more bad records not shown", path, len(bad) - 20)
    return ReportParse(path, fmt, table, bad, records)


def parse_report(
    path: Path, fmt: ReportFormat | str, *, limits: InputLimitsConfig | None = None
) -> ReportParse:
    """Read a report file. Raises ``ValueError`` when the file as a whole is not of ``fmt``
    (a missing header column), :class:`~mamori.ingest.textlines.NotText` when it is not text
    (binary, UTF-16); bad records inside are counted in :attr:`ReportParse.bad`. A line that
    is not UTF-8 text or is too long is a bad record, as in every line format."""
    raw = path.read_bytes()
    hint = file_hint(raw) if raw else ""
    if hint:
        raise NotText(f"{path}: {hint}")
    return _parse(_Source.of(raw), ReportFormat(fmt), str(path), limits)
