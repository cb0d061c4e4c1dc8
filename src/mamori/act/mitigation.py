"""From a DDoS finding to a proposed BGP mitigation, traceable both ways: the action carries the
finding's id, the audit entry of each step names the attack type and (when a policy decides) the
policy.

* amplification → FlowSpec: UDP from the reflection ports seen, to the victim, discarded;
* a UDP or ICMP flood → FlowSpec: that protocol to the victim, discarded;
* carpet bombing → the same rule for the whole prefix;
* SYN or mixed floods → RTBH of the victim (a FlowSpec rule would have to drop all its TCP):
  proposed only — an operator decides, unless ``[network.bgp] auto_approve`` names the type.

Outbound floods (a subscriber's device attacking others) get no route: the subscriber is to be
asked to stop (an alert), which is not built here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mamori.act import base as act
from mamori.act.base import Action, ActionKind, Backend
from mamori.act.bgp import FlowRule, bgp_action
from mamori.governance import Governance, LegalBasis

__all__ = ["mitigation_for", "propose_mitigation"]

_AMP_PORTS = (19, 53, 123, 161, 389, 1900, 3283, 3702, 5683, 11211)


def mitigation_for(finding: Mapping[str, Any]) -> tuple[ActionKind, str] | None:
    """The route a DDoS finding calls for (kind, target), or None (outbound: an alert)."""
    ev = json.loads(finding.get("evidence") or "{}")
    if finding.get("kind") != "ddos" or ev.get("direction") != "inbound":
        return None
    scope_prefix = "" if ev.get("scope") == "prefix" else "/32"
    dst = f"{finding['ip']}{scope_prefix}"
    method = finding.get("method")
    if method == "carpet":
        types = ev.get("types") or {}
        method = max(types, key=lambda t: types[t]) if types else "mixed"
    if method == "amplification":
        ports = ev.get("source_ports") or _AMP_PORTS
        rule = FlowRule.model_validate(
            {"destination": dst, "protocol": "udp", "source_ports": tuple(sorted(ports))}
        )
        return ActionKind.FLOWSPEC, rule.target()
    if method in ("udp", "icmp"):
        rule = FlowRule.model_validate({"destination": dst, "protocol": method})
        return ActionKind.FLOWSPEC, rule.target()
    if scope_prefix:
        return ActionKind.RTBH, dst
    return None  # a prefix under a SYN or mixed flood: too wide to blackhole


def propose_mitigation(
    gov: Governance,
    finding: Mapping[str, Any],
    actor: str,
    *,
    backends: Mapping[ActionKind, Backend[object]],
    now: datetime | None = None,
) -> Action | None:
    """Propose the route a finding calls for (M13, self-defence: an attack in progress); a policy
    that names its attack type approves and announces it at once."""
    what = mitigation_for(finding)
    if what is None:
        return None
    kind, target = what
    at = now or datetime.now(UTC)
    bgp = gov.config.network.bgp
    proposal = bgp_action(
        kind,
        target,
        measure="M13",
        basis=LegalBasis.SELF_DEFENCE,
        justification=f"DDoS in progress: {finding.get('method')} against {finding.get('ip')}",
        finding_id=str(finding["finding_id"]),
        now=at,
        expires_in=timedelta(minutes=bgp.default_expiry_minutes),
    )
    attack_type = "amplification" if kind is ActionKind.FLOWSPEC and "sport=" in target else (
        str(finding.get("method"))
    )  # fmt: skip
    detail = {"attack_type": attack_type, "finding_id": proposal.finding_id}
    [a] = act.propose(gov, [proposal], actor, now=at, detail=detail)
    if attack_type not in bgp.auto_approve:
        return a
    policy = f"policy:auto_approve:{attack_type}"
    [a] = act.approve(gov, [a], actor, approved_by=policy, now=at, detail={"policy": policy})
    [a] = act.apply(gov, [a], actor, backend=backends[a.kind], now=at, detail=detail)
    return a
