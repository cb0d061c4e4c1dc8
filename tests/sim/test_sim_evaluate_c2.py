"""C&C discovery scoring: recall on unknown C&C only, precision@K, lead time against the feed."""

from __future__ import annotations

from typing import Any

import pytest

from mamori.sim import lead_time, score_c2

# A hand-made truth: A listed from the start, B listed late (02:00), C never listed, L a loader.
TRUTH: dict[str, Any] = {
    "window": {"from": "2026-11-02T00:00:00Z", "until": "2026-11-02T04:00:00Z"},
    "endpoints": [
        {"ip": "192.0.2.1", "port": 443, "role": "cc", "contacts": 10},
        {"ip": "192.0.2.2", "port": 8080, "role": "cc", "contacts": 10},
        {"ip": "192.0.2.3", "port": 7080, "role": "cc", "contacts": 10},
        {"ip": "192.0.2.4", "port": 443, "role": "cc", "contacts": 0},  # never contacted
        {"ip": "192.0.2.9", "port": 80, "role": "loader", "contacts": 3},
    ],
    "feeds": {
        "delayed": [{"ip": "192.0.2.2", "port": 8080, "listed_at": "2026-11-02T02:00:00Z"}],
        "unlisted": [{"ip": "192.0.2.3", "port": 7080}],
        "wrong_entries": [],
    },
    "benign_traps": [],
}


def f(ip: str, port: int | None, score: float = 0.5) -> dict[str, Any]:
    return {"ip": ip, "port": port, "score": score}


@pytest.mark.parametrize(
    ("findings", "as_of", "precision", "recall", "unknown", "p_at_1"),
    [
        # at the end only C is unknown (B was listed at 02:00)
        ([f("192.0.2.3", 7080)], None, 1.0, 1.0, 1, 1.0),
        # B found at 01:00 counts as an unknown C&C found
        ([f("192.0.2.2", 8080), f("192.0.2.3", 7080)], "2026-11-02T01:00:00Z", 1.0, 1.0, 2, 1.0),
        # a spurious finding ranked first
        ([f("198.51.100.1", 443, 0.9), f("192.0.2.3", 7080, 0.1)], None, 0.5, 1.0, 1, 0.0),
        # the loader is hostile but not C&C: not a true positive
        ([f("192.0.2.9", 80)], None, 0.0, 0.0, 1, 0.0),
        # a finding without a port matches its address; duplicates count once
        ([f("192.0.2.3", None), f("192.0.2.3", None)], None, 1.0, 1.0, 1, 1.0),
        ([], None, 0.0, 0.0, 1, 0.0),
    ],
)
def test_score_c2(
    findings: list[dict[str, Any]],
    as_of: str | None,
    precision: float,
    recall: float,
    unknown: int,
    p_at_1: float,
) -> None:
    s = score_c2(findings, TRUTH, as_of=as_of, k=1)
    assert (s.precision, s.recall_unknown, s.unknown_total, s.precision_at_k) == (
        precision,
        recall,
        unknown,
        p_at_1,
    )


def test_loader_counted_apart() -> None:
    s = score_c2([f("192.0.2.9", 80)], TRUTH)
    assert s.hostile_not_cc == 1 and s.spurious == []


@pytest.mark.parametrize(
    ("runs", "share", "early"),
    [
        # B found at 01:00 (before its 02:00 listing), C found at 03:00: both early
        (
            [
                ("2026-11-02T01:00:00Z", [f("192.0.2.2", 8080)]),
                ("2026-11-02T03:00:00Z", [f("192.0.2.3", 7080)]),
            ],
            1.0,
            2,
        ),
        # B first found at 02:00, when the feed lists it: not early
        ([("2026-11-02T02:00:00Z", [f("192.0.2.2", 8080), f("192.0.2.3", 7080)])], 0.5, 1),
        # A (listed from the start) does not count either way
        ([("2026-11-02T01:00:00Z", [f("192.0.2.1", 443)])], 0.0, 0),
        ([], 0.0, 0),
    ],
)
def test_lead_time(runs: list[tuple[str, list[dict[str, Any]]]], share: float, early: int) -> None:
    lt = lead_time(runs, TRUTH)
    assert lt.late_or_unlisted == 2
    assert (lt.share, lt.found_before_listing) == (share, early)
