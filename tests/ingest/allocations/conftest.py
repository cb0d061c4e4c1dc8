from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "data" / "allocations"


def at(hhmm: str) -> datetime:
    """A time on 2026-11-01 (UTC), the day of the fixtures."""
    h, m, *s = (int(x) for x in hhmm.split(":"))
    return datetime(2026, 11, 1, h, m, s[0] if s else 0, tzinfo=UTC)
