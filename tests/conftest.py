"""Shared fixtures: a fresh store with a small address plan, and helpers to build records."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, settings

from mamori.config import AddressPool, MamoriConfig, load_config
from mamori.governance import Governance

# CI runs on a loaded 2-core machine: a per-example deadline would fail tests on timing alone
# (hypothesis reports a slow first example as flaky), and tests never assert on wall-clock time.
settings.register_profile("mamori", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mamori")

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

PLAN = (
    AddressPool(name="home-dynamic", kind="dynamic", prefixes=("10.0.0.0/16",)),
    AddressPool(name="business-static", kind="static", prefixes=("192.0.2.0/24",)),
    AddressPool(name="cgnat", kind="cgnat", prefixes=("198.51.100.0/28",)),
)


def make_config(store: Path, **update: object) -> MamoriConfig:
    cfg = load_config(overrides={"store": store})
    return cfg.model_copy(update={"address_plan": PLAN, **update})


@pytest.fixture
def config(tmp_path: Path) -> MamoriConfig:
    return make_config(tmp_path / "store")


@pytest.fixture
def gov(config: MamoriConfig) -> Iterator[Governance]:
    g = Governance(config)
    yield g
    g.close()


def flow(
    src: str, dst: str, at: datetime, sport: int = 40000, dport: int = 443
) -> dict[str, object]:
    return {
        "time_start": at,
        "time_end": at,
        "src_addr": src,
        "dst_addr": dst,
        "src_port": sport,
        "dst_port": dport,
        "protocol": 6,
        "packets": 1,
        "bytes": 60,
    }


def table(rows: list[dict[str, object]]) -> pa.Table:
    """Rows to a table; keys missing from some rows become nulls (from_pylist reads only the
    first row's keys)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
