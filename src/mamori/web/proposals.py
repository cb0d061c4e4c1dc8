"""Actions proposed from a finding, and what each would change, for the people who decide.

A proposal is an action of the contract (:mod:`mamori.act.base`), written ``proposed`` by
:func:`mamori.act.base.propose`; someone else approves it (never its proposer), operators decide on
network actions (:func:`mamori.governance.roles.may_decide`), and it expires unless ended
sooner. What it would change is rendered from the action: the zone an RPZ action writes, the
nftables element or FlowSpec route a network action installs.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mamori.act import base as act
from mamori.act.base import Action, ActionKind
from mamori.governance import Governance, LegalBasis

__all__ = ["PROPOSALS", "ProposalError", "preview", "propose_from_finding"]


@dataclass(frozen=True)
class Proposal:
    """One thing the console can propose about a finding."""

    name: str  # what the button says
    kind: ActionKind
    measure: str
    basis: LegalBasis
    doc: str


PROPOSALS: Mapping[str, Proposal] = {
    "block": Proposal(
        "block",
        ActionKind.NFTABLES,
        "M13",
        LegalBasis.SELF_DEFENCE,
        "drop traffic to and from the endpoint's address at the border (nftables set)",
    ),
    "filter": Proposal(
        "filter",
        ActionKind.FLOWSPEC,
        "M13",
        LegalBasis.JUSTIFIED_ACT,
        "discard traffic to the endpoint's port only (BGP FlowSpec route)",
    ),
}
EXPIRY_HOURS = (24, 72, 168, 720)


class ProposalError(ValueError):
    """A proposal that cannot be made (unknown kind, a finding without an address …)."""


def _target(kind: ActionKind, finding: Mapping[str, Any]) -> str:
    ip = finding.get("ip")
    if not ip:
        raise ProposalError("the finding names no address to act on")
    addr = ipaddress.ip_address(str(ip))
    prefix = f"{addr}/{addr.max_prefixlen}"
    if kind is ActionKind.FLOWSPEC:
        port, proto = finding.get("port"), finding.get("protocol")
        if port is None or proto not in ("tcp", "udp"):
            raise ProposalError("a filter needs the finding's port and protocol (tcp or udp)")
        return f"{prefix} {proto} {int(port)}"
    return prefix


def propose_from_finding(
    gov: Governance,
    finding: Mapping[str, Any],
    what: str,
    hours: int,
    actor: str,
    justification: str | None = None,
) -> Action:
    """Write a ``proposed`` action of kind ``what`` about ``finding`` (audited by the write)."""
    p = PROPOSALS.get(what)
    if p is None:
        raise ProposalError(f"unknown proposal {what!r}; one of {', '.join(PROPOSALS)}")
    if hours not in EXPIRY_HOURS:
        raise ProposalError(f"expiry of {hours} hours: one of {EXPIRY_HOURS}")
    now = datetime.now(UTC)
    target = _target(p.kind, finding)
    digest = hashlib.sha256(f"{finding['finding_id']}\x1f{what}\x1f{now.isoformat()}".encode())
    action = Action(
        action_id=f"{p.kind.value}-{digest.hexdigest()[:16]}",
        kind=p.kind,
        target=target,
        measure=p.measure,
        legal_basis=p.basis,
        justification=justification
        or f"{what} proposed from finding {finding['finding_id']} ({finding.get('kind')})",
        created=now,
        expires=now + timedelta(hours=hours),
        finding_id=str(finding["finding_id"]),
    )
    [proposed] = act.propose(
        gov, [action], actor, now=now, detail={"proposal": what, "finding": action.finding_id}
    )
    return proposed


def _when(t: Any) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if isinstance(t, datetime) else str(t)


def preview(row: Mapping[str, Any]) -> str:
    """What applying the action would change, as the back end would write it."""
    kind, target = str(row.get("kind")), str(row.get("target") or "")
    if kind == ActionKind.NFTABLES:
        family = "ipv6" if ":" in target else "ipv4"
        return (
            f"nft add element inet mamori blocked_{family} {{ {target.split('/')[0]} }}\n"
            f"# until {_when(row.get('expires'))}: drops traffic to and from it at the border"
        )
    if kind == ActionKind.FLOWSPEC:
        parts = target.split()
        match = f"destination {parts[0]};"
        if len(parts) == 3:
            match += f" protocol {parts[1]}; destination-port ={parts[2]};"
        return f"flow route {row.get('action_id')} {{ match {{ {match} }} then {{ discard; }} }}"
    if kind == ActionKind.RTBH:
        return f"route {target} next-hop 192.0.2.1 community [65535:666]  # blackhole"
    if kind == ActionKind.RPZ:
        return (
            f"zone {target}: the listed names of {row.get('measure')} answered by policy "
            f"(serial {str(row.get('action_id', '')).rsplit('-', 1)[-1]})"
        )
    if kind == ActionKind.ALERT:
        return f"an alert e-mail ({target}) to the subscriber"
    return f"{kind} on {target}"
