"""Consent filtering with two-stage CGNAT allocations (public port block → inside address →
subscriber), and the withheld periods handed to attribution."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mamori.governance import AccessRefused, Governance
from tests.conftest import HOUR, T0, flow, table

PUB = "198.51.100.1"
EXT = "203.0.113.50"


def _load(gov: Governance) -> None:
    """Inside 100.64.0.5: Z all along. Inside 100.64.0.6: W until T0+1h, then V. PUB ports
    1024-2047 → 100.64.0.5, ports 2048-3071 → 100.64.0.6; ports 3072-4095 → 100.64.0.9, which
    nobody is known to hold."""
    gov.write_registry(
        "allocations",
        table(
            [
                {"start": T0 - HOUR, "end": None, "addr": "100.64.0.5", "subscriber_id": "Z"},
                {"start": T0 - HOUR, "end": T0 + HOUR, "addr": "100.64.0.6", "subscriber_id": "W"},
                {"start": T0 + HOUR, "end": None, "addr": "100.64.0.6", "subscriber_id": "V"},
            ]
        ),
        "test",
        source="kea",
    )
    blocks = [
        (1024, 2047, "100.64.0.5", None),
        (2048, 3071, "100.64.0.6", T0 + HOUR),
        (2048, 3071, "100.64.0.6", None),
        (3072, 4095, "100.64.0.9", None),
    ]
    rows = []
    for lo, hi, inside, end in blocks:
        start = T0 + HOUR if (lo == 2048 and end is None) else T0 - HOUR
        rows.append(
            {
                "start": start,
                "end": end,
                "addr": PUB,
                "port_start": lo,
                "port_end": hi,
                "inside_addr": inside,
            }
        )
    gov.write_registry("allocations", table(rows), "test", source="cgnat-syslog")
    flows = []
    for minute in range(0, 120, 10):
        at = T0 + timedelta(minutes=minute)
        flows += [
            flow(PUB, EXT, at, sport=1500),  # Z
            flow(PUB, EXT, at, sport=2500),  # W, then V from T0+1h
            flow(PUB, EXT, at, sport=3500),  # nobody known
        ]
    gov.write("M1", "flows", table(flows), "collector")


def _seen(gov: Governance) -> set[tuple[int, int]]:
    rows = gov.open("M4", "flows", ["time_start", "src_port"], "detector").arrow().to_pylist()
    return {(r["src_port"], int((r["time_start"] - T0).total_seconds() // 60)) for r in rows}


def test_flows_behind_cgnat_follow_the_inside_holders_consent(gov: Governance) -> None:
    _load(gov)
    everyone = {(p, m) for p in (1500, 2500) for m in range(0, 120, 10)}
    assert _seen(gov) == everyone  # 3500: no subscriber known, excluded (unattributed)
    gov.consent.set("W", "M4", False, actor="W", channel="web", at=T0 - 2 * HOUR)
    assert _seen(gov) == everyone - {(2500, m) for m in range(0, 60, 10)}
    gov.consent.set("Z", "M4", False, actor="Z", channel="web", at=T0 - 2 * HOUR)
    assert _seen(gov) == {(2500, m) for m in range(60, 120, 10)}


def test_allocations_read_withholds_cgnat_rows_of_opted_out_inside_holders(
    gov: Governance,
) -> None:
    _load(gov)
    gov.consent.set("W", "M5", False, actor="W", channel="web", at=T0 - 2 * HOUR)
    grant = gov.open("M5", "allocations", ["addr", "port_start", "inside_addr"], "desk")
    kept = {(r["addr"], r["port_start"], r["inside_addr"]) for r in grant.arrow().to_pylist()}
    assert kept == {
        ("100.64.0.5", None, None),
        ("100.64.0.6", None, None),  # V's row
        (PUB, 1024, "100.64.0.5"),
        (PUB, 2048, "100.64.0.6"),  # the block allocated after W's time
        (PUB, 3072, "100.64.0.9"),
    }
    assert grant.withheld is not None
    withheld = grant.withheld_arrow()
    assert withheld is not None
    assert set(withheld.column_names) == {"addr", "port_start", "port_end", "start", "end"}
    assert sorted((r["addr"], r["port_start"]) for r in withheld.to_pylist()) == [
        ("100.64.0.6", None),
        (PUB, 2048),
    ]
    justified = gov.open(
        "M5", "allocations", None, "desk", basis="justified-act", justification="risk test"
    )
    assert justified.withheld is None and justified.arrow().num_rows == 7


@pytest.mark.parametrize(
    "row",
    [
        {"start": T0, "addr": PUB, "port_start": 1, "port_end": 2},  # names nobody
        {"start": T0, "addr": PUB, "subscriber_id": "Z", "inside_addr": "100.64.0.5"},  # both
    ],
)
def test_allocation_rows_name_exactly_one_holder(gov: Governance, row: dict[str, object]) -> None:
    with pytest.raises(AccessRefused, match="exactly one"):
        gov.write_registry("allocations", table([row]), "test", source="csv")


def test_memory_limit_is_set_for_the_block_only(gov: Governance) -> None:
    def setting(name: str) -> str:
        return str(gov._engine.con.execute(f"SELECT current_setting('{name}')").fetchall()[0][0])

    default = setting("memory_limit")
    with gov._bounded(512):
        assert setting("memory_limit") in ("512.0 MiB", "488.2 MiB", "512.0 MB")
        assert setting("temp_directory").startswith(str(gov.config.store))
    assert setting("memory_limit") == default
    with gov._bounded(None):
        assert setting("memory_limit") == default
