"""The abuse desk's book of cases: what the desk did with each case, and the minimum that stays
when the subscriber's own records go.

A case's rows in the ``cases`` dataset name the subscriber, so governance stops returning them the
moment the subscriber opts out of the measure. The subscriber may still phone in with the case
number, so the book keeps, per case, what is not about their communications: the number, the
measure, when it was opened, and every status change, assignment and note the desk made, with
who and when. It never holds the subscriber id, an address, or the cause.

Each entry is appended to ``<store>/_state/cases/book.jsonl`` and audited (``case`` event with the
case id; the detail names the step and the status, never the note's text). Statuses are the
desk's: ``open`` → ``acknowledged`` → ``resolved`` (a resolved case can be reopened).

Retention (:meth:`CaseBook.prune`, run by ``mamori purge``): once governance no longer returns a
case's rows (its subscriber opted out, or the rows were purged), the book keeps only the minimum —
number, measure, dates, status — and drops the desk's notes and assignee, whose free text may say
more than that; such a case is dropped whole once its last entry is older than
``retention.cases`` days.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.compute as pc

from mamori.governance import AccessRefused, Governance

__all__ = ["STATUSES", "BookPrune", "CaseBook", "CaseEntry", "DeskCase"]

STATUSES = ("open", "acknowledged", "resolved")
NOTE_LEN = 2000


@dataclass(frozen=True)
class CaseEntry:
    ts: datetime
    case_id: str
    measure: str
    step: str  # opened | status | assign | note
    actor: str
    status: str | None = None
    assignee: str | None = None
    note: str | None = None
    opened: datetime | None = None


@dataclass
class DeskCase:
    """A case as the desk's book knows it (the latest status and assignee, every entry)."""

    case_id: str
    measure: str
    opened: datetime | None
    updated: datetime
    status: str = "open"
    assignee: str | None = None
    entries: list[CaseEntry] = field(default_factory=list)

    @property
    def notes(self) -> list[CaseEntry]:
        return [e for e in self.entries if e.step == "note"]


@dataclass(frozen=True)
class BookPrune:
    """What a prune removed (or would remove, in a dry run)."""

    notes: int  # notes and assignments of cases governance no longer returns
    cases: int  # such cases dropped whole, past retention


def _lines(entries: list[CaseEntry]) -> bytes:
    """The entries as JSON lines, as the book stores them (unset fields left out)."""
    return b"".join(
        json.dumps(
            {k: (v.isoformat() if isinstance(v, datetime) else v)
             for k, v in e.__dict__.items() if v is not None},
            ensure_ascii=False,
            sort_keys=True,
        ).encode()
        + b"\n"
        for e in entries
    )  # fmt: skip


