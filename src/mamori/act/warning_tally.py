"""What the warning page (M8) records, and how those counts reach the audit log.

M8 allows a count per day, category and event (shown, continued) and nothing else: no address,
no site name, no time of a visit. The counts live in ``counts.json`` in the warning page's state
directory. So that the transparency report's "warnings shown" can be rebuilt from the audit log
like every other figure, the counts not yet audited are *sealed* into one ``warning-tally`` entry
(measure M8): when the first view of a new day arrives (closing the days before it), and whenever
a transparency report is built. An entry holds only the increase since the last seal, per day,
category and event, so the entries of the log add up to the counts.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from mamori.governance.audit import AuditLog

__all__ = ["TALLY_EVENT", "Counts", "WarningCounts", "tallied"]

TALLY_EVENT = "warning-tally"

# day → category → event → count
Counts = dict[str, dict[str, dict[str, int]]]


def _read(path: Path) -> Counts:
    try:
        data: Counts = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        # a torn file must not take the page down; the audited tallies keep what was sealed
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: Counts) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _minus(counts: Counts, sealed: Counts) -> Counts:
    """What ``counts`` holds beyond ``sealed`` (positive differences only)."""
    out: Counts = {}
    for day, cats in counts.items():
        for cat, events in cats.items():
            for event, n in events.items():
                more = int(n) - int(sealed.get(day, {}).get(cat, {}).get(event, 0))
                if more > 0:
                    out.setdefault(day, {}).setdefault(cat, {})[event] = more
    return out


class WarningCounts:
    """Per-day counts of pages shown and continues, by category — the only record M8 keeps.

    With ``audit`` given, the first view of a new day seals the counts of the days before it.
    """

    def __init__(self, directory: Path, audit: AuditLog | None = None) -> None:
        self.path = directory / "counts.json"
        self.sealed_path = directory / "sealed.json"
        self._audit = audit
        self._lock = threading.Lock()

    def add(self, category: str | None, event: str) -> None:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        with self._lock, self._file_lock():
            data = _read(self.path)
            new_day = day not in data
            bucket = data.setdefault(day, {}).setdefault(category or "unknown", {})
            bucket[event] = int(bucket.get(event, 0)) + 1
            _write(self.path, data)
            if new_day and self._audit is not None:
                self._seal(self._audit, "web:warning", before=day)

    def read(self) -> Counts:
        return _read(self.path)

    def seal(self, audit: AuditLog, *, actor: str) -> Counts:
        """Audit what the counts hold beyond the last seal, as one ``warning-tally`` entry (none
        when nothing changed). Returns what was sealed."""
        with self._lock, self._file_lock():
            return self._seal(audit, actor, before=None)

    def _seal(self, audit: AuditLog, actor: str, *, before: str | None) -> Counts:
        counts = _read(self.path)
        if before is not None:
            counts = {d: c for d, c in counts.items() if d < before}
        sealed = _read(self.sealed_path)
        more = _minus(counts, sealed)
        if not more:
            return {}
        # the entry first: a crash before the seal file is written audits these counts again
        # (a surplus the auditor can see) rather than never (a gap nobody could)
        audit.append(actor=actor, event=TALLY_EVENT, measure="M8", detail={"counts": more})
        for day, cats in more.items():
            for cat, events in cats.items():
                for event, n in events.items():
                    slot = sealed.setdefault(day, {}).setdefault(cat, {})
                    slot[event] = int(slot.get(event, 0)) + n
        _write(self.sealed_path, sealed)
        return more

    def _file_lock(self) -> _FileLock:
        return _FileLock(self.path.with_name(".counts.lock"))


class _FileLock:
    """The warning host and the console may both count (two processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a")
        fcntl.flock(self._fh, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def tallied(detail: dict[str, object], lo: datetime, hi: datetime, event: str = "shown") -> Counts:
    """The counts of one ``warning-tally`` entry's detail whose day falls in [lo, hi)."""
    counts = detail.get("counts")
    out: Counts = {}
    if not isinstance(counts, dict):
        return out
    for day, cats in counts.items():
        try:
            d = datetime.fromisoformat(str(day)).replace(tzinfo=UTC)
        except ValueError:
            continue
        if not (lo <= d < hi) or not isinstance(cats, dict):
            continue
        for cat, events in cats.items():
            if isinstance(events, dict) and isinstance(events.get(event), int):
                out.setdefault(str(day), {}).setdefault(str(cat), {})[event] = events[event]
    return out
