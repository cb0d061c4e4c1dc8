"""What every allocation format shares: the report, subscriber-identity mapping, time parsing and
turning accounting events into sessions.

A format parser produces *events*, one per log record, as an Arrow table:

====================  ==========================================================================
``sid``               session key (accounting session, lease, port block)
``ts``                event time, ms since the epoch (int64)
``kind``              0 start / allocation, 1 interim / renewal, 2 stop / release, 3 ended by the
                      NAS restarting (RADIUS Accounting-On/Off), an implied stop
``until``             how long this record vouches for the session (ms): the lease expiry for DHCP,
                      ``ts`` + the session timeout for RADIUS and CGNAT
``addr``              the address handed out (public address for a CGNAT port block)
``port_start/_end``   the CGNAT port block (null: the whole address)
``inside_addr``       CGNAT inside address (null otherwise)
``ident``             the subscriber key the log names (User-Name, MAC …), null for CGNAT
``elapsed``           ms since the session started, when the record says (Acct-Session-Time)
``line``              line number in the file, for reports
====================  ==========================================================================

:func:`build_sessions` turns them into allocation rows: a session starts at its Start (or, without
one, at the earliest time its records imply), ends at its Stop; without a Stop it is closed by the
next allocation of the same address (and port block) or when its last record stops vouching for it
(the timeout, or the lease expiry). Overlapping holders of one address are counted, with examples,
and left as they are: attribution answers "ambiguous" there rather than guess.
"""

from __future__ import annotations

import csv
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import BaseModel, Field

from mamori.ingest.textlines import MAX_LINE, Lines, check_text, split_lines

__all__ = [
    "EVENT_SCHEMA",
    "IngestReport",
    "Issues",
    "SubscriberMap",
    "build_sessions",
    "iso_times_ms",
    "port_block_events",
    "read_csv_text",
    "read_text",
]

log = logging.getLogger(__name__)

TS = pa.timestamp("ms", tz="UTC")
START, INTERIM, STOP, RESET = 0, 1, 2, 3
EXAMPLES = 10
EVENT_SCHEMA = pa.schema(
    [
        ("sid", pa.string()),
        ("ts", pa.int64()),
        ("kind", pa.int8()),
        ("until", pa.int64()),
        ("addr", pa.string()),
        ("port_start", pa.uint16()),
        ("port_end", pa.uint16()),
        ("inside_addr", pa.string()),
        ("ident", pa.string()),
        ("elapsed", pa.int64()),
        ("line", pa.int64()),
    ]
)


class IngestReport(BaseModel):
    """What a load did. Every problem is counted; ``examples`` holds the first few of each kind,
    with line numbers."""

    format: str
    file: str
    lines: int = 0
    records: int = 0
    skipped: int = Field(default=0, description="records of other kinds (Accounting-On, …)")
    malformed: int = 0
    unmapped: int = Field(default=0, description="sessions whose subscriber key maps to nobody")
    sessions: int = 0
    rows_stored: int = 0
    closed_by_stop: int = 0
    closed_by_next: int = Field(default=0, description="no Stop: the address was given out again")
    closed_by_timeout: int = Field(default=0, description="no Stop: timeout or lease expiry")
    closed_by_nas_restart: int = Field(
        default=0, description="no Stop: the NAS said it restarted (Accounting-On/Off)"
    )
    open_at_end: int = Field(
        default=0, description="of those, still within the timeout when the log ends"
    )
    overlaps: int = Field(default=0, description="sessions overlapping another holder's")
    clock_skew: int = Field(default=0, description="records whose clocks disagree")
    examples: dict[str, list[str]] = Field(default_factory=dict)

    def problems(self) -> int:
        return self.malformed + self.unmapped + self.overlaps + self.clock_skew


_LINE_NO = re.compile(r"line (\d+)")


def _line_of(example: str) -> int:
    m = _LINE_NO.match(example)
    return int(m.group(1)) if m else 1 << 62


