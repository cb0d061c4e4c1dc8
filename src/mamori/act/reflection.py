"""Standing reflection filters (M10): from the address plan to a rule a router applies.

seeds/001 allows the ISP to drop, at its network's edge, requests from the Internet to the
reflection port of *dynamic* subscriber addresses (the home routers and devices that would
otherwise answer them, 28-51,000 times larger, at a spoofed victim), examining only the
destination address and port. It warns against static addresses (customers' own servers) and
the ISP's own resolvers. So the plan covers ``kind = "dynamic"`` pools only, minus the ISP's
resolvers (``[network] resolvers``), and the protocols ``[network.reflection]`` switches on.

:func:`reflection_plan` builds that plan; the renderers (``act.nft``, ``act.routers``,
``act.flowspec``) turn it into configuration; :func:`apply_reflection` puts it in force as an
action of M10 (proposed, approved by whoever runs it, applied by the back end, ending the filter
it replaces), so the legal basis and its justification are recorded with it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from mamori.act import base as act
from mamori.act.base import Action, ActionKind, ActionState, Backend
from mamori.config import MamoriConfig
from mamori.config_network import ReflectionProtocol
from mamori.governance import Governance, LegalBasis

__all__ = [
    "MEASURE",
    "ReflectionPlan",
    "apply_reflection",
    "basis_text",
    "reflection_action",
    "reflection_plan",
    "reflection_target",
]

MEASURE = "M10"
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ReflectionPlan:
    """What a reflection filter covers. Prefixes are text (``10.0.0.0/16``), in address order."""

    pools: tuple[str, ...]  # the dynamic pools' names
    v4: list[str]
    v6: list[str]
    resolvers4: list[str]
    resolvers6: list[str]
    protocols: tuple[tuple[str, ReflectionProtocol], ...]
    match: str  # destination-port | source-port
    carved: int  # prefixes split or dropped to keep the ISP's resolvers out

    @property
    def prefixes(self) -> int:
        return len(self.v4) + len(self.v6)


def _without(nets: list[Net], holes: Sequence[Net]) -> tuple[list[Net], int]:
    """``nets`` minus ``holes`` (few: the resolvers), found with one vector test per hole."""
    if not holes or not nets:
        return nets, 0
    lo = np.array([int(n.network_address) for n in nets], dtype=object)
    hi = np.array([int(n.broadcast_address) for n in nets], dtype=object)
    touched: set[int] = set()
    for h in holes:
        hit = (lo <= int(h.broadcast_address)) & (hi >= int(h.network_address))
        touched.update(int(i) for i in np.flatnonzero(hit))
    if not touched:
        return nets, 0
    out: list[Net] = [n for i, n in enumerate(nets) if i not in touched]
    for i in sorted(touched):
        parts: list[Net] = [nets[i]]
        for h in holes:
            nxt: list[Net] = []
            for p in parts:
                if not p.overlaps(h):
                    nxt.append(p)
                elif p.subnet_of(h):  # type: ignore[arg-type]
                    continue  # wholly a resolver's: nothing of it is filtered
                else:
                    nxt.extend(p.address_exclude(h))  # type: ignore[arg-type]
            parts = nxt
        out.extend(parts)
    out.sort(key=lambda n: int(n.network_address))
    return out, len(touched)


def reflection_plan(config: MamoriConfig) -> ReflectionPlan:
    """The dynamic pools (minus the ISP's resolvers) and the protocols switched on."""
    pools = [p for p in config.address_plan if p.kind == "dynamic"]
    nets: list[Net] = [n for p in pools for n in p.prefixes]
    resolvers = list(config.network.resolvers)
    v4, carved4 = _without(
        [n for n in nets if n.version == 4], [r for r in resolvers if r.version == 4]
    )
    v6, carved6 = _without(
        [n for n in nets if n.version == 6], [r for r in resolvers if r.version == 6]
    )
    return ReflectionPlan(
        pools=tuple(p.name for p in pools),
        v4=[str(n) for n in v4],
        v6=[str(n) for n in v6],
        resolvers4=[str(r) for r in resolvers if r.version == 4],
        resolvers6=[str(r) for r in resolvers if r.version == 6],
        protocols=tuple(config.network.reflection.enabled()),
        match=config.network.reflection.match,
        carved=carved4 + carved6,
    )


def basis_text(plan: ReflectionPlan) -> str:
    """The justification recorded on the action and printed at the top of every rendering."""
    ports = ", ".join(f"{n} {p.transport}/{p.port}" for n, p in plan.protocols)
    if plan.match == "destination-port":
        what = "requests from outside to the reflection ports of"
        seen = "destination address and destination port"
    else:
        what = "replies from reflection ports (but the ISP's resolvers') to"
        seen = "destination address, source port (and the ISP's resolvers as source)"
    return (
        f"M10 justified act (seeds/001): drop {what} dynamic pools only "
        f"({', '.join(plan.pools) or 'none'}: {plan.prefixes:,} prefixes); static pools and the "
        f"ISP's resolvers are never filtered; examined: {seen}; protocols: {ports or 'none'}"
    )[:1000]


def reflection_target(plan: ReflectionPlan) -> str:
    return f"reflection:{','.join(plan.pools) or '-'}"[:253]


def reflection_action(
    plan: ReflectionPlan,
    kind: ActionKind,
    *,
    now: datetime,
    expiry: timedelta,
) -> Action:
    return Action(
        action_id=f"reflection-{kind.value}-{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}",
        kind=kind,
        target=reflection_target(plan),
        measure=MEASURE,
        legal_basis=LegalBasis.JUSTIFIED_ACT,
        justification=basis_text(plan),
        created=now,
        expires=now + expiry,
    )


def apply_reflection(
    gov: Governance,
    actor: str,
    backend: Backend[object],
    *,
    now: datetime | None = None,
) -> Action:
    """propose → approve (the actor decides by running it) → apply through ``backend`` → end the
    filter of the same kind it replaces (superseded: no withdrawal, the new one is in force)."""
    at = now or datetime.now(UTC)
    plan = reflection_plan(gov.config)
    if not plan.prefixes:
        raise ValueError("the address plan has no dynamic pool: nothing to filter")
    if not plan.protocols:
        raise ValueError("[network.reflection] switches every protocol off: nothing to filter")
    expiry = timedelta(days=gov.config.network.reflection.expiry_days)
    proposal = reflection_action(plan, backend.kind, now=at, expiry=expiry)
    detail = {
        "prefixes": plan.prefixes,
        "protocols": [n for n, _ in plan.protocols],
        "match": plan.match,
        "carved_for_resolvers": plan.carved,
    }
    earlier = [
        a
        for a in act.current(gov, actor, [MEASURE]).values()
        if a.kind is backend.kind
        and a.state is ActionState.APPLIED
        and a.target.startswith("reflection:")
    ]
    [proposed] = act.propose(gov, [proposal], actor, now=at, detail=detail)
    [approved] = act.approve(gov, [proposed], actor, now=at)
    [applied] = act.apply(gov, [approved], actor, backend=backend, now=at, detail=detail)
    replaced = {"superseded_by": applied.action_id}
    act.end(gov, [a for a in earlier if not a.due(at)], actor, now=at, detail=replaced)
    act.expire(gov, [a for a in earlier if a.due(at)], actor, now=at, detail=replaced)
    return applied
