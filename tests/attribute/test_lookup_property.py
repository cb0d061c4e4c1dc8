"""The vectorised lookup against a brute-force reference on random intervals."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamori.attribute import attribute, lookup
from mamori.governance import Governance
from tests.conftest import T0, make_config

PUB = "198.51.100.1"  # in the test plan's cgnat pool
DIRECT = ("10.0.0.1", "10.0.0.2")
INSIDE = ("100.64.0.1", "100.64.0.2")
BLOCKS = ((1024, 2047), (2048, 3071), (1024, 1535))  # the last overlaps: a changed block size
SUBS = ("A", "B", "C")


def _interval() -> st.SearchStrategy[tuple[int, int | None]]:
    return st.tuples(st.integers(0, 100), st.one_of(st.none(), st.integers(0, 40))).map(
        lambda t: (t[0], None if t[1] is None else t[0] + t[1])
    )


direct_rows = st.builds(
    lambda addr, iv, sub: {"addr": addr, "iv": iv, "sub": sub},
    st.sampled_from(DIRECT + INSIDE),
    _interval(),
    st.sampled_from(SUBS),
)
block_rows = st.builds(
    lambda block, iv, inside: {"addr": PUB, "block": block, "iv": iv, "inside": inside},
    st.sampled_from(BLOCKS),
    _interval(),
    st.sampled_from(INSIDE),
)
lookups = st.tuples(
    st.sampled_from(DIRECT + INSIDE + (PUB,)),
    st.sampled_from((None, 1000, 1024, 1535, 1536, 2047, 2500, 3071)),
    st.integers(-5, 150),
)


def _at(sec: int) -> datetime:
    return T0 + timedelta(seconds=sec)


def _holds(row: dict[str, Any], t: int, skew: int) -> bool:
    start, end = row["iv"]
    return start - skew <= t and (end is None or t < end + skew)


def _reference(
    rows: list[dict[str, Any]], ip: str, port: int | None, t: int, skew: int
) -> tuple[str, str | None, str | None]:
    """The documented semantics, one lookup at a time."""
    shared = any(r.get("block") and r["addr"] == ip for r in rows)
    if port is None and (shared or ip.startswith("198.51.100.")):
        return "port-required", None, None
    holders: list[tuple[str | None, str | None]] = []  # (subscriber or None = unnamed, inside)
    for r in rows:
        if r["addr"] != ip or not _holds(r, t, skew):
            continue
        if "block" not in r:
            holders.append((r["sub"], None))
            continue
        lo, hi = r["block"]
        if port is None or not lo <= port <= hi:
            continue
        inner = [
            s["sub"]
            for s in rows
            if "block" not in s and s["addr"] == r["inside"] and _holds(s, t, skew)
        ]
        holders += [(s, r["inside"]) for s in inner] or [(None, r["inside"])]
    subs = {s for s, _ in holders if s is not None}
    unnamed = any(s is None for s, _ in holders)
    if len(subs) == 1 and not unnamed:
        insides = {i for _, i in holders if i is not None}
        return "ok", subs.pop(), insides.pop() if len(insides) == 1 else None
    if len(subs) > 1 or (subs and unnamed):
        return "ambiguous", None, None
    return "unknown", None, None


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(direct_rows, max_size=12),
    st.lists(block_rows, max_size=8),
    st.lists(lookups, min_size=1, max_size=30),
    st.sampled_from((0, 2)),
    st.booleans(),
)
def test_matches_brute_force(
    direct: list[dict[str, Any]],
    blocks: list[dict[str, Any]],
    asks: list[tuple[str, int | None, int]],
    skew: int,
    narrow: bool,
) -> None:
    rows = direct + blocks
    with tempfile.TemporaryDirectory() as tmp:
        gov = Governance(make_config(Path(tmp) / "store"))
        try:
            if rows:
                gov.write_registry(
                    "allocations",
                    pa.Table.from_pylist(
                        [
                            {
                                "start": _at(r["iv"][0]),
                                "end": None if r["iv"][1] is None else _at(r["iv"][1]),
                                "addr": r["addr"],
                                "port_start": r["block"][0] if "block" in r else None,
                                "port_end": r["block"][1] if "block" in r else None,
                                "subscriber_id": r.get("sub"),
                                "inside_addr": r.get("inside"),
                            }
                            for r in rows
                        ]
                    ),
                    "test",
                    source="csv",
                )
            queries = pa.table(
                {
                    "ip": pa.array([a[0] for a in asks], pa.string()),
                    "port": pa.array([a[1] for a in asks], pa.uint16()),
                    "ts": pa.array([_at(a[2]) for a in asks], pa.timestamp("ms", tz="UTC")),
                }
            )
            # small batches first keep only the rows of the addresses asked about; large ones
            # index every row: both must give the same answers
            with mock.patch.object(lookup, "_NARROW", len(asks) if narrow else 0):
                out = attribute(gov, queries, measure="M5", actor="prop", skew_s=skew)
        finally:
            gov.close()
    got = list(
        zip(
            out.column("status").to_pylist(),
            out.column("subscriber_id").to_pylist(),
            out.column("inside_addr").to_pylist(),
            strict=True,
        )
    )
    want = [_reference(rows, ip, port, t, skew) for ip, port, t in asks]
    assert got == want
