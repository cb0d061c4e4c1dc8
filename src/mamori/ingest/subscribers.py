"""The subscriber directory (the ISP's customer database export) → the ``subscribers`` dataset.

A CSV with a header. ``subscriber_id`` is required; ``contract``, ``email`` and ``language`` (or
``lang``) are kept; ``updated`` (ISO 8601) says when the entry was recorded (default: the time of
the load). Other columns (``user_name`` …) are not stored: the directory keeps only what alerts
need. Optionally a column listing measures a subscriber opted out of (``M5;M7``) is recorded in the
consent registry, one audited change per subscriber and measure.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mamori.governance import ConsentError, Governance
from mamori.ingest.allocations.common import TS, IngestReport, Issues, iso_times_ms, read_csv_text

__all__ = ["SubscribersReport", "load_subscribers"]

_LIMITS = {"subscriber_id": 128, "contract": 64, "email": 254, "language": 8}


class SubscribersReport(IngestReport):
    consent_changes: int = Field(default=0, description="opt-outs recorded in the registry")


def load_subscribers(
    gov: Governance,
    path: Path,
    *,
    actor: str,
    updated: datetime | None = None,
    opted_out_column: str | None = None,
    channel: str = "api",
    dry_run: bool = False,
) -> SubscribersReport:
    report = SubscribersReport(format="subscribers", file=str(path))
    issues = Issues(report)
    table, numbers = read_csv_text(path, issues)
    names = table.column_names
    if names and "subscriber_id" not in names:
        raise ValueError(f"{path}: the directory needs a subscriber_id column (has {names})")
    if names and opted_out_column and opted_out_column not in names:
        raise ValueError(f"{path}: no column {opted_out_column!r} (has {', '.join(names)})")
    n = table.num_rows
    report.records = len(numbers) + report.malformed  # the bad lines were records too

    def col(*candidates: str) -> pa.Array:
        for name in candidates:
            if name in table.column_names:
                return pc.utf8_trim_whitespace(table.column(name).combine_chunks())
        return pa.array([""] * n, pa.string())

    cols = {
        "subscriber_id": col("subscriber_id"),
        "contract": col("contract"),
        "email": col("email"),
        "language": col("language", "lang"),
    }
    now = updated or datetime.now(UTC)
    upd_txt = col("updated")
    upd_empty = pc.equal(upd_txt, "").to_numpy(zero_copy_only=False)
    upd, upd_bad = iso_times_ms(upd_txt)
    upd = np.where(upd_empty, int(now.timestamp() * 1000), upd)
    checks = [
        (pc.equal(cols["subscriber_id"], "").to_numpy(zero_copy_only=False), "no subscriber_id"),
        (upd_bad & ~upd_empty, "updated is not a time"),
    ]
    for name, limit in _LIMITS.items():
        too_long = pc.greater(pc.utf8_length(cols[name]), limit).to_numpy(zero_copy_only=False)
        checks.append((too_long, f"{name} longer than {limit} characters"))
    keep = pa.array(~issues.malformed_rows(checks, numbers))
    null_s = pa.nulls(n, pa.string())
    out = pa.table(
        {
            "updated": pa.array(upd, pa.int64()).cast(TS),
            **{
                k: (v if k == "subscriber_id" else pc.if_else(pc.equal(v, ""), null_s, v))
                for k, v in cols.items()
            },
        }
    ).filter(keep)
    report.sessions = out.num_rows
    if dry_run:
        return report
    if out.num_rows:
        gov.write_registry("subscribers", out, actor, source=path.name)
        report.rows_stored = out.num_rows
    if opted_out_column:
        subs = pc.filter(cols["subscriber_id"], keep).to_pylist()
        outs = pc.filter(col(opted_out_column), keep).to_pylist()
        for sub, measures in zip(subs, outs, strict=True):
            for m in filter(None, (x.strip().upper() for x in measures.split(";"))):
                try:
                    gov.consent.set(
                        sub, m, False, actor=actor, channel=channel, note=f"from {path.name}"
                    )
                except ConsentError as exc:
                    issues.add("malformed", 1, [f"subscriber {sub}: {exc}"])
                    continue
                report.consent_changes += 1
    return report
