"""When each stage last ran, how long it took and how it ended (what ``mamori status`` and the
console's ``/metrics`` report).

Every scheduled stage records its run in ``<store>/_state/runs/<stage>.json``: the last run and
the last successful one, each with its start, duration, outcome and counts (never an address or
a subscriber). The file is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["STAGES", "RunRecord", "StageRun", "load_runs", "record_run", "stage_run"]

#: stage → (what it does, the measure it serves, its [schedule] job or None when it is a service)
STAGES: dict[str, tuple[str, str | None, str | None]] = {
    "collect": ("flow collector", "M1", None),
    "detect-c2": ("discover C&C servers", "M2", "detect_c2"),
    "detect-infected": ("match infected hosts", "M4", "detect_infected"),
    "notify": ("alert subscribers", None, "notify"),
    "rpz": ("write the RPZ zones", "M7", None),
    "resolver-sync": ("keep the resolver in step", "M7", None),
    "purge": ("enforce retention", None, "purge"),
    "transparency": ("transparency report", None, "transparency"),
}


@dataclass
class RunRecord:
    stage: str
    started: str  # ISO 8601, UTC
    seconds: float
    outcome: str  # "ok" or "failed"
    exit_code: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    error: str = ""  # the exception's type when it failed (its text may name data)

    @property
    def started_at(self) -> datetime:
        return datetime.fromisoformat(self.started)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RunRecord:
        return cls(
            stage=str(obj["stage"]),
            started=str(obj["started"]),
            seconds=float(obj["seconds"]),
            outcome=str(obj["outcome"]),
            exit_code=int(obj.get("exit_code", 0)),
            counts={str(k): int(v) for k, v in dict(obj.get("counts", {})).items()},
            error=str(obj.get("error", "")),
        )


@dataclass
class StageRuns:
    """The last run of a stage and its last successful one (the same record when it succeeded)."""

    last: RunRecord
    last_ok: RunRecord | None


def _path(state_dir: Path, stage: str) -> Path:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return state_dir / f"{stage}.json"


def record_run(state_dir: Path, rec: RunRecord) -> None:
    """Keep ``rec`` as the stage's last run (and last successful one when it succeeded)."""
    path = _path(state_dir, rec.stage)
    previous = load_runs(state_dir).get(rec.stage)
    last_ok = rec if rec.outcome == "ok" else (previous.last_ok if previous else None)
    data = {"last": asdict(rec), "last_ok": asdict(last_ok) if last_ok else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def load_runs(state_dir: Path) -> dict[str, StageRuns]:
    """Every stage's recorded runs; stages that never ran are absent. An unreadable file counts
    as no record (status then shows the stage as not run)."""
    out: dict[str, StageRuns] = {}
    for stage in STAGES:
        try:
            data = json.loads(_path(state_dir, stage).read_text(encoding="utf-8"))
            last = RunRecord.from_json(data["last"])
            ok = RunRecord.from_json(data["last_ok"]) if data.get("last_ok") else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out[stage] = StageRuns(last, ok)
    return out


class StageRun:
    """What a running stage reports: add counts with :meth:`count`."""

    def __init__(self, stage: str) -> None:
        _path(Path("."), stage)  # an unknown stage fails now, not after the work
        self.stage = stage
        self.counts: dict[str, int] = {}

    def count(self, **counts: int) -> None:
        self.counts.update({k: int(v) for k, v in counts.items()})


def _exit_code(exc: BaseException) -> int | None:
    """The status a SystemExit or a typer/click ``Exit`` carries; None for any other exception
    (duck-typed: this module does not depend on the command-line libraries)."""
    if isinstance(exc, SystemExit):
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    code = getattr(exc, "exit_code", None)
    return code if type(exc).__name__ == "Exit" and isinstance(code, int) else None


@contextmanager
def stage_run(state_dir: Path, stage: str) -> Iterator[StageRun]:
    """Time the block and record how it ended: an exception (or an exit with a non-zero status)
    is a failed run; the exception goes on."""
    run = StageRun(stage)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    outcome, code, error = "ok", 0, ""
    try:
        yield run
    except BaseException as exc:
        status = _exit_code(exc)
        code = 1 if status is None else status
        if code != 0:
            outcome = "failed"
            error = "" if status is not None else type(exc).__name__
        raise
    finally:
        record_run(
            state_dir,
            RunRecord(
                stage=stage,
                started=started.isoformat(),
                seconds=round(time.monotonic() - t0, 3),
                outcome=outcome,
                exit_code=code,
                counts=run.counts,
                error=error,
            ),
        )
