"""Unbound's text query log (``log-queries: yes``, optionally ``log-replies``) to ``dns_queries``.

    [1793610000] unbound[2101:0] info: 10.16.0.5 www1.search.example.com. A IN
    [1793610000] unbound[2101:0] reply: 10.16.0.5 www1.search.example.com. A IN NOERROR 0.000 0 45

Time stamps must be epoch seconds (Unbound's default; ``log-time-ascii: no``). Lines are parsed
with one Arrow regular expression over the whole file; a line that is not text or is too long is
malformed, as in every line format (:mod:`mamori.ingest.textlines`). When a file has query lines, reply lines
are skipped (each query would otherwise be counted twice); a replies-only log is read from its
replies, which also give the response code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import dns.rcode
import dns.rdatatype
import pyarrow as pa
import pyarrow.compute as pc

from mamori.ingest.textlines import check_text, split_lines
from mamori.schemas import DNS_QUERIES

__all__ = ["LogStats", "parse_unbound_log"]

log = logging.getLogger(__name__)

_LINE = (
    r"^\[(?P<ts>[0-9]{9,11})\] [^\[\] ]+\[[0-9]+:[0-9a-f]+\] (?:info|query|reply): "
    r"(?P<client>[0-9a-fA-F.:]+)(?:@(?P<port>[0-9]{1,5}))? (?P<qname>\S+) (?P<qtype>\S+) "
    r"(?P<qclass>IN|CH|HS|CLASS[0-9]+)(?: (?P<rcode>[A-Z]+[0-9]*) .*)?$"
)
_MAX_LOGGED = 5


@dataclass
class LogStats:
    lines: int = 0
    queries: int = 0
    skipped_replies: int = 0
    other: int = 0  # lines Unbound writes that are not queries (start-up, rpz, warnings)
    malformed: int = 0
    examples: list[str] = field(default_factory=list)


def _lookup(values: pa.Array, convert: object) -> pa.Array:
    """Map the (few) distinct texts through ``convert``; unknown texts become null."""
    distinct = pc.unique(values)
    mapped: list[int | None] = []
    for text in distinct.to_pylist():
        try:
            mapped.append(int(convert(text)))  # type: ignore[operator]
        except Exception:
            mapped.append(None)
    idx = pc.index_in(values, value_set=distinct)
    return pc.take(pa.array(mapped, pa.int64()), idx)


def parse_unbound_log(
    data: bytes, *, resolver: str | None = None, name: str = "unbound log"
) -> tuple[pa.Table, LogStats]:
    """Rows of ``dns_queries`` from the bytes of an Unbound log file (``name`` for messages).
    Raises :class:`~mamori.ingest.textlines.NotText` when no line is text."""
    stats = LogStats()
    text = split_lines(data)
    check_text(text, data, name)
    lines = text.text
    stats.lines = len(lines)
    not_text = pa.array(text.bad)
    parts = pc.extract_regex(lines, _LINE)
    ok = pc.and_(pc.is_valid(parts), pc.invert(not_text))
    # lines from Unbound that are not query lines are expected; a line that looks like a query
    # line but does not parse is malformed, and so is a line that is not text or too long
    looks = pc.match_substring_regex(
        lines, r"\] (?:info|query|reply): [0-9a-fA-F]*[.:][0-9a-fA-F.:]*(?:@\d+)? "
    )
    bad = pc.or_(pc.and_(looks, pc.invert(ok)), not_text)
    stats.malformed = pc.sum(bad).as_py() or 0
    if stats.malformed:
        why = dict(text.first_bad(_MAX_LOGGED))
        for i in pc.indices_nonzero(bad).to_pylist()[:_MAX_LOGGED]:
            shown = why.get(i + 1) or f"{lines[i].as_py()[:120]!r}"
            stats.examples.append(f"line {i + 1}: {shown}")
            log.warning("unbound log line %d does not parse: %s", i + 1, shown)
    stats.other = len(lines) - (pc.sum(ok).as_py() or 0) - stats.malformed
    rows = pc.filter(parts, ok)
    rcode_text = pc.struct_field(rows, "rcode")
    is_reply = pc.fill_null(pc.not_equal(rcode_text, ""), False)
    n_replies = pc.sum(is_reply).as_py() or 0
    if n_replies < len(rows):  # queries are logged: replies would count them twice
        rows = pc.filter(rows, pc.invert(is_reply))
        stats.skipped_replies = n_replies
    rcode_text = pc.struct_field(rows, "rcode")
    qname = pc.utf8_lower(pc.struct_field(rows, "qname"))
    qname = pc.if_else(pc.equal(qname, "."), "", pc.utf8_rtrim(qname, "."))
    port = pc.struct_field(rows, "port")
    port = pc.if_else(pc.equal(port, ""), None, port).cast(pa.int32())
    port = pc.if_else(pc.greater(port, 65535), None, port)
    rcode = _lookup(pc.if_else(pc.equal(rcode_text, ""), None, rcode_text), dns.rcode.from_text)
    qtype = _lookup(pc.struct_field(rows, "qtype"), dns.rdatatype.from_text)
    seconds = pc.struct_field(rows, "ts").cast(pa.int64())
    table = pa.table(
        {
            "ts": pc.multiply(seconds, 1000).cast(pa.timestamp("ms", tz="UTC")),
            "client_addr": pc.struct_field(rows, "client"),
            "client_port": port.cast(pa.uint16()),
            "qname": qname,
            "qtype": qtype.cast(pa.uint16()),
            "rcode": rcode.cast(pa.uint8()),
            "resolver": pa.array([resolver] * len(rows), pa.string()),
        },
        schema=DNS_QUERIES.arrow,
    )
    stats.queries = table.num_rows
    return table, stats
