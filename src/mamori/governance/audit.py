"""Append-only, hash-chained audit log.

One JSON object per line in ``<store>/audit/audit.jsonl``, written in a canonical form (sorted keys,
no spaces). Each entry carries ``prev_hash``, the hash of the entry before it (64 zeros for the
first), and ``hash``, the SHA-256 of its own canonical form without ``hash``. ``HEAD`` beside the log
holds the sequence number and hash of the last entry, so cutting entries off the end is detected too.
Changing any byte, deleting, inserting or swapping lines breaks the chain at the first entry touched.

The log is never purged: it is what lets an auditor check that purges happened. Its details hold
counts and reasons, never communications data.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["GENESIS", "AuditEntry", "AuditLog", "Verification"]

GENESIS = "0" * 64
_FIELDS = (
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
    "prev_hash",
)


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    event: str
    measure: str | None
    legal_basis: str | None
    dataset: str | None
    columns: str | None
    case_id: str | None
    detail: str | None
    prev_hash: str
    hash: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AuditEntry:
        return cls(**{k: obj[k] for k in (*_FIELDS, "hash")})


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    broken_at: int | None = None  # line number (1-based) of the first bad entry
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.entries} entries, hash chain verified"
        return f"audit log BROKEN at entry {self.broken_at}: {self.reason}"


class AuditLog:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "audit.jsonl"
        self.head_path = directory / "HEAD"
        self.lock_path = directory / ".lock"

    def _tail(self) -> tuple[int, str]:
        """(seq, hash) of the last entry in the file, read from its end: backwards to the newline
        before it, then that line once (an attribution entry listing a million subscriber ids is
        10 MB; gathering it chunk by chunk in front of a growing buffer took a second)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with self.path.open("rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            while end > 0:  # the newline(s) ending the last entry
                fh.seek(end - 1)
                if fh.read(1) != b"\n":
                    break
                end -= 1
            if end == 0:
                return 0, GENESIS
            pos = start = end
            while pos > 0:
                step = min(1 << 16, pos)
                pos -= step
                fh.seek(pos)
                cut = fh.read(step).rfind(b"\n")
                if cut >= 0:
                    start = pos + cut + 1
                    break
            else:
                start = 0
            fh.seek(start)
            last = json.loads(fh.read(end - start))
            return int(last["seq"]), str(last["hash"])

    def append(
        self,
        *,
        actor: str,
        event: str,
        measure: str | None = None,
        legal_basis: str | None = None,
        dataset: str | None = None,
        columns: Sequence[str] = (),
        case_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            seq, prev = self._tail()
            body: dict[str, Any] = {
                "seq": seq + 1,
                "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
                "actor": actor,
                "event": event,
                "measure": measure,
                "legal_basis": legal_basis,
                "dataset": dataset,
                "columns": ",".join(columns) if columns else None,
                "case_id": case_id,
                "detail": json.dumps(detail, sort_keys=True, default=str) if detail else None,
                "prev_hash": prev,
            }
            body["hash"] = _digest(body)
            with self.path.open("ab") as fh:
                fh.write(_canonical(body) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            tmp = self.head_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"seq": body["seq"], "hash": body["hash"]}) + "\n")
            os.replace(tmp, self.head_path)
        return AuditEntry.from_json(body)

    def entries(self) -> Iterator[AuditEntry]:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for line in fh:
                yield AuditEntry.from_json(json.loads(line))

    def verify(self) -> Verification:
        prev = GENESIS
        count = 0
        if self.path.exists():
            with self.path.open("rb") as fh:
                for count, raw in enumerate(fh, start=1):
                    line = raw[:-1] if raw.endswith(b"\n") else raw
                    try:
                        obj = json.loads(line)
                        body = {k: obj[k] for k in _FIELDS}
                        claimed = obj["hash"]
                    except (ValueError, KeyError, TypeError):
                        return Verification(False, count - 1, count, "not a well-formed entry")
                    if not raw.endswith(b"\n"):
                        return Verification(False, count - 1, count, "entry is cut short")
                    if set(obj) != {*_FIELDS, "hash"}:
                        return Verification(False, count - 1, count, "unexpected fields")
                    if obj["seq"] != count:
                        return Verification(
                            False,
                            count - 1,
                            count,
                            f"sequence number {obj['seq']} where {count} was expected "
                            "(entries deleted, inserted or reordered)",
                        )
                    if obj["prev_hash"] != prev:
                        return Verification(
                            False,
                            count - 1,
                            count,
                            "prev_hash does not match the previous entry (chain broken)",
                        )
                    if _digest(body) != claimed or _canonical(obj) != line:
                        return Verification(False, count - 1, count, "entry content was altered")
                    prev = claimed
        head_seq, head_hash = 0, GENESIS
        if self.head_path.exists():
            try:
                head = json.loads(self.head_path.read_text())
                head_seq, head_hash = int(head["seq"]), str(head["hash"])
            except (ValueError, KeyError, TypeError):
                return Verification(False, count, count + 1, "HEAD file is unreadable")
        elif count:
            return Verification(False, count, count + 1, "HEAD file is missing")
        if head_seq != count or head_hash != prev:
            return Verification(
                False,
                count,
                min(head_seq, count) + 1 if head_seq > count else count,
                f"log ends at entry {count} but HEAD records entry {head_seq} "
                "(entries cut off the end, or HEAD altered)",
            )
        return Verification(True, count)
