"""Plain CSV allocations, one row per allocation, for systems with no log format of their own.

Header row required. Columns: ``start`` (required), ``end`` (empty: still held), ``addr``
(required), ``port_start`` / ``port_end`` (a CGNAT port block; empty: the whole address),
``subscriber_id`` or ``inside_addr`` (exactly one per row: a subscriber, or for a CGNAT port block
the inside address whose holder is the subscriber), ``session_id``. Times are ISO 8601 (no zone:
UTC) or seconds since the epoch. Other columns are ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.ingest.allocations.common import TS, IngestReport, Issues, iso_times_ms, read_csv_text

__all__ = ["parse_allocations_csv"]

_ADDR = r"^(\d+\.\d+\.\d+\.\d+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$"


_EMPTY = pa.table(
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


def _port(col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    empty = pc.equal(col, "")
    digits = pc.match_substring_regex(col, r"^\d{1,5}$")
    val = pc.cast(pc.if_else(digits, col, "0"), pa.int64())
    ok = pc.or_(empty, pc.and_(digits, pc.less_equal(val, 65535)))
    out = pc.if_else(pc.and_(digits, ok), val, pa.nulls(len(col), pa.int64())).cast(pa.uint16())
    return out, ok.to_numpy(zero_copy_only=False)


def parse_allocations_csv(path: Path, issues: Issues) -> pa.Table:
    """Allocation rows (not events: each row is already a session)."""
    report: IngestReport = issues.report
    table, numbers = read_csv_text(path, issues)
    names = table.column_names
    if not names:  # nothing but blank or bad lines: nothing to read
        return _EMPTY
    need = {"start", "addr"}
    if not need <= set(names) or not {"subscriber_id", "inside_addr"} & set(names):
        raise ValueError(
            f"{path}: a CSV of allocations needs a header with start, addr and subscriber_id "
            f"(or inside_addr); it has {', '.join(names)}"
        )
    n = table.num_rows
    report.records += len(numbers) + int(report.malformed)  # the bad lines were records too

    def col(name: str) -> pa.Array:
        if name in table.column_names:
            return pc.utf8_trim_whitespace(table.column(name).combine_chunks())
        return pa.array([""] * n, pa.string())

    start, bad_start = iso_times_ms(col("start"))
    end_txt = col("end")
    end_empty = pc.equal(end_txt, "").to_numpy(zero_copy_only=False)
    end, bad_end = iso_times_ms(end_txt)
    bad_end &= ~end_empty
    addr = col("addr")
    addr_ok = pc.match_substring_regex(addr, _ADDR).to_numpy(zero_copy_only=False)
    ps, ps_ok = _port(col("port_start"))
    pe, pe_ok = _port(col("port_end"))
    both_or_none = (pc.is_null(ps).to_numpy(zero_copy_only=False)) == (
        pc.is_null(pe).to_numpy(zero_copy_only=False)
    )
    sub = col("subscriber_id")
    inside = col("inside_addr")
    has_sub = pc.not_equal(sub, "").to_numpy(zero_copy_only=False)
    has_inside = pc.not_equal(inside, "").to_numpy(zero_copy_only=False)
    checks = [
        (bad_start, "start is not a time (ISO 8601 or epoch seconds)"),
        (bad_end, "end is not a time (ISO 8601 or epoch seconds)"),
        (~addr_ok, "addr is not an IP address"),
        (~(ps_ok & pe_ok & both_or_none), "port_start/port_end: both or neither, 0-65535"),
        (has_sub == has_inside, "needs exactly one of subscriber_id and inside_addr"),
        (~end_empty & ~bad_end & ~bad_start & (end < start), "end is before start"),
    ]
    keep = pa.array(~issues.malformed_rows(checks, numbers))
    null_s = pa.nulls(n, pa.string())
    out = pa.table(
        {
            "start": pa.array(start, pa.int64()).cast(TS),
            "end": pa.array(end, pa.int64(), mask=end_empty).cast(TS),
            "addr": addr,
            "port_start": ps,
            "port_end": pe,
            "subscriber_id": pc.if_else(pa.array(has_sub), sub, null_s),
            "session_id": pc.if_else(pc.equal(col("session_id"), ""), null_s, col("session_id")),
            "inside_addr": pc.if_else(pa.array(has_inside), inside, null_s),
        }
    ).filter(keep)
    report.sessions += out.num_rows
    return out
