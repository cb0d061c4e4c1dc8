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
    "hash",
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
        ("hash", pa.string()),  # the entry's place in the hash chain (verify: `audit verify`)
    ]
)


# Events that change no stored rows and no one's consent: everything else (a write, a consent
# change, a purge, a registry load, and any event this list does not know) may change what a
# read returns, and so ends what the console keeps of earlier reads (:mod:`mamori.web.grantcache`).
READ_ONLY_EVENTS = frozenset(
    {
        "access",
        "refused",
        "consent-read",
        "consent-contact",
        "consent-code",
        "consent-sso",
        "consent-sign-in",
        "login",
        "login-failed",
        "login-throttled",
        "login-refused",
        "logout",
        "account",
        "account-locked",
        "review",
        "case",
        "share-export",
        "share-publish",
        "model-trained",
        "notice",
        "action-flag",
    }
)


AFFECT_EVERY_READ = frozenset({"allocations", "subscribers", "consent"})
"""Datasets governance reads to apply consent to any other: a change to one may change any read."""


class AuditIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._offset = 0
        self._head = b""
        self._pending: dict[str, list[Any]] = {f: [] for f in FIELDS}
        self._chunks: list[pa.Table] = []
        self._table: pa.Table | None = None
        self._changes = 0
        self._everywhere = 0  # changes that may alter any read (consent, the registry)
        self._per_dataset: dict[str, int] = {}

    def _read_new(self) -> None:
        """Parse what was appended since the last look (whole lines only); the lock is held."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        with self.path.open("rb") as fh:
            # The log is append-only; one that shrank or whose start changed was rewritten
            # (tampered with, or restored): read it again from the start.
            head = fh.read(256)
            if size < self._offset or (self._offset and head != self._head):
                self._reset()
            self._head = head
            if size == self._offset:
                return
            fh.seek(self._offset)
            chunk = fh.read(size - self._offset)
        end = chunk.rfind(b"\n") + 1  # a writer may be mid-line
        for line in chunk[:end].splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                # a damaged line: `audit verify` reports it; the index skips it
                continue
            for f in FIELDS:
                v = obj.get(f)
                self._pending[f].append(datetime.fromisoformat(v) if f == "ts" else v)
            if obj.get("event") not in READ_ONLY_EVENTS:
                self._changes += 1
                ds = obj.get("dataset")
                if not ds or ds in AFFECT_EVERY_READ:
                    self._everywhere += 1
                else:
                    self._per_dataset[ds] = self._per_dataset.get(ds, 0) + 1
        self._offset += end

    def changes(self, dataset: str | None = None) -> int:
        """How many entries so far may have changed what a read returns (a version number of
        the store as governance serves it); with ``dataset``, what a read of that dataset
        returns: its own writes and purges, and every change that names no dataset or one that
        consent filtering reads (:data:`AFFECT_EVERY_READ`)."""
        with self._lock:
            self._read_new()
            if dataset is None:
                return self._changes
            return self._everywhere + self._per_dataset.get(dataset, 0)

    def table(self) -> pa.Table:
        """Every entry so far (oldest first). New entries are added as a chunk of their own,
        so a page view does not rebuild the whole log."""
        with self._lock:
            self._read_new()
            if self._pending["seq"]:
                self._chunks.append(
                    pa.table({f: pa.array(self._pending[f], SCHEMA.field(f).type) for f in FIELDS})
                )
                self._pending = {f: [] for f in FIELDS}
                if len(self._chunks) > 64:
                    self._chunks = [pa.concat_tables(self._chunks).combine_chunks()]
                self._table = None
            if self._table is None:
                self._table = (
                    pa.concat_tables(self._chunks) if self._chunks else SCHEMA.empty_table()
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
