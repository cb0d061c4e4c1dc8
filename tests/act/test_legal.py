"""The legal-basis decision and its risk tests (seeds/002 footnote 24 for M9)."""

from __future__ import annotations

import json

import pytest

from mamori.act.legal import RiskInputs, decide
from mamori.config import AlertsConfig

CASES = [
    # measure, devices, config, basis, holds
    ("M5", 1000, {}, "consent", False),  # no threshold: consent only
    ("M5", 10, {"m5_infected_devices_threshold": 10}, "consent", False),
    ("M5", 11, {"m5_infected_devices_threshold": 10}, "justified-act", True),
    ("M9", 10**6, {}, "consent", False),  # no capacity: consent only
    # 100 devices x 10 Mbit/s = 1 Gbit/s against half of 10 Gbit/s: does not hold
    ("M9", 100, {"m9_network_capacity_bps": 10e9}, "consent", False),
    # 600 x 10 Mbit/s = 6 Gbit/s > 5 Gbit/s: holds
    ("M9", 600, {"m9_network_capacity_bps": 10e9}, "justified-act", True),
    ("M9", 600, {"m9_network_capacity_bps": 10e9, "m9_capacity_share": 0.7}, "consent", False),
    ("M6", 3, {}, "emergency", False),
]


@pytest.mark.parametrize(("measure", "devices", "cfg", "basis", "holds"), CASES)
def test_decision(
    measure: str, devices: int, cfg: dict[str, float], basis: str, holds: bool
) -> None:
    d = decide(AlertsConfig(**cfg), RiskInputs(measure, devices, 24.0))
    assert (d.basis, d.risk_test_holds) == (basis, holds)
    assert d.inputs["devices"] == devices
    stored = json.loads(d.for_alert(basis))
    assert stored["basis_used"] == basis and stored["inputs"] == d.inputs
    assert (d.justification is None) == (basis == "consent")


def test_m9_inputs_recorded() -> None:
    d = decide(AlertsConfig(m9_network_capacity_bps=10e9), RiskInputs("M9", 600, 24.0))
    assert d.inputs["expected_attack_bps"] == 600 * 10e6
    assert d.inputs["network_capacity_bps"] == 10e9
    assert "fn. 24" in d.reason
