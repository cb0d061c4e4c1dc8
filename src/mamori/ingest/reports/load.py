"""Store a parsed report as findings of the measure that acts on it.

* ``infected`` (Shadowserver sinkhole, X-ARF infected host, plain lists) → kind ``infected``, M5;
* ``takedown`` (a taken-down C&C server's victim log) → kind ``takedown``, M6 (emergency);
* ``vulnerable`` (NICT NOTICE-style lists, Shadowserver scans) → kind ``vulnerable``, M9.

A finding names an address, a port and a time, never a subscriber; ``method`` is
``report:<source>``. Finding ids are a digest of kind, source, address, port and time, so loading
the same report twice stores nothing new.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.governance import Governance
from mamori.ingest.reports.parse import BadRecord, ReportKind, ReportParse

__all__ = ["KIND_MEASURE", "LoadResult", "load_report"]

KIND_MEASURE = {
    ReportKind.INFECTED: "M5",
    ReportKind.TAKEDOWN: "M6",
    ReportKind.VULNERABLE: "M9",
}


@dataclass
class LoadResult:
    kind: str
    measure: str
    source: str
    records: int
    stored: int
    duplicates: int
    bad: list[BadRecord] = field(default_factory=list)


def _ids(kind: str, source: str, table: pa.Table) -> pa.Array:
    key = pc.binary_join_element_wise(
        pa.array([kind] * table.num_rows, pa.string()),
        pa.array([source] * table.num_rows, pa.string()),
        table.column("ip"),
        pc.fill_null(pc.cast(table.column("port"), pa.string()), ""),
        pc.cast(pc.cast(table.column("ts"), pa.int64()), pa.string()),
        "|",
    )
    # hashlib per id: there is no SHA in Arrow compute; ids are short and this is not a hot path
    # (a report is thousands of lines, not millions).
    return pa.array(
        [hashlib.sha256(k.encode()).hexdigest()[:32] for k in key.to_pylist()], pa.string()
    )


def load_report(
    gov: Governance,
    parsed: ReportParse,
    kind: ReportKind | str,
    *,
    actor: str,
    source: str,
    now: datetime | None = None,
) -> LoadResult:
    kind = ReportKind(kind)
    measure = KIND_MEASURE[kind]
    now = now or datetime.now(UTC)
    t = parsed.table
    source = source[:24]
    ids = _ids(kind.value, source, t)
    known = (
        gov.open(measure, "findings", ["finding_id", "kind"], actor)
        .table()
        .filter(f"kind = '{kind.value}'")
        .to_arrow_table()
        .column("finding_id")
        if t.num_rows
        else pa.chunked_array([], pa.string())
    )
    fresh = pc.invert(pc.is_in(ids, value_set=known.combine_chunks()))
    # duplicates inside the file too: keep the first of each id
    keep = pc.and_(fresh, pa.array(_first_occurrence(ids)))
    sel = t.filter(keep)
    sel_ids = ids.filter(keep)
    n = sel.num_rows
    label = pc.replace_substring_regex(
        pc.fill_null(sel.column("label"), ""), r"[^a-z0-9._:+-]", "_"
    )
    evidence = pc.binary_join_element_wise(
        pa.array(['{"source":"' + source.replace('"', "") + '","label":"'] * n, pa.string()),
        label,
        pa.array(['","line":'] * n, pa.string()),
        pc.cast(sel.column("line"), pa.string()),
        pa.array(["}"] * n, pa.string()),
        "",
    )
    findings = pa.table(
        {
            "detected": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
            "finding_id": sel_ids,
            "kind": pa.array([kind.value] * n, pa.string()),
            "method": pa.array([f"report:{source}"] * n, pa.string()),
            "ip": sel.column("ip"),
            "port": sel.column("port"),
            "protocol": sel.column("protocol"),
            "score": pa.array([1.0] * n, pa.float32()),
            "first_seen": sel.column("ts"),
            "last_seen": sel.column("ts"),
            "measure": pa.array([measure] * n, pa.string()),
            "evidence": evidence,
        }
    )
    if n:
        gov.write(
            measure,
            "findings",
            findings,
            actor,
            detail={
                "report": parsed.path.rsplit("/", 1)[-1][:200],
                "format": parsed.fmt.value,
                "records": parsed.records,
                "bad_records": len(parsed.bad),
            },
        )
    return LoadResult(
        kind=kind.value,
        measure=measure,
        source=source,
        records=parsed.records,
        stored=n,
        duplicates=t.num_rows - n,
        bad=list(parsed.bad),
    )


def _first_occurrence(ids: pa.Array) -> np.ndarray:
    """Whether each position holds the first occurrence of its value (vectorised)."""
    codes = pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    mask = np.zeros(len(codes), dtype=bool)
    mask[first] = True
    return mask