class Issues:
    """Counts problems into a report and keeps (and logs) the first few of each kind."""

    def __init__(self, report: IngestReport) -> None:
        self.report = report

    def add(self, kind: str, count: int, examples: list[str]) -> None:
        if not count:
            return
        setattr(self.report, kind, getattr(self.report, kind) + count)
        kept = self.report.examples.setdefault(kind, [])
        for text in examples[: max(0, EXAMPLES - len(kept))]:
            kept.append(text)
            log.warning("%s %s: %s", self.report.file, kind, text)
        kept.sort(key=_line_of)  # problems are found check by check: show them in file order

    def malformed_rows(
        self, checks: list[tuple[np.ndarray, str]], line_numbers: np.ndarray
    ) -> np.ndarray:
        """Rows failing any of ``checks`` (mask, reason), each reported once — under the first
        check it fails — as malformed at its line number; returns the mask of bad rows."""
        bad = np.zeros(len(line_numbers), dtype=bool)
        for mask, why in checks:
            mask = mask & ~bad
            if mask.any():
                self.lines("malformed", line_numbers[mask], why)
            bad |= mask
        return bad

    def lines(self, kind: str, line_numbers: np.ndarray, why: str) -> None:
        """``kind`` problems at these line numbers, all for the same reason."""
        self.add(
            kind, int(line_numbers.size), [f"line {n}: {why}" for n in line_numbers[:EXAMPLES]]
        )


def read_text(path: Path, issues: Issues) -> Lines:
    """The file's lines (:mod:`mamori.ingest.textlines`); lines that are not text or are too
    long are reported as malformed with their numbers, and the parser leaves them out. Raises
    :class:`~mamori.ingest.textlines.NotText` when no line is text at all."""
    data = path.read_bytes()
    lines = split_lines(data)
    check_text(lines, data, str(path))
    issues.report.lines += len(lines)
    for numbers, why in lines.reasons:
        issues.lines("malformed", numbers, why)
    return lines


