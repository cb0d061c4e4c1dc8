"""SMTP AUTH abuse (M11, M12) on the simulated ISP: the demo's stage, and the evaluation over
seeds that tunes the detectors on some simulated worlds and scores them on others.

The simulator writes a Postfix + Dovecot ``mail.log`` with a brute force from outside, compromised
accounts sending spam, and honest users' mistakes (typos, a device with an old password). Both are
read with ``mamori ingest mail``'s loader, both detectors run, and the findings are scored against
``truth.json`` as ``mamori eval smtp`` scores them.

Training is a small grid over the thresholds that decide most (``max_failures`` for brute force;
the spike and per-account volume for compromised accounts): the set with the best mean F1 on the
training seeds is kept (ties: the defaults' neighbourhood first) and scored, unchanged, on test
seeds it never saw.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mamori.config import load_config
from mamori.detect.base import Window
from mamori.detect.smtp_accounts import CompromisedDetector, CompromisedParams
from mamori.detect.smtp_bruteforce import BruteForceDetector, BruteForceParams
from mamori.governance import Governance
from mamori.ingest.mail import ingest_mail_file
from mamori.sim import score, simulate

__all__ = ["SeedEval", "SeedScore", "detect_smtp", "evaluate_seeds", "finding_json", "load_mail"]

ACTOR = "demo:smtp"
#: the grid training searches (defaults first, so a tie keeps them)
GRID: dict[str, tuple[int, ...]] = {
    "max_failures": (5, 3, 8),
    "spike_min_recipients": (20, 10, 40),
    "min_recipients_per_hour": (50, 25, 100),
}


def finding_json(row: dict[str, Any]) -> dict[str, Any]:
    """A finding as ``detect smtp --json`` prints it (what ``eval smtp`` reads)."""
    out = {k: row[k] for k in ("finding_id", "kind", "method", "ip", "score", "measure")}
    out["first_seen"] = row["first_seen"].isoformat() if row["first_seen"] else None
    out["last_seen"] = row["last_seen"].isoformat() if row["last_seen"] else None
    if row.get("auth_id"):
        out["auth_id"] = row["auth_id"]
    out["evidence"] = json.loads(row["evidence"]) if row["evidence"] else None
    return out


def load_mail(gov: Governance, mail_log: Path, actor: str = ACTOR) -> dict[str, int]:
    """Load the simulated mail log (its Postfix and its Dovecot lines)."""
    counts: dict[str, int] = {}
    for fmt in ("postfix", "dovecot"):
        r = ingest_mail_file(gov, mail_log, fmt, actor=actor)
        counts[f"{fmt}_rows"] = r.rows_stored
        counts["failures"] = counts.get("failures", 0) + r.failures
        counts["messages"] = counts.get("messages", 0) + r.messages
    return counts


def detect_smtp(
    gov: Governance,
    *,
    brute: BruteForceParams,
    accounts: CompromisedParams,
    write: bool = False,
    actor: str = ACTOR,
) -> list[dict[str, Any]]:
    """Both detectors over everything stored; findings as JSON objects."""
    rows: list[dict[str, Any]] = []
    for det in (
        BruteForceDetector(brute, write=write),
        CompromisedDetector(accounts, write=write),
    ):
        rows += det.run(gov, Window(), actor=actor).findings.to_pylist()
    return [finding_json(r) for r in rows]


class SeedScore(BaseModel):
    seed: int
    findings: int
    precision: float
    recall: float
    f1: float
    missed: list[str]
    spurious: list[str]


class SeedEval(BaseModel):
    scenario: str
    params: dict[str, int]
    train: list[SeedScore]
    test: list[SeedScore]

    def summary(self, which: str = "test") -> dict[str, float]:
        s = self.test if which == "test" else self.train
        return {
            "precision_mean": round(sum(x.precision for x in s) / len(s), 4),
            "recall_mean": round(sum(x.recall for x in s) / len(s), 4),
            "precision_worst": min(x.precision for x in s),
            "recall_worst": min(x.recall for x in s),
        }


@dataclass
class _World:
    seed: int
    store: Path
    truth: dict[str, Any]


def _world(scenario: str, seed: int, work: Path) -> _World:
    sim = work / f"{scenario}-s{seed}"
    store = work / f"{scenario}-s{seed}-store"
    if not (sim / "truth.json").exists():
        shutil.rmtree(sim, ignore_errors=True)
        simulate(scenario, sim, seed=seed)
    if not store.exists():
        with Governance(load_config(overrides={"store": store})) as gov:
            load_mail(gov, sim / "mail" / "mail.log")
    return _World(seed, store, json.loads((sim / "truth.json").read_text(encoding="utf-8")))


_BRUTE = ("max_failures",)
_ACCOUNTS = ("spike_min_recipients", "min_recipients_per_hour")


class _Runs:
    """Each detector's findings per world and per setting of its own thresholds (the two
    detectors' thresholds do not interact, so a grid costs their sum, not their product)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str, tuple[int, ...]], list[dict[str, Any]]] = {}

    def _run(self, w: _World, which: str, values: tuple[int, ...]) -> list[dict[str, Any]]:
        key = (w.seed, which, values)
        if key not in self._cache:
            names = _BRUTE if which == "brute" else _ACCOUNTS
            kw = dict(zip(names, values, strict=True))
            det: BruteForceDetector | CompromisedDetector = (
                BruteForceDetector(BruteForceParams(**kw), write=False)
                if which == "brute"
                else CompromisedDetector(CompromisedParams(**kw), write=False)
            )
            with Governance(load_config(overrides={"store": w.store})) as gov:
                rows = det.run(gov, Window(), actor=ACTOR).findings.to_pylist()
            self._cache[key] = [finding_json(r) for r in rows]
        return self._cache[key]

    def score(self, w: _World, p: dict[str, int]) -> SeedScore:
        found = self._run(w, "brute", tuple(p[k] for k in _BRUTE))
        found = found + self._run(w, "accounts", tuple(p[k] for k in _ACCOUNTS))
        s = score("smtp", found, w.truth)
        return SeedScore(
            seed=w.seed,
            findings=s.findings,
            precision=s.precision,
            recall=s.recall,
            f1=s.f1,
            missed=s.missed,
            spurious=s.spurious,
        )


def evaluate_seeds(
    scenario: str,
    train_seeds: Sequence[int],
    test_seeds: Sequence[int],
    work: Path,
    grid: dict[str, Iterable[int]] | None = None,
) -> SeedEval:
    """Tune on ``train_seeds``, score on ``test_seeds`` (disjoint)."""
    if set(train_seeds) & set(test_seeds):
        raise ValueError("training and test seeds must be disjoint")
    work.mkdir(parents=True, exist_ok=True)
    g = {k: tuple(v) for k, v in (grid or GRID).items()}
    runs = _Runs()
    train = [_world(scenario, s, work) for s in train_seeds]
    best: tuple[float, dict[str, int], list[SeedScore]] | None = None
    for values in itertools.product(*g.values()):
        p = dict(zip(g, values, strict=True))
        scores = [runs.score(w, p) for w in train]
        f1 = sum(x.f1 for x in scores) / len(scores)
        if best is None or f1 > best[0]:
            best = (f1, p, scores)
    assert best is not None
    test = [runs.score(_world(scenario, s, work), best[1]) for s in test_seeds]
    return SeedEval(scenario=scenario, params=best[1], train=best[2], test=test)
