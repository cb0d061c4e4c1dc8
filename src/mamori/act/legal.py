"""The legal-basis decision behind an alert, with the inputs it used.

* **consent** — the subscriber has not opted out of the measure. Attribution under consent does not
  even look up opted-out subscribers (governance removes them first).
* **justified act** (正当業務行為), M5 and M9 only, when the configured risk test holds:

  - M5: the number of likely-infected devices on the network in the risk window is above
    ``alerts.m5_infected_devices_threshold``;
  - M9: vulnerable devices × expected attack traffic per device exceeds
    ``alerts.m9_capacity_share`` of ``alerts.m9_network_capacity_bps`` — the test of the study
    group's second report, footnote 24: the number of vulnerable devices and the expected attack
    traffic, against the network's normal use and capacity, are expected to exceed what it can
    carry.

  With no threshold configured the test never holds and the measure rests on consent alone.
* **emergency** (緊急避難) — M6: a taken-down C&C server's victim log, a present danger.
* **self-defence** (正当防衛) — M13: a subscriber's device is sending an attack (mass traffic) now;
  its owner is asked to stop (MISSION M13).

A :class:`LegalDecision` is stored with every alert (``notifications.decision``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mamori.config import AlertsConfig

__all__ = ["LegalDecision", "RiskInputs", "decide", "risk_test"]


@dataclass(frozen=True)
class RiskInputs:
    """What the risk test counts (distinct addresses reported or detected in the window)."""

    measure: str
    devices: int
    window_hours: float


@dataclass(frozen=True)
class LegalDecision:
    measure: str
    basis: str  # the basis the measure may use for everyone (consent, or the risk-tested one)
    risk_test_holds: bool
    inputs: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def justification(self) -> str | None:
        """Text handed to governance when relying on something other than consent."""
        if self.basis == "consent":
            return None
        return self.reason

    def for_alert(self, basis_used: str) -> str:
        """The JSON stored with one alert: the basis it was sent under and the inputs."""
        return json.dumps({**asdict(self), "basis_used": basis_used}, sort_keys=True)


def risk_test(cfg: AlertsConfig, inputs: RiskInputs) -> tuple[bool, dict[str, Any], str]:
    """Whether the justified-act risk test holds, with the figures it compared."""
    m = inputs.measure
    figures: dict[str, Any] = {"devices": inputs.devices, "window_hours": inputs.window_hours}
    if m == "M5":
        level = cfg.m5_infected_devices_threshold
        figures["threshold"] = level
        if level is None:
            return False, figures, "no M5 risk threshold configured"
        holds = inputs.devices > level
        why = (
            f"M5 risk test: {inputs.devices} likely-infected devices in {inputs.window_hours:g} h "
            f"{'>' if holds else '<='} configured level {level}"
        )
        return holds, figures, why
    if m == "M9":
        cap = cfg.m9_network_capacity_bps
        expected = inputs.devices * cfg.m9_attack_bps_per_device
        figures.update(
            attack_bps_per_device=cfg.m9_attack_bps_per_device,
            expected_attack_bps=expected,
            network_capacity_bps=cap,
            capacity_share=cfg.m9_capacity_share,
        )
        if cap is None:
            return False, figures, "no M9 network capacity configured"
        limit = cfg.m9_capacity_share * cap
        holds = expected > limit
        why = (
            f"M9 risk test (seeds/002 fn. 24): {inputs.devices} vulnerable devices x "
            f"{cfg.m9_attack_bps_per_device:g} bit/s = {expected:g} bit/s "
            f"{'>' if holds else '<='} {cfg.m9_capacity_share:g} x capacity {cap:g} bit/s"
        )
        return holds, figures, why
    return False, figures, f"{m} has no justified-act risk test"


def decide(cfg: AlertsConfig, inputs: RiskInputs) -> LegalDecision:
    if inputs.measure == "M6":
        return LegalDecision(
            "M6",
            "emergency",
            False,
            {"devices": inputs.devices},
            "M6: victims in a taken-down C&C server's log (present danger; emergency)",
        )
    if inputs.measure == "M13":
        return LegalDecision(
            "M13",
            "self-defence",
            False,
            {"devices": inputs.devices},
            "M13: the subscriber's device sent an attack through the network (flows over the "
            "DDoS thresholds); asking them to stop defends the network and its other users "
            "(self-defence)",
        )
    holds, figures, why = risk_test(cfg, inputs)
    return LegalDecision(
        inputs.measure, "justified-act" if holds else "consent", holds, figures, why
    )
