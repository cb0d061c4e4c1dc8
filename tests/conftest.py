"""Shared fixtures: a fresh store with a small address plan, and helpers to build records."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
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


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free now (TCP; ``socket.SOCK_DGRAM`` for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(cond: Callable[[], object], limit_s: float = 10.0, step_s: float = 0.05) -> None:
    """Wait for ``cond()`` to be true (a server answering, a file written); fail after
    ``limit_s``."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(step_s)
    raise AssertionError(f"condition not met within {limit_s} s")


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


def xyz_allocations(later: str = "Y") -> pa.Table:
    """Allocations where an address changes hands and a CGNAT address is shared: 10.0.0.1 is X's
    for an hour either side of T0 (from T0 - 1 h), then ``later``'s; 10.0.0.2 is Y's all along;
    198.51.100.1 is X's on ports 1024-2047 and Z's on 2048-3071 (one stage, as a CSV gives it)."""
    return table(
        [
            {"start": T0 - HOUR, "end": T0 + HOUR, "addr": "10.0.0.1", "subscriber_id": "X"},
            {"start": T0 + HOUR, "end": None, "addr": "10.0.0.1", "subscriber_id": later},
            {"start": T0 - HOUR, "end": None, "addr": "10.0.0.2", "subscriber_id": "Y"},
            {
                "start": T0 - HOUR,
                "end": None,
                "addr": "198.51.100.1",
                "port_start": 1024,
                "port_end": 2047,
                "subscriber_id": "X",
            },
            {
                "start": T0 - HOUR,
                "end": None,
                "addr": "198.51.100.1",
                "port_start": 2048,
                "port_end": 3071,
                "subscriber_id": "Z",
            },
        ]
    )