def read_csv_text(path: Path, issues: Issues) -> tuple[pa.Table, np.ndarray]:
    """A CSV file with a header line: every column as text, and each row's line number. Bad
    lines (see :func:`read_text`), and rows with the wrong number of fields, are reported as
    malformed with their line numbers and skipped; blank lines are ignored. Records never span
    lines in these formats (a quoted line break ends the row too)."""
    lines = read_text(path, issues)
    good, numbers = lines.good()
    # a carriage return inside a line ends a row for the CSV reader, and a quote left open runs
    # a row on over the lines after it: either would take other lines with it
    cr = _np_mask(pc.match_substring(good, "\r"))
    if cr.any():
        issues.lines("malformed", numbers[cr], "a carriage return inside the line")
    quote = _np_mask(pc.equal(pc.bit_wise_and(pc.count_substring(good, '"'), 1), 1)) & ~cr
    if quote.any():
        issues.lines("malformed", numbers[quote], "a quote left open")
    nonblank = _np_mask(pc.not_equal(pc.utf8_trim_whitespace(good), "")) & ~cr & ~quote
    good, numbers = pc.filter(good, pa.array(nonblank)), numbers[nonblank]
    if not len(good):
        return pa.table({}), np.zeros(0, dtype=np.int64)
    try:
        header = next(csv.reader([good[0].as_py()]), [])
    except csv.Error as exc:
        raise ValueError(f"{path}: line {numbers[0]}, the header, is not CSV: {exc}") from None
    names = [c.strip() for c in header]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{path}: the header names {', '.join(map(repr, twice))} twice")
    bad_rows: list[int] = []

    def invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row.number or 0)
        return "skip"

    good = good.cast(pa.large_string())  # joined, the lines may pass 2 GiB
    whole = pc.binary_join(
        pa.LargeListArray.from_arrays(pa.array([0, len(good)], pa.int64()), good),
        pa.scalar("\n", pa.large_string()),
    )
    try:
        table = pacsv.read_csv(
            pa.BufferReader(whole[0].as_buffer()),
            read_options=pacsv.ReadOptions(
                use_threads=False, column_names=names, skip_rows=1, block_size=4 * MAX_LINE
            ),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:  # every line is checked before: a reader limit, not a row
        raise ValueError(f"{path}: cannot read as CSV: {exc}") from None
    rows = numbers[1:]
    if bad_rows:
        bad = numbers[np.asarray(bad_rows, dtype=np.int64) - 1]
        issues.lines("malformed", bad, "wrong number of fields")
        rows = rows[~np.isin(rows, bad)]
    if len(rows) != table.num_rows:  # a line the checks above let through spanned rows
        raise ValueError(f"{path}: cannot read as CSV: its rows do not follow its lines")
    return table, rows


def _np_mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


_ISO = r"^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,9})?)?)?(Z|[+-]\d\d:?\d\d)?$"
_ZONE = r"(Z|[+-]\d\d:?\d\d)$"


def iso_times_ms(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """ISO 8601 (a time without a zone is UTC) or epoch seconds → (ms int64, bad mask)."""
    values = pc.utf8_trim_whitespace(values.cast(pa.string()))
    n = len(values)
    out = np.zeros(n, dtype=np.int64)
    bad = np.ones(n, dtype=bool)
    epoch = pc.fill_null(pc.match_substring_regex(values, r"^\d+(\.\d+)?$"), False)
    e = epoch.to_numpy(zero_copy_only=False)
    if e.any():
        secs = pc.filter(values, epoch).cast(pa.float64()).to_numpy()
        out[e] = np.round(secs * 1000).astype(np.int64)
        bad[e] = False
    iso = pc.fill_null(pc.match_substring_regex(values, _ISO), False)
    i = iso.to_numpy(zero_copy_only=False)
    if i.any():
        sub = pc.filter(values, iso)
        zoned = pc.fill_null(pc.match_substring_regex(sub, _ZONE), False).to_numpy(
            zero_copy_only=False
        )
        ms = np.zeros(len(sub), dtype=np.int64)
        ok = np.ones(len(sub), dtype=bool)
        for mask, tz in ((zoned, True), (~zoned, False)):
            if not mask.any():
                continue
            part = pc.filter(sub, pa.array(mask))
            try:
                if tz:
                    t = part.cast(TS)
                else:
                    t = pc.assume_timezone(part.cast(pa.timestamp("ms")), "UTC")
                ms[mask] = t.cast(pa.int64()).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid:  # an impossible date among them: one by one
                idx = np.flatnonzero(mask)
                for j, text in zip(idx.tolist(), part.to_pylist(), strict=True):
                    try:
                        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
                    except ValueError:
                        ok[j] = False
                        continue
                    d = d if d.tzinfo else d.replace(tzinfo=UTC)
                    ms[j] = int(d.timestamp() * 1000)
        out[i] = ms
        bad[i] = ~ok
    return out, bad


class SubscriberMap(BaseModel):
    """How a log's subscriber key becomes a subscriber id: optionally a regular expression
    (its first group, or the group named ``id``, is kept), then optionally a lookup table.
    Without either, the key is the id."""

    pattern: str | None = None
    table: dict[str, str] | None = None

    @classmethod
    def from_csv(cls, path: Path, key_column: str, *, pattern: str | None = None) -> SubscriberMap:
        """A lookup table from a CSV with a ``subscriber_id`` column and ``key_column``."""
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "subscriber_id" not in fields or key_column not in fields:
                raise ValueError(
                    f"{path}: a subscriber map needs columns subscriber_id and {key_column} "
                    f"(it has {', '.join(fields) or 'none'})"
                )
            table = {r[key_column]: r["subscriber_id"] for r in reader if r.get(key_column)}
        return cls(pattern=pattern, table=table)

    def apply(self, keys: pa.Array) -> pa.Array:
        """Subscriber ids for ``keys``; null where the key maps to nobody."""
        out = keys.cast(pa.string())
        if self.pattern:
            rx = re.compile(self.pattern)
            if "id" in rx.groupindex:
                pattern = self.pattern
            elif rx.groups:
                # name the first plain group, so Arrow can extract it
                pattern = re.sub(r"(?<!\\)\((?!\?)", "(?P<id>", self.pattern, count=1)
            else:
                pattern = f"(?P<id>{self.pattern})"
            fields = pc.extract_regex(out, pattern)
            out = pc.struct_field(fields, [list(re.compile(pattern).groupindex).index("id")])
        if self.table is not None:
            keys_arr = pa.array(list(self.table), pa.string())
            vals = pa.array(list(self.table.values()), pa.string())
            out = pc.take(vals, pc.index_in(out, value_set=keys_arr))
        return out


def _examples_rows(tbl: pa.Table, idx: np.ndarray, fmt: str) -> list[str]:
    rows = tbl.take(pa.array(idx[:EXAMPLES])).to_pylist()
    return [fmt.format(**r) for r in rows]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def port_block_events(
    ts: np.ndarray,
    kind: np.ndarray,
    public: pa.Array,
    port_start: pa.Array,
    port_end: pa.Array,
    inside: pa.Array,
    line: np.ndarray,
    *,
    timeout_ms: int,
) -> pa.Table:
    """CGNAT port-block records (allocation / interim / release of ``public:port_start-port_end``
    to ``inside`` at ``ts`` ms) → events. A block's session runs from a record of its
    (public, block, inside) slot to the next release of that slot, or to an allocation of the
    block to the same inside address again after another inside address was given it (a log that
    lost the releases in between); at one instant the allocation sorts first. Shared by every
    CGNAT log format, so they all pair records alike."""
    n = len(ts)
    if not n:
        return EVENT_SCHEMA.empty_table()
    lo_s, hi_s = pc.cast(port_start, pa.string()), pc.cast(port_end, pa.string())
    block = pc.binary_join_element_wise(public, lo_s, hi_s, "|")
    slot = pc.binary_join_element_wise(block, inside, "|")
    if isinstance(slot, pa.ChunkedArray):
        slot, block = slot.combine_chunks(), block.combine_chunks()
    codes = pc.dictionary_encode(slot).indices.to_numpy()
    holders = _holder_changes(pc.dictionary_encode(block).indices.to_numpy(), codes, kind, ts)
    order = np.lexsort((kind == STOP, ts, codes))  # at one instant: allocation first
    c_o, k_o, t_o, h_o = codes[order], kind[order], ts[order], holders[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (
        (c_o[1:] != c_o[:-1]) | (k_o[:-1] == STOP) | ((k_o[1:] == START) & (h_o[1:] != h_o[:-1]))
    )
    first = np.flatnonzero(new)
    start_of = np.repeat(first, np.diff(np.r_[first, n]))
    sid = pc.binary_join_element_wise(
        pc.take(slot, pa.array(order)), pa.array(t_o // 1000).cast(pa.string()), "@"
    )
    sid = pc.take(sid, pa.array(start_of))
    take = pa.array(order)
    return pa.table(
        {
            "sid": sid,
            "ts": pa.array(t_o, pa.int64()),
            "kind": pa.array(k_o, pa.int8()),
            "until": pa.array(t_o + timeout_ms, pa.int64()),
            "addr": pc.take(public, take),
            "port_start": pc.take(port_start, take).cast(pa.uint16()),
            "port_end": pc.take(port_end, take).cast(pa.uint16()),
            "inside_addr": pc.take(inside, take),
            "ident": pa.nulls(n, pa.string()),
            "elapsed": pa.nulls(n, pa.int64()),
            "line": pa.array(np.asarray(line, dtype=np.int64)[order]),
        },
        schema=EVENT_SCHEMA,
    )


def _holder_changes(
    block: np.ndarray, slot: np.ndarray, kind: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """Per record, how many times its public block had been allocated to a different inside
    address than the allocation before (counted in time order over all blocks): two records of
    one slot with different counts have another holder's allocation between them."""
    order = np.lexsort((kind == STOP, ts, block))
    b, s, start = block[order], slot[order], kind[order] == START
    pos = np.arange(len(order))
    last = np.maximum.accumulate(np.where(start, pos, -1))  # latest allocation so far
    prev = np.r_[-1, last[:-1]]  # the allocation before each record
    safe = np.maximum(prev, 0)
    changed = start & (prev >= 0) & (b[safe] == b) & (s[safe] != s)
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.cumsum(changed)
    return out


def build_sessions(
    events: pa.Table, issues: Issues, *, subscribers: SubscriberMap | None = None
) -> pa.Table:
    """Events → allocation rows (start, end, addr, port_start, port_end, subscriber_id,
    session_id, inside_addr), counting how each session was closed and the overlaps."""
    report = issues.report
    empty = pa.table(
        {
            "start": pa.array([], TS),
            "end": pa.array([], TS),
            "addr": pa.array([], pa.string()),
            "port_start": pa.array([], pa.uint16()),
            "port_end": pa.array([], pa.uint16()),
            "subscriber_id": pa.array([], pa.string()),
            "session_id": pa.array([], pa.string()),
            "inside_addr": pa.array([], pa.string()),
        }
    )
    if events.num_rows == 0:
        return empty
    kind = events.column("kind")
    ts = events.column("ts")
    null64 = pa.nulls(events.num_rows, pa.int64())
    ev = (
        events.append_column("t_start", pc.if_else(pc.equal(kind, START), ts, null64))
        .append_column("t_stop", pc.if_else(pc.greater_equal(kind, STOP), ts, null64))
        .append_column("t_reset", pc.if_else(pc.equal(kind, RESET), ts, null64))
    )
    ev = ev.append_column("t_implied", pc.subtract(ts, events.column("elapsed")))
    g = ev.group_by("sid", use_threads=False).aggregate(
        [
            ("t_start", "min"),
            ("t_stop", "min"),
            ("t_reset", "min"),
            ("t_implied", "min"),
            ("ts", "min"),
            ("ts", "max"),
            ("until", "max"),
            ("addr", "min"),
            ("addr", "count_distinct"),
            ("port_start", "min"),
            ("port_end", "min"),
            ("inside_addr", "min"),
            ("ident", "min"),
            ("ident", "count_distinct"),
            ("line", "min"),
            ("kind", "min"),
        ]
    )
    g = g.combine_chunks()
    # a release or reclamation with nothing before it: when it began is unknown, and it must not
    # close the session of whoever was given the address next either
    only_stop = pc.and_(
        pc.equal(g.column("kind_min"), STOP), pc.is_null(g.column("t_implied_min"))
    ).combine_chunks()
    if pc.any(only_stop).as_py():
        stray = g.column("line_min").combine_chunks().filter(only_stop).to_numpy()
        issues.lines("skipped", np.sort(stray), "a release without its allocation (skipped)")
        g = g.filter(pc.invert(only_stop))
        if g.num_rows == 0:
            return empty

    def gcol(name: str) -> pa.Array:
        return g.column(name).combine_chunks()

    changed = pc.or_(
        pc.greater(gcol("addr_count_distinct"), 1),
        pc.greater(gcol("ident_count_distinct"), 1),
    ).to_numpy(zero_copy_only=False)
    if changed.any():
        idx = np.flatnonzero(changed)
        lines = gcol("line_min").to_numpy()[idx]
        issues.lines(
            "malformed",
            lines,
            "records of one session name different addresses or users (first used)",
        )
    implied = pc.min_element_wise(gcol("ts_min"), gcol("t_implied_min"))
    start = pc.coalesce(gcol("t_start_min"), implied).to_numpy(zero_copy_only=False)
    stop_col = gcol("t_stop_min")
    has_stop = pc.is_valid(stop_col).to_numpy(zero_copy_only=False)
    stop = pc.fill_null(stop_col, 0).to_numpy(zero_copy_only=False)
    last = gcol("ts_max").to_numpy()
    until = gcol("until_max").to_numpy()
    addr = gcol("addr_min")
    ps = gcol("port_start_min")
    pe = gcol("port_end_min")
    lines = gcol("line_min").to_numpy()

    # order by (address, block, start) to find the next allocation of the same slot
    key = pc.binary_join_element_wise(
        addr,
        pc.cast(pc.fill_null(ps, 0), pa.string()),
        pc.cast(pc.fill_null(pe, 0), pa.string()),
        "|",
    )
    order = np.lexsort((lines, start, pc.dictionary_encode(key).indices.to_numpy()))
    key_codes = pc.dictionary_encode(key).indices.to_numpy()[order]
    start_o, last_o, until_o = start[order], last[order], until[order]
    stop_o, has_stop_o = stop[order], has_stop[order]
    same_next = np.zeros(len(order), dtype=bool)
    same_next[:-1] = key_codes[1:] == key_codes[:-1]
    next_start = np.zeros(len(order), dtype=np.int64)
    next_start[:-1] = start_o[1:]

    end_o = np.where(has_stop_o, stop_o, until_o)
    by_next = ~has_stop_o & same_next & (next_start < until_o)
    # the next holder appeared while this session still sent records: keep what we saw (the
    # overlap is reported below) instead of cutting it before its own last record
    end_o = np.where(by_next, np.maximum(next_start, last_o), end_o)
    stop_before_start = has_stop_o & (stop_o < start_o)
    if stop_before_start.any():
        issues.lines(
            "clock_skew",
            lines[order][stop_before_start],
            "Stop earlier than the session's start (clocks disagree); session kept as an instant",
        )
        end_o = np.where(stop_before_start, start_o, end_o)
    file_end = int(events.column("ts").to_numpy().max())
    timed_out = ~has_stop_o & ~by_next
    # a NAS restart ends a session only when no real Stop came first
    reset_col = gcol("t_reset_min")
    by_reset = pc.fill_null(pc.equal(reset_col, stop_col), False).to_numpy(zero_copy_only=False)
    by_reset_o = by_reset[order]
    report.closed_by_stop += int((has_stop_o & ~by_reset_o).sum())
    report.closed_by_nas_restart += int(by_reset_o.sum())
    report.closed_by_next += int(by_next.sum())
    report.closed_by_timeout += int(timed_out.sum())
    report.open_at_end += int((timed_out & (until_o > file_end)).sum())

    sub_raw = gcol("ident_min")
    inside = gcol("inside_addr_min")
    subscriber = subscribers.apply(sub_raw) if subscribers is not None else sub_raw
    unmapped = pc.and_(pc.is_valid(sub_raw), pc.is_null(subscriber)).to_numpy(zero_copy_only=False)
    neither = pc.and_(pc.is_null(subscriber), pc.is_null(inside)).to_numpy(zero_copy_only=False)
    out = pa.table(
        {
            "start": pa.array(start_o, pa.int64()).cast(TS),
            "end": pa.array(end_o, pa.int64()).cast(TS),
            "addr": addr.take(pa.array(order)),
            "port_start": ps.take(pa.array(order)),
            "port_end": pe.take(pa.array(order)),
            "subscriber_id": subscriber.take(pa.array(order)),
            "session_id": gcol("sid").take(pa.array(order)),
            "inside_addr": inside.take(pa.array(order)),
            "_line": pa.array(lines[order]),
            "_ident": sub_raw.take(pa.array(order)),
        }
    )
    # overlaps between consecutive sessions of one slot with different holders
    holder = pc.coalesce(
        out.column("subscriber_id"), out.column("inside_addr"), out.column("_ident")
    ).combine_chunks()
    h = pc.dictionary_encode(holder).indices.to_numpy(zero_copy_only=False)
    ov = np.zeros(len(order), dtype=bool)
    ov[1:] = same_next[:-1] & (start_o[1:] < end_o[:-1]) & (h[1:] != h[:-1])
    if ov.any():
        idx = np.flatnonzero(ov)
        prev_lines = lines[order][idx - 1]
        this_lines = lines[order][idx]
        overlap_s = (end_o[idx - 1] - start_o[idx]) / 1000
        addrs = out.column("addr").take(pa.array(idx)).to_pylist()
        issues.add(
            "overlaps",
            int(idx.size),
            [
                f"{a}: session from line {p} still held {s:g} s after another holder's session "
                f"(line {t}) began at {_iso(int(st))}"
                for a, p, t, s, st in zip(
                    addrs[:EXAMPLES],
                    prev_lines[:EXAMPLES],
                    this_lines[:EXAMPLES],
                    overlap_s[:EXAMPLES],
                    start_o[idx][:EXAMPLES],
                    strict=False,
                )
            ],
        )
    unmapped_o = unmapped[order]
    if unmapped_o.any():
        idx = np.flatnonzero(unmapped_o)
        issues.add(
            "unmapped",
            int(idx.size),
            _examples_rows(
                out, idx, "line {_line}: subscriber key {_ident!r} maps to no subscriber id"
            ),
        )
    keep = ~(unmapped_o | neither[order])
    report.sessions += int(keep.sum())
    return out.filter(pa.array(keep)).drop_columns(["_line", "_ident"])
