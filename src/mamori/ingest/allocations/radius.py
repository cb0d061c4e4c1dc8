"""FreeRADIUS ``detail`` files (rlm_detail): RADIUS accounting Start / Interim-Update / Stop.

Each packet is a header line with the time the server wrote it (``Fri Oct  2 00:48:20 2026``),
then ``<TAB>Attribute = value`` lines, then a blank line. We keep Acct-Status-Type,
Acct-Session-Id (with NAS-IP-Address, or Acct-Unique-Session-Id when present, as the session key),
User-Name (the subscriber key), Framed-IP-Address (IPv4) or Framed-IPv6-Address, and the times.

The event time is Event-Timestamp (the NAS's clock) when present, else the server's ``Timestamp``
(or the header) minus Acct-Delay-Time. When both clocks are there and disagree by more than the
skew tolerance, the record is counted under ``clock_skew``. Acct-Session-Time on an Interim-Update
or Stop tells when a session whose Start is missing began. Accounting-On/Off (RFC 2866: the NAS
started or is going down) ends every session of that NAS still open then — its Stops will never
come — unless the session had already timed out; other packet kinds are counted as skipped. The
file is parsed column-wise (Arrow), not record by record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.ingest.allocations.common import (
    EVENT_SCHEMA,
    INTERIM,
    RESET,
    START,
    STOP,
    IngestReport,
    Issues,
    read_text,
)

__all__ = ["parse_radius_detail"]

_ATTRS = (
    "Acct-Status-Type",
    "Acct-Session-Id",
    "Acct-Unique-Session-Id",
    "NAS-IP-Address",
    "User-Name",
    "Framed-IP-Address",
    "Framed-IPv6-Address",
    "Event-Timestamp",
    "Acct-Delay-Time",
    "Timestamp",
    "Acct-Session-Time",
)
_KINDS = {"Start": START, "Interim-Update": INTERIM, "Alive": INTERIM, "Stop": STOP}
_RESTARTS = ("Accounting-On", "Accounting-Off")
#: NAS codes go above the time (ms since the epoch < 2**42, until about 2109) in one sort key
_TIME_BITS = 42


def _pivot(rec: np.ndarray, values: pa.Array, n: int) -> pa.Array:
    """One value per record (the last one given), null where the record has none."""
    pos = np.full(n, -1, dtype=np.int64)
    pos[rec] = np.arange(len(rec), dtype=np.int64)
    return pc.take(values, pa.array(pos, mask=pos < 0))


def _num(values: pa.Array) -> pa.Array:
    """Decimal integers as int64; null for anything else."""
    digits = pc.fill_null(pc.match_substring_regex(values, r"^\d{1,15}$"), False)
    return pc.if_else(
        digits,
        pc.cast(pc.if_else(digits, values, "0"), pa.int64()),
        pa.nulls(len(values), pa.int64()),
    )


def _ws(values: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(pc.utf8_trim_whitespace(values), r"\s+", " ")


def parse_radius_detail(path: Path, issues: Issues, *, timeout_s: float, skew_s: float) -> pa.Table:
    """Events (see :mod:`.common`) from a detail file."""
    report: IngestReport = issues.report
    text = read_text(path, issues)
    lines = text.text
    n_lines = len(lines)
    if not n_lines:
        return EVENT_SCHEMA.empty_table()
    numbers = text.numbers
    blank = pc.equal(pc.utf8_trim_whitespace(lines), "").to_numpy(zero_copy_only=False)
    indented = pc.match_substring_regex(lines, r"^[ \t]").to_numpy(zero_copy_only=False)
    # a bad line (already reported) still shows where records start, so the records after it
    # keep their attributes; a bad header starts a record that has no usable time of its own
    header = ~blank & ~indented
    rec_of_line = np.cumsum(header) - 1  # -1: before the first header
    attr = indented & ~blank & ~text.bad
    orphan = attr & (rec_of_line < 0)
    if orphan.any():
        issues.lines("malformed", numbers[orphan], "attribute line before any record header")
    attr &= rec_of_line >= 0
    n_rec = int(header.sum())
    rec_bad = text.bad[header]  # records whose header line is bad: left out with it
    report.records += n_rec - int(rec_bad.sum())
    header_lines = numbers[header]

    parts = pc.extract_regex(
        pc.filter(lines, pa.array(attr)),
        r"^[ \t]+(?P<name>[A-Za-z0-9][A-Za-z0-9-]*)\s*=\s*(?P<value>.*?)\s*$",
    )
    ok = pc.is_valid(parts).to_numpy(zero_copy_only=False)
    if not ok.all():
        issues.lines("malformed", numbers[attr][~ok], "not an 'Attribute = value' line")
    names = pc.struct_field(parts, [0])
    values = pc.struct_field(parts, [1])
    quoted = pc.match_substring_regex(values, r'^".*"$')
    values = pc.if_else(quoted, pc.utf8_slice_codeunits(values, 1, -1), values)
    rec_attr = rec_of_line[attr]
    cols: dict[str, pa.Array] = {}
    for name in _ATTRS:
        sel = pc.fill_null(pc.equal(names, name), False)
        m = sel.to_numpy(zero_copy_only=False)
        cols[name] = _pivot(rec_attr[m], pc.filter(values, sel), n_rec)

    status = cols["Acct-Status-Type"]
    known = pc.is_in(status, value_set=pa.array(list(_KINDS))).to_numpy(zero_copy_only=False)
    restart = pc.is_in(status, value_set=pa.array(_RESTARTS)).to_numpy(zero_copy_only=False)
    known &= ~rec_bad
    restart &= ~rec_bad
    report.skipped += int((~known & ~restart & ~rec_bad).sum())

    # times
    header_text = _ws(pc.filter(lines, pa.array(header)))
    t_header = pc.strptime(header_text, "%a %b %d %H:%M:%S %Y", "ms", error_is_null=True)
    delay_ms = pc.multiply(pc.fill_null(_num(cols["Acct-Delay-Time"]), 0), 1000)
    server = pc.coalesce(pc.multiply(_num(cols["Timestamp"]), 1000), pc.cast(t_header, pa.int64()))
    received = pc.subtract(server, delay_ms)
    ev_raw = cols["Event-Timestamp"]
    ev_text = pc.strptime(
        _ws(pc.replace_substring_regex(pc.fill_null(ev_raw, ""), r"\s+(UTC|GMT)$", "")),
        "%b %d %Y %H:%M:%S",
        "ms",
        error_is_null=True,
    )
    event = pc.coalesce(pc.multiply(_num(ev_raw), 1000), pc.cast(ev_text, pa.int64()))
    ts = pc.coalesce(event, received)

    addr = pc.coalesce(cols["Framed-IP-Address"], cols["Framed-IPv6-Address"])
    sid = pc.coalesce(
        cols["Acct-Unique-Session-Id"],
        pc.binary_join_element_wise(
            pc.fill_null(cols["NAS-IP-Address"], ""), cols["Acct-Session-Id"], "/"
        ),
    )
    user = cols["User-Name"]
    missing = []
    for what, col in (
        ("time", ts),
        ("Framed-IP-Address", addr),
        ("Acct-Session-Id", sid),
        ("User-Name", user),
    ):
        bad = pc.is_null(col).to_numpy(zero_copy_only=False) & known
        if bad.any():
            issues.lines("malformed", header_lines[bad], f"accounting record without {what}")
        missing.append(bad)
    usable = known & ~np.logical_or.reduce(missing)
    nas = cols["NAS-IP-Address"]
    no_nas = restart & pc.is_null(nas).to_numpy(zero_copy_only=False)
    if no_nas.any():
        issues.lines(
            "malformed",
            header_lines[no_nas],
            "Accounting-On/Off without NAS-IP-Address: which sessions ended is unknown",
        )
    no_time = restart & ~no_nas & pc.is_null(ts).to_numpy(zero_copy_only=False)
    if no_time.any():
        issues.lines("malformed", header_lines[no_time], "Accounting-On/Off without a time")
    restart &= ~no_nas & ~no_time

    both = pc.and_(pc.is_valid(event), pc.is_valid(received)).to_numpy(zero_copy_only=False)
    diff = np.abs(pc.fill_null(pc.subtract(event, received), 0).to_numpy(zero_copy_only=False))
    skewed = both & usable & (diff > skew_s * 1000)
    if skewed.any():
        idx = np.flatnonzero(skewed)
        issues.add(
            "clock_skew",
            int(idx.size),
            [
                f"line {header_lines[i]}: Event-Timestamp differs from the server's time "
                f"by {diff[i] / 1000:g} s"
                for i in idx[:10]
            ],
        )

    kind = pc.take(
        pa.array(list(_KINDS.values()), pa.int8()),
        pc.index_in(status, value_set=pa.array(list(_KINDS))),
    )
    elapsed = pc.multiply(_num(cols["Acct-Session-Time"]), 1000)
    keep = pa.array(usable)
    ts_f = pc.filter(ts, keep)
    events = pa.table(
        {
            "sid": pc.filter(sid, keep),
            "ts": ts_f,
            "kind": pc.filter(kind, keep),
            "until": pc.add(ts_f, round(timeout_s * 1000)),
            "addr": pc.filter(addr, keep),
            "port_start": pa.nulls(int(usable.sum()), pa.uint16()),
            "port_end": pa.nulls(int(usable.sum()), pa.uint16()),
            "inside_addr": pa.nulls(int(usable.sum()), pa.string()),
            "ident": pc.filter(user, keep),
            "elapsed": pc.filter(elapsed, keep),
            "line": pa.array(header_lines[usable]),
        },
        schema=EVENT_SCHEMA,
    )
    if not restart.any():
        return events
    sel = pa.array(restart)
    return _restart_stops(
        events,
        pc.filter(nas, keep),
        pc.filter(nas, sel),
        pc.filter(ts, sel).to_numpy(zero_copy_only=False),
        header_lines[restart],
    )


def _restart_stops(
    events: pa.Table,
    event_nas: pa.Array,
    restart_nas: pa.Array,
    restart_ts: np.ndarray,
    restart_lines: np.ndarray,
) -> pa.Table:
    """``events`` plus an implied stop for each session that a later Accounting-On/Off of its
    NAS ended: the first restart at or after the session's last record, if that comes before
    the session timed out and the session has no Stop."""
    g = (
        events.append_column("nas", event_nas)
        .append_column("is_stop", pc.equal(events.column("kind"), STOP))
        .group_by("sid", use_threads=False)
        .aggregate(
            [
                ("ts", "max"),
                ("until", "max"),
                ("is_stop", "any"),
                ("nas", "min"),
                ("addr", "min"),
                ("ident", "min"),
            ]
        )
        .combine_chunks()
    )
    open_ = pc.and_(pc.invert(g.column("is_stop_any")), pc.is_valid(g.column("nas_min")))
    g = g.filter(open_)
    if g.num_rows == 0:
        return events
    # one dictionary for both sides, so equal NAS addresses get equal codes
    both = pc.dictionary_encode(pa.concat_arrays([restart_nas, g.column("nas_min").chunk(0)]))
    codes = both.indices.to_numpy().astype(np.int64)
    r_code, s_code = codes[: len(restart_nas)], codes[len(restart_nas) :]
    r_key = (r_code << _TIME_BITS) | restart_ts
    order = np.argsort(r_key, kind="stable")
    r_key, r_ts, r_line = r_key[order], restart_ts[order], restart_lines[order]
    last = g.column("ts_max").to_numpy()
    until = g.column("until_max").to_numpy()
    at = np.searchsorted(r_key, (s_code << _TIME_BITS) | last, side="left")
    found = at < len(r_key)
    at_c = np.minimum(at, len(r_key) - 1)
    ended = found & ((r_key[at_c] >> _TIME_BITS) == s_code) & (r_ts[at_c] < until)
    if not ended.any():
        return events
    idx = np.flatnonzero(ended)
    hit = at_c[idx]
    n = int(idx.size)
    take = pa.array(idx)
    stops = pa.table(
        {
            "sid": g.column("sid").take(take),
            "ts": pa.array(r_ts[hit], pa.int64()),
            "kind": pa.array(np.full(n, RESET, dtype=np.int8)),
            "until": pa.array(r_ts[hit], pa.int64()),
            "addr": g.column("addr_min").take(take),
            "port_start": pa.nulls(n, pa.uint16()),
            "port_end": pa.nulls(n, pa.uint16()),
            "inside_addr": pa.nulls(n, pa.string()),
            "ident": g.column("ident_min").take(take),
            "elapsed": pa.nulls(n, pa.int64()),
            "line": pa.array(r_line[hit], pa.int64()),
        },
        schema=EVENT_SCHEMA,
    )
    return pa.concat_tables([events, stops])