class CaseBook:
    def __init__(self, gov: Governance) -> None:
        self._gov = gov
        d = gov.state_dir("cases")
        self.path = d / "book.jsonl"
        self._lock = d / ".book.lock"
        self._cache: tuple[int, int, dict[str, DeskCase]] | None = None

    # ------------------------------------------------------------------ writing

    def _append(self, entries: list[CaseEntry]) -> None:
        lines = _lines(entries)
        with self._lock.open("a") as lh:
            fcntl.flock(lh, fcntl.LOCK_EX)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "ab") as fh:
                fh.write(lines)
        for e in entries:
            detail: dict[str, Any] = {"step": e.step}
            if e.status:
                detail["state"] = e.status
            if e.assignee:
                detail["assignee"] = e.assignee
            self._gov.audit.append(
                actor=e.actor, event="case", measure=e.measure, case_id=e.case_id, detail=detail
            )

    def opened(self, cases: Iterable[tuple[str, str, datetime]], actor: str) -> int:
        """Record new cases ``(case_id, measure, opened)`` not in the book yet; returns how many."""
        known = self.cases()
        now = datetime.now(UTC)
        new = [
            CaseEntry(now, cid, measure, "opened", actor, status="open", opened=opened)
            for cid, measure, opened in cases
            if cid not in known
        ]
        if new:
            self._append(new)
        return len(new)

    def record(
        self,
        case_id: str,
        measure: str,
        actor: str,
        *,
        status: str | None = None,
        assignee: str | None = None,
        note: str | None = None,
        opened: datetime | None = None,
    ) -> list[CaseEntry]:
        """The desk's changes to a case: a status, an assignee (``""`` unassigns), a note."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r}: one of {', '.join(STATUSES)}")
        now = datetime.now(UTC)
        entries = []
        if case_id not in self.cases():
            entries.append(
                CaseEntry(now, case_id, measure, "opened", actor, status="open", opened=opened)
            )
        if status is not None:
            entries.append(CaseEntry(now, case_id, measure, "status", actor, status=status))
        if assignee is not None:
            entries.append(CaseEntry(now, case_id, measure, "assign", actor, assignee=assignee))
        if note:
            entries.append(CaseEntry(now, case_id, measure, "note", actor, note=note[:NOTE_LEN]))
        if entries:
            self._append(entries)
        return entries

    # ------------------------------------------------------------------ reading

    def cases(self) -> dict[str, DeskCase]:
        """Every case in the book, by id (read again only when the file changed)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        if self._cache is not None and self._cache[:2] == (st.st_size, st.st_mtime_ns):
            return self._cache[2]
        out: dict[str, DeskCase] = {}
        with self.path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                raw = json.loads(line)
                e = CaseEntry(
                    ts=datetime.fromisoformat(raw["ts"]),
                    case_id=raw["case_id"],
                    measure=raw["measure"],
                    step=raw["step"],
                    actor=raw["actor"],
                    status=raw.get("status"),
                    assignee=raw.get("assignee"),
                    note=raw.get("note"),
                    opened=datetime.fromisoformat(raw["opened"]) if raw.get("opened") else None,
                )
                c = out.get(e.case_id)
                if c is None:
                    c = out[e.case_id] = DeskCase(e.case_id, e.measure, e.opened, e.ts)
                c.entries.append(e)
                c.updated = e.ts
                if e.opened is not None and c.opened is None:
                    c.opened = e.opened
                if e.step == "status" and e.status:
                    c.status = e.status
                elif e.step == "assign":
                    c.assignee = e.assignee or None
        self._cache = (st.st_size, st.st_mtime_ns, out)
        return out

    def get(self, case_id: str) -> DeskCase | None:
        return self.cases().get(case_id)

    # ------------------------------------------------------------------ retention

    def _live(self, measures: set[str], actor: str) -> set[str] | None:
        """Case ids governance returns now under the book's measures (consent applied); None
        when one could not be read (then nothing is pruned: a refusal is not an opt-out)."""
        live: set[str] = set()
        for m in sorted(measures):
            if not self._gov.config.measure_enabled(m):
                continue
            try:
                grant = self._gov.open(m, "cases", ["case_id", "measure"], actor)
            except AccessRefused:
                return None
            try:
                t = grant.arrow()
            finally:
                grant.sandbox.close()
            t = t.filter(pc.equal(t.column("measure"), m))
            live.update(t.column("case_id").to_pylist())
        return live

    def prune(self, actor: str, *, now: datetime | None = None, dry_run: bool = False) -> BookPrune:
        """Apply retention to the book (see the module's docstring); audited as a ``purge``."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=self._gov.config.retention.cases)
        book = self.cases()
        live = self._live({c.measure for c in book.values()}, actor)
        if live is None:
            return BookPrune(0, 0)
        keep: list[CaseEntry] = []
        notes = dropped = 0
        for c in book.values():
            if c.case_id in live:
                keep += c.entries
                continue
            if c.updated < cutoff:
                dropped += 1
                continue
            for e in c.entries:
                if e.step in ("note", "assign"):
                    notes += 1
                else:
                    keep.append(e)
        if (notes or dropped) and not dry_run:
            self._rewrite(keep)
        self._gov.audit.append(
            actor=actor,
            event="purge" if not dry_run else "purge-dry-run",
            detail={
                "store": "case book",
                "notes": notes,
                "cases": dropped,
                "cutoff": cutoff.isoformat(),
            },
        )
        return BookPrune(notes, dropped)

    def _rewrite(self, entries: list[CaseEntry]) -> None:
        text = _lines(sorted(entries, key=lambda e: e.ts))
        with self._lock.open("a") as lh:
            fcntl.flock(lh, fcntl.LOCK_EX)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(text)
            os.replace(tmp, self.path)
        self._cache = None
