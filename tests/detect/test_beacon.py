"""Beacon scoring (RITA's skew/MADM approach) on planted series."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from mamori.detect.beacon import BeaconParams, beacon_pairs, beacon_sql
from mamori.detect.c2 import run_c2
from mamori.detect.flowview import open_oriented
from mamori.governance import Governance
from tests.detect.conftest import BEACON_EP, BEACON_HOST, NTP, T0, load_world


def _series(times: list[float], sizes: list[int], rate: int = 1) -> pa.Table:
    n = len(times)
    return pa.table(
        {
            "time_start": [T0 + timedelta(milliseconds=round(t * 1000)) for t in times],
            "time_end": [T0 + timedelta(milliseconds=round(t * 1000) + 1000) for t in times],
            "src_addr": ["10.0.0.9"] * n,
            "dst_addr": ["203.0.113.9"] * n,
            "src_port": pa.array([40000 + i for i in range(n)], pa.uint16()),
            "dst_port": pa.array([443] * n, pa.uint16()),
            "protocol": pa.array([6] * n, pa.uint8()),
            "tcp_flags": pa.array([0x18] * n, pa.uint8()),
            "packets": pa.array([3] * n, pa.uint64()),
            "bytes": pa.array(sizes, pa.uint64()),
            "sampling_rate": pa.array([rate] * n, pa.uint32()),
        }
    )


RNG = np.random.default_rng(7)


@pytest.mark.parametrize(
    ("times", "sizes", "rate", "expect"),
    [
        # every 60 s, same size: a beacon
        ([60.0 * k for k in range(40)], [300] * 40, 1, "high"),
        # every 300 s with 3 s jitter, sizes within a few bytes
        (
            [300.0 * k + float(RNG.normal(0, 3)) for k in range(30)],
            [int(x) for x in RNG.integers(500, 505, 30)],
            1,
            "high",
        ),
        # random (Poisson) times and sizes: not a beacon
        (
            list(np.cumsum(RNG.exponential(300, 40))),
            [int(x) for x in RNG.integers(300, 9000, 40)],
            1,
            "low",
        ),
        # too few connections: not scored
        ([60.0 * k for k in range(4)], [300] * 4, 1, "none"),
        # heavily sampled link: not scored
        ([60.0 * k for k in range(40)], [300] * 40, 1000, "none"),
    ],
)
def test_beacon_scores(
    gov: Governance, times: list[float], sizes: list[int], rate: int, expect: str
) -> None:
    gov.write("M1", "flows", _series(times, sizes, rate), "collector")
    t = beacon_pairs(open_oriented(gov, "test"), BeaconParams())
    if expect == "none":
        assert t.num_rows == 0
        return
    assert t.num_rows == 1
    score = t.column("score")[0].as_py()
    assert (score >= 0.8) if expect == "high" else (score < 0.7)


def test_beacon_method_reports_rare_beacon_not_popular_periodic(gov: Governance) -> None:
    load_world(gov)
    run = run_c2(gov, actor="test", methods=("beacon",), write=False)
    found = {(r["ip"], r["port"]) for r in run.findings.to_pylist()}
    assert BEACON_EP in found
    assert NTP not in found  # periodic, but half the hosts use it
    assert all(BEACON_HOST not in r["evidence"] for r in run.findings.to_pylist())


# (times, sizes): the neutral spelling (Spark's) of the interval and size statistics against
# DuckDB's mad(); the most frequent size is taken alike on both (the largest of equally
# frequent ones), so sizes that never repeat give both the same score
NEUTRAL_CASES = [
    ([60.0 * k for k in range(30)], [3000 - 7 * k for k in range(30)]),
    ([60.0 * k for k in range(40)], [300] * 40),
    ([300.0 * k + float(RNG.normal(0, 3)) for k in range(30)], [500, 501, 502] * 9 + [501] * 3),
    (
        list(np.cumsum(RNG.exponential(300, 40))),
        [int(x) for x in RNG.integers(300, 9000, 37)] + [7, 7, 7],
    ),
    ([10.0 * k + (0.4 if k % 3 else 0.0) for k in range(25)], [64] * 20 + [1500] * 5),
]


@pytest.mark.parametrize(("times", "sizes"), NEUTRAL_CASES)
def test_neutral_statistics_equal_duckdbs_own(
    gov: Governance, times: list[float], sizes: list[int]
) -> None:
    gov.write("M1", "flows", _series(times, sizes), "collector")
    view = open_oriented(gov, "test")
    p = BeaconParams()
    duck = view.sql(beacon_sql(view.name, p, "duckdb")).to_arrow_table()
    neutral = view.sql(beacon_sql(view.name, p, "spark")).to_arrow_table()
    assert duck.num_rows == 1
    assert neutral.column_names == duck.column_names
    for name in duck.column_names:
        d, n = duck.column(name)[0].as_py(), neutral.column(name)[0].as_py()
        assert n == pytest.approx(d, abs=1e-9), name


def test_most_frequent_size_does_not_depend_on_row_order(gov: Governance) -> None:
    """Sizes that never repeat, the largest arriving last: the most frequent size is the largest
    (no small fixed message is evidenced), whatever the order rows arrive in. DuckDB's mode()
    took whichever came first, so the score changed with the query plan; here it would have
    taken the smallest."""
    times = [60.0 * k for k in range(30)]
    sizes = [1000 + 7 * k for k in range(30)]
    gov.write("M1", "flows", _series(times, sizes), "collector")
    view = open_oriented(gov, "test")
    got = view.sql(beacon_sql(view.name, BeaconParams(), "duckdb")).to_arrow_table()
    # the size statistics by hand: quartiles interpolated (quantile_cont), the median absolute
    # deviation, and the largest size as the most frequent one
    q1, q2, q3 = np.percentile(sizes, [25, 50, 75])
    skew = 1.0 - min(1.0, abs((q1 + q3 - 2 * q2) / (q3 - q1)))
    mad = float(np.median(np.abs(np.array(sizes) - q2)))
    want = (skew + max(0.0, 1.0 - mad / 32.0) + (1.0 - max(sizes) / 65535.0)) / 3.0
    assert got.column("ds_score")[0].as_py() == pytest.approx(want, abs=1e-9)
