"""The C&C list as CSV (one header line, the columns of :data:`ALLOWED_FIELDS`), and back.

Times are ISO 8601 UTC; an empty cell is a missing value. Reading uses Arrow's CSV reader with
invalid rows handed to a callback, so a broken line is counted and reported with its line number
and the good lines around it are kept.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mamori.share.c2list import ALLOWED_FIELDS, LIST_SCHEMA
from mamori.share.stix import ParseReport

__all__ = ["csv_to_list", "list_to_csv"]


def list_to_csv(table: pa.Table, *, withdrawn: pa.Table | None = None) -> bytes:
    """The list as CSV; with ``withdrawn`` rows, a ``withdrawn`` column marks them (a reader
    drops what it took of those endpoints)."""
    t = table.select(list(ALLOWED_FIELDS))
    if withdrawn is not None and withdrawn.num_rows:
        w = withdrawn.select(list(ALLOWED_FIELDS)).cast(t.schema)
        t = pa.concat_tables([t, w]).append_column(
            "withdrawn",
            pa.array([False] * t.num_rows + [True] * w.num_rows, pa.bool_()),
        )
    for name in ("first_seen", "last_seen"):
        # %S of a millisecond timestamp prints the fraction too: "…:05.123Z"
        col = pc.strftime(t[name], format="%Y-%m-%dT%H:%M:%SZ", locale="C")
        t = t.set_column(t.schema.get_field_index(name), name, col)
    buf = io.BytesIO()
    pacsv.write_csv(t, buf, pacsv.WriteOptions(quoting_style="needed"))
    return buf.getvalue()


_CHECKS = {
    "ip": r"^[0-9A-Fa-f.:]{2,45}$",
    "port": r"^\d{1,5}$",
    "protocol": r"^[a-z0-9]{1,8}$",
    "first_seen": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$",
    "last_seen": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$",
    "confidence": r"^(0(\.\d+)?|1(\.0+)?)$",
    "method": r"^.{1,32}$",
}


def csv_to_list(source: Path | bytes, report: ParseReport) -> pa.Table:
    """Rows of a CSV in :func:`list_to_csv`'s layout (extra columns are ignored).

    Every cell is read as text and checked with a vectorised pattern before conversion, so one
    bad cell costs its line, never the file.
    """
    data = source.read_bytes() if isinstance(source, Path) else source
    skipped: list[pacsv.InvalidRow] = []

    def bad(row: pacsv.InvalidRow) -> str:
        skipped.append(row)
        return "skip"

    try:
        t = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(use_threads=False),  # so bad rows carry line numbers
            parse_options=pacsv.ParseOptions(invalid_row_handler=bad),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(LIST_SCHEMA.names, pa.string()),
                include_columns=list(LIST_SCHEMA.names),
                include_missing_columns=True,
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        report.skip("file", f"cannot read as the C&C list CSV: {exc}")
        return LIST_SCHEMA.empty_table()
    for row in skipped:
        report.skip(f"line {row.number}" if row.number is not None else "a line", row.text[:80])
    if "ip" not in t.column_names or t.num_rows == 0:
        return LIST_SCHEMA.empty_table()
    if b"withdrawn" in data.split(b"\n", 1)[0]:
        # withdrawals are not C&C endpoints: leave them out of what is imported
        flags = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=lambda _row: "skip"),
            convert_options=pacsv.ConvertOptions(
                column_types={"withdrawn": pa.string()}, include_columns=["withdrawn"]
            ),
        ).column("withdrawn")
        if len(flags) == t.num_rows:
            t = t.filter(pc.invert(pc.fill_null(pc.equal(pc.utf8_lower(flags), "true"), False)))
    ok = np.ones(t.num_rows, dtype=bool)
    for name, pattern in _CHECKS.items():
        col = t[name].combine_chunks()
        good = pc.match_substring_regex(col, pattern)
        # a missing ip is bad; other missing cells are just missing
        good = pc.fill_null(good, name != "ip").to_numpy(zero_copy_only=False)
        if name == "port":
            ports = pc.cast(pc.if_else(good, col, None), pa.int64())
            good &= pc.fill_null(pc.less_equal(ports, 65535), True).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(ok & ~good)[:20]:
            report.skip(f"data row {int(i) + 1}", f"bad {name} {col[int(i)].as_py()!r}")
        report.skipped += max(0, int((ok & ~good).sum()) - 20)
        ok &= good
    t = t.filter(pa.array(ok))
    cols: dict[str, pa.Array | pa.ChunkedArray] = {}
    for f in LIST_SCHEMA:
        col = t[f.name]
        if f.name in ("first_seen", "last_seen"):
            col = pc.cast(col, pa.timestamp("ns", tz="UTC")).cast(f.type, safe=False)
        cols[f.name] = col.cast(f.type)
    report.rows += t.num_rows
    return pa.table(cols, schema=LIST_SCHEMA)
