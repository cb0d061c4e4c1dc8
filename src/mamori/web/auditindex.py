"""The audit log as a table the console can filter and page through — every entry, not the last
few hundred.

The log is append-only, so the index reads only what was appended since it last looked (from the
byte offset it reached) and keeps the columns in memory; a log rewritten under it (shorter than
before) is read again from the start. Verification of the hash chain stays with
:meth:`mamori.governance.audit.AuditLog.verify`.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from mamori.governance import Governance

__all__ = ["AuditIndex", "audit_index"]

FIELDS = (
    "seq",
    "ts",
    "actor",
    "event",
    "measure",
    "legal_basis",
    "dataset",
    "columns",
    "case_id",
    "detail",
)
SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("ts", pa.timestamp("us", "UTC")),
        ("actor", pa.string()),
        ("event", pa.string()),
        ("measure", pa.string()),
        ("legal_basis", pa.string()),
        ("dataset", pa.string()),
        ("columns", pa.string()),
        ("case_id", pa.string()),
        ("detail", pa.string()),
    ]
)


class AuditIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._offset = 0
        self._cols: dict[str, list[Any]] = {f: [] for f in FIELDS}
        self._table: pa.Table | None = None

    def _reset(self) -> None:
        self._offset = 0
        self._cols = {f: [] for f in FIELDS}
        self._table = None

    def table(self) -> pa.Table:
        """Every entry so far (oldest first)."""
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                return SCHEMA.empty_table()
            if size < self._offset:
                self._reset()
            if size > self._offset:
                with self.path.open("rb") as fh:
                    fh.seek(self._offset)
                    chunk = fh.read(size - self._offset)
                end = chunk.rfind(b"\n") + 1  # only whole lines: a writer may be mid-line
                for line in chunk[:end].splitlines():
                    if not line.strip():
                        continue
                    obj = json.loads(line)
                    for f in FIELDS:
                        v = obj.get(f)
                        self._cols[f].append(datetime.fromisoformat(v) if f == "ts" else v)
                self._offset += end
                if end:
                    self._table = None
            if self._table is None:
                self._table = pa.table(
                    {f: pa.array(self._cols[f], SCHEMA.field(f).type) for f in FIELDS}
                )
            return self._table


_INDEXES: dict[Path, AuditIndex] = {}
_GUARD = threading.Lock()


def audit_index(gov: Governance) -> AuditIndex:
    """The index of ``gov``'s audit log (one per log file in this process)."""
    path = gov.audit.path
    with _GUARD:
        idx = _INDEXES.get(path)
        if idx is None:
            idx = _INDEXES[path] = AuditIndex(path)
        return idx


def proposers(gov: Governance) -> dict[str, str]:
    """Who proposed each action (from the audit entries of its ``proposed`` step)."""
    t = audit_index(gov).table()
    import pyarrow.compute as pc

    sel = t.filter(
        pc.and_(
            pc.and_(pc.equal(t.column("event"), "write"), pc.equal(t.column("dataset"), "actions")),
            pc.fill_null(pc.match_substring(t.column("detail"), '"step": "proposed"'), False),
        )
    )
    out: dict[str, str] = {}
    for actor, detail in zip(
        sel.column("actor").to_pylist(), sel.column("detail").to_pylist(), strict=True
    ):
        try:
            ids = json.loads(detail or "{}").get("action_ids", [])
        except ValueError:
            continue
        for i in ids:
            out.setdefault(str(i), str(actor))
    return out
