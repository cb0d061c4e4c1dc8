"""Actions proposed from a finding, and what each would change, for the people who decide.

A proposal is an action of the contract (:mod:`mamori.act.base`), written ``proposed`` by
:func:`mamori.act.base.propose`; someone else approves it (never its proposer), operators decide on
network actions (:func:`mamori.governance.roles.may_decide`), and it expires unless ended
sooner. What it would change is rendered from the action by its back end: the BGP route a block
(RTBH) or filter (FlowSpec) announces, the rpz-ip record a warning adds to the warning zone.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mamori.act import base as act
from mamori.act.base import Action, ActionKind
from mamori.act.bgp import FlowRule, render_command
from mamori.act.rpz import WARN_PREFIX, _warning_rdata, rpz_ip_owner
from mamori.config import IPNetwork, MamoriConfig
from mamori.governance import Governance, LegalBasis

__all__ = ["PROPOSALS", "WARN_PREFIX", "ProposalError", "preview", "propose_from_finding"]


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
        ActionKind.RTBH,
        "M13",
        LegalBasis.SELF_DEFENCE,
        "drop all traffic to the endpoint's address in this network (RTBH: a BGP route to the "
        "blackhole next hop)",
    ),
    "filter": Proposal(
        "filter",
        ActionKind.FLOWSPEC,
        "M13",
        LegalBasis.JUSTIFIED_ACT,
        "discard traffic to the endpoint's port only (BGP FlowSpec route)",
    ),
    "warn": Proposal(
        "warn",
        ActionKind.RPZ,
        "M8",
        LegalBasis.CONSENT,
        "show the warning page to subscribers whose names resolve to the endpoint (an rpz-ip "
        "trigger in the warning zone; subscribers who opted out of M8 are not redirected)",
    ),
    "share": Proposal(
        "share",
        ActionKind.SHARE,
        "M3",
        LegalBasis.NOT_INFRINGEMENT,
        "put the C&C endpoint on the list shared with the ISAC and trusted ISPs (the next "
        "`mamori share publish`/`export`); when it ends or expires, the next export withdraws it",
    ),
}
#: findings whose endpoint may be proposed for sharing (the shared list is of C&C endpoints)
SHARE_KINDS = ("c2",)
EXPIRY_HOURS = (24, 72, 168, 720)


class ProposalError(ValueError):
    """A proposal that cannot be made (unknown kind, a finding without an address …)."""


def _target(kind: ActionKind, finding: Mapping[str, Any], pools: Sequence[IPNetwork]) -> str:
    ip = finding.get("ip")
    if not ip:
        raise ProposalError("the finding names no address to act on")
    addr = ipaddress.ip_address(str(ip))
    prefix = f"{addr}/{addr.max_prefixlen}"
    if kind is ActionKind.FLOWSPEC:
        port, proto = finding.get("port"), finding.get("protocol")
        if port is None or proto not in ("tcp", "udp"):
            raise ProposalError("a filter needs the finding's port and protocol (tcp or udp)")
        # the form the BGP back end parses (canonical, so the rule it announces is this one)
        rule = FlowRule.model_validate(
            {"destination": prefix, "protocol": proto, "destination_ports": (int(port),)}
        )
        return rule.target()
    if kind is ActionKind.SHARE:
        if finding.get("kind") not in SHARE_KINDS:
            raise ProposalError("only C&C findings are shared")
        if any(addr in net for net in pools):
            # the shared list is of C&C servers outside; a subscriber's address never leaves
            raise ProposalError(f"{addr} is in this ISP's subscriber pools: it is not shared")
        port, proto = finding.get("port"), finding.get("protocol")
        where = str(addr) if addr.version == 4 else f"[{addr}]"
        return (
            where + (f":{int(port)}" if port is not None else "") + (f"/{proto}" if proto else "")
        )
    if kind is ActionKind.RPZ:
        if any(addr in net for net in pools):
            # the warning page is about a site; a subscriber's own address is not one
            raise ProposalError(f"{addr} is in this ISP's subscriber pools: nothing to warn about")
        return f"{WARN_PREFIX}{addr}"
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
    target = _target(p.kind, finding, gov.config.pools())
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


def _as_action(kind: str, target: str) -> Action:
    """Enough of an action for its back end to render the command (only kind and target count)."""
    t0 = datetime(2000, 1, 1, tzinfo=UTC)
    return Action(
        action_id="preview",
        kind=ActionKind(kind),
        target=target,
        measure="M13",
        legal_basis=LegalBasis.SELF_DEFENCE,
        created=t0,
        expires=t0 + timedelta(hours=1),
    )


def preview(row: Mapping[str, Any], config: MamoriConfig) -> str:
    """What applying the action would change, as the back end would write it."""
    kind, target = str(row.get("kind")), str(row.get("target") or "")
    until = f"# until {_when(row.get('expires'))}"
    if kind in (ActionKind.FLOWSPEC, ActionKind.RTBH):
        try:
            command = render_command(_as_action(kind, target), config.network.bgp, "announce")
        except ValueError as exc:
            return f"# the BGP back end cannot render this target: {exc}"
        how = (
            "dry run: written to the store's bgp/dry-run.log"
            if config.network.bgp.api_socket is None
            else "sent to ExaBGP through its relay"
        )
        return f"{command}\n{until}, then withdrawn ({how})"
    if kind == ActionKind.RPZ and target.startswith(WARN_PREFIX):
        addr = target.removeprefix(WARN_PREFIX)
        zone = config.dns.warning_zone.rstrip(".")
        return (
            f"{rpz_ip_owner(addr)}.{zone}. {_warning_rdata(config.dns)[0]}\n"
            f"{until}: written into the warning zone ({zone}) by the next `mamori act rpz` after "
            "approval, left out by the first one after it ends"
        )
    if kind == ActionKind.NFTABLES:
        return f"nftables on {target} {until}"
    if kind == ActionKind.RPZ:
        return (
            f"zone {target}: the listed names of {row.get('measure')} answered by policy "
            f"(serial {str(row.get('action_id', '')).rsplit('-', 1)[-1]})"
        )
    if kind == ActionKind.SHARE:
        return (
            f"C&C endpoint {target} on the shared list (finding {row.get('finding_id')}): "
            f"confirmed on approval, in the next `mamori share publish`/`export`\n"
            f"{until}, then a withdrawal entry in the next export"
        )
    if kind == ActionKind.ALERT:
        return f"an alert e-mail ({target}) to the subscriber"
    return f"{kind} on {target}"
