"""IP-level blocking of confirmed C&C endpoints for consenting subscribers (M7, seeds/003 §2①),
on a Linux BNG's nftables.

One table (``inet <prefix>_c2``) holds two kinds of set:

* ``subscribers4``/``subscribers6``: the addresses currently allocated to subscribers who are in
  for M7 — read through governance, so opted-out subscribers are gone before anything is
  written; kept in step with consent and allocations the way ``act resolver-sync`` keeps the
  resolver's client tags (``mamori act c2-block --watch``), by replacing the set's elements in
  one transaction (a withdrawn consent applies at the next poll);
* ``c2_4``/``c2_6`` (address . protocol . port) and ``c2_4_any``/``c2_6_any`` (every port): the
  C&C endpoints the lists in force name (reputation, category ``c2``; the operator's allowlist
  applied).

Traffic between the two, either way, is dropped. The C&C list is an action of M7 (kind
``nftables``, consent): each new version of the list is proposed, approved by whoever runs the
sync, applied, and ends the version it replaces; it expires after
``[network] c2_block_expiry_days`` unless a newer sync renews it — then the table is withdrawn.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from mamori.act import base as act
from mamori.act.base import Action, ActionKind, ActionState
from mamori.act.nft import NftBackend, NftError, elements, run_nft, table_for, table_owner
from mamori.act.resolver import _fingerprint as store_fingerprint
from mamori.act.resolver import consenting_clients
from mamori.config import MamoriConfig
from mamori.config_network import NftConfig
from mamori.governance import Governance, LegalBasis
from mamori.ingest.reputation import current_reputation

__all__ = [
    "C2Endpoints",
    "C2SyncResult",
    "c2_endpoints",
    "c2_table",
    "consenting_addresses",
    "render_c2_table",
    "render_subscribers",
    "sync_c2_block",
    "watch_c2_block",
]

log = logging.getLogger(__name__)
MEASURE = "M7"
TARGET_PREFIX = "c2-ip:"


@dataclass(frozen=True)
class C2Endpoints:
    """Set elements, in nft's text form, sorted."""

    v4: list[str] = field(default_factory=list)  # "192.0.2.66 . tcp . 443"
    v6: list[str] = field(default_factory=list)
    v4_any: list[str] = field(default_factory=list)  # listed without a port: every port
    v6_any: list[str] = field(default_factory=list)
    rejected: int = 0

    @property
    def count(self) -> int:
        return len(self.v4) + len(self.v6) + len(self.v4_any) + len(self.v6_any)

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.v4, self.v6, self.v4_any, self.v6_any):
            h.update("\n".join(part).encode() + b"\0")
        return h.hexdigest()[:16]


def c2_table(nft: NftConfig) -> str:
    table = table_for(nft, TARGET_PREFIX)
    assert table is not None
    return table


def c2_endpoints(gov: Governance, actor: str, *, at: datetime | None = None) -> C2Endpoints:
    """The C&C endpoints the lists in force name (category ``c2``, an address given), read under
    M7. An entry with a port blocks that port (both transports when it says neither); without
    one, every port of the address."""
    rep = current_reputation(gov, MEASURE, actor, at)
    if rep.num_rows == 0:
        return C2Endpoints()
    keep = pc.and_(pc.equal(rep.column("category"), "c2"), pc.is_valid(rep.column("ip")))
    rep = rep.filter(pc.fill_null(keep, False)).select(["ip", "port", "protocol"])
    # few distinct endpoints even in large feeds: the per-entry work is on the distinct ones
    rows = rep.group_by(["ip", "port", "protocol"]).aggregate([]).to_pylist()
    v4: set[str] = set()
    v6: set[str] = set()
    v4_any: set[str] = set()
    v6_any: set[str] = set()
    bad = 0
    for r in rows:
        try:
            a = ipaddress.ip_address(str(r["ip"]).strip()).compressed
        except ValueError:
            bad += 1
            continue
        six = ":" in a
        if r["port"] is None:
            (v6_any if six else v4_any).add(a)
            continue
        proto = (r["protocol"] or "").lower()
        for p in (proto,) if proto in ("tcp", "udp") else ("tcp", "udp"):
            (v6 if six else v4).add(f"{a} . {p} . {int(r['port'])}")
    if bad:
        log.warning("c2-block: %d C&C entries have no usable address; left out", bad)
    return C2Endpoints(
        v4=sorted(v4), v6=sorted(v6), v4_any=sorted(v4_any), v6_any=sorted(v6_any), rejected=bad
    )


def consenting_addresses(
    gov: Governance, actor: str, *, at: datetime | None = None
) -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) prefixes currently allocated to subscribers who are in for M7."""
    clients = consenting_clients(gov, actor, at=at, measures=(MEASURE,))[MEASURE]
    if isinstance(clients, pa.ChunkedArray):
        clients = clients.combine_chunks()
    is4 = pc.invert(pc.fill_null(pc.match_substring(clients, ":"), True))
    v4 = pc.filter(clients, is4).to_pylist()
    v6 = pc.filter(clients, pc.invert(is4)).to_pylist()
    return [str(x) for x in v4], [str(x) for x in v6]


def _set(name: str, typ: str, values: Sequence[str], interval: bool) -> str:
    flags = "\t\tflags interval\n\t\tauto-merge\n" if interval else ""
    return f"\tset {name} {{\n\t\ttype {typ}\n{flags}{elements(values)}\t}}\n"


def render_c2_table(
    endpoints: C2Endpoints,
    subscribers: tuple[Sequence[str], Sequence[str]],
    nft: NftConfig,
    action_id: str,
) -> str:
    """The whole table, replaced in one transaction."""
    table = c2_table(nft)
    sub4, sub6 = subscribers
    out = [
        f"# Mamori M7 C&C blocking (consent), action {action_id}: {endpoints.count:,} C&C "
        f"endpoints, {len(sub4) + len(sub6):,} consenting subscriber addresses\n",
        f"table inet {table}\ndelete table inet {table}\n",
        f'table inet {table} {{\n\tcomment "mamori {action_id}"\n',
        _set("subscribers4", "ipv4_addr", sub4, True),
        _set("subscribers6", "ipv6_addr", sub6, True),
        _set("c2_4", "ipv4_addr . inet_proto . inet_service", endpoints.v4, False),
        _set("c2_6", "ipv6_addr . inet_proto . inet_service", endpoints.v6, False),
        _set("c2_4_any", "ipv4_addr", endpoints.v4_any, True),
        _set("c2_6_any", "ipv6_addr", endpoints.v6_any, True),
        f"\tchain filter {{\n\t\ttype filter hook {nft.hook} priority {nft.priority}; "
        "policy accept;\n",
    ]
    for fam, v in (("ip", "4"), ("ip6", "6")):
        out += [
            f"\t\t{fam} saddr @subscribers{v} {fam} daddr . meta l4proto . th dport @c2_{v} "
            'counter drop comment "M7: to a C&C endpoint"\n',
            f"\t\t{fam} daddr @subscribers{v} {fam} saddr . meta l4proto . th sport @c2_{v} "
            'counter drop comment "M7: from a C&C endpoint"\n',
            f"\t\t{fam} saddr @subscribers{v} {fam} daddr @c2_{v}_any "
            'counter drop comment "M7: to a C&C address"\n',
            f"\t\t{fam} daddr @subscribers{v} {fam} saddr @c2_{v}_any "
            'counter drop comment "M7: from a C&C address"\n',
        ]
    out.append("\t}\n}\n")
    return "".join(out)


def render_subscribers(subscribers: tuple[Sequence[str], Sequence[str]], nft: NftConfig) -> str:
    """Replace the consenting addresses in one transaction (nothing else changes)."""
    table = c2_table(nft)
    out = []
    for v, values in (("4", subscribers[0]), ("6", subscribers[1])):
        out.append(f"flush set inet {table} subscribers{v}\n")
        if values:
            out.append(f"add element inet {table} subscribers{v} {{ {', '.join(values)} }}\n")
    return "".join(out)


class C2BlockBackend(NftBackend):
    """Applies a C&C list action: the whole table with the endpoints and consenting addresses it
    was proposed with (withdrawing is the nftables back end's: the table goes while it is still
    that action's)."""

    def __init__(
        self,
        config: MamoriConfig,
        endpoints: C2Endpoints,
        subscribers: tuple[Sequence[str], Sequence[str]],
        *,
        command: Sequence[str] | None = None,
    ) -> None:
        super().__init__(config, command=command)
        self.endpoints = endpoints
        self.subscribers = subscribers

    def render_c2(self, actions: Sequence[Action]) -> list[str]:
        return [
            render_c2_table(self.endpoints, self.subscribers, self.nft, a.action_id)
            for a in actions
        ]

    def apply(self, actions: Sequence[Action]) -> None:
        for text in self.render_c2(actions):
            run_nft(self.command, ["-f", "-"], text)


@dataclass(frozen=True)
class C2SyncResult:
    action_id: str | None  # the list version in force
    renewed: bool  # a new list version was applied (list changed, renewal due, router lost it)
    endpoints: int
    subscribers: int
    seconds: float


def _current(gov: Governance, actor: str) -> Action | None:
    applied = [
        a
        for a in act.current(gov, actor, [MEASURE]).values()
        if a.kind is ActionKind.NFTABLES
        and a.state is ActionState.APPLIED
        and a.target.startswith(TARGET_PREFIX)
    ]
    return max(applied, key=lambda a: a.created) if applied else None


def sync_c2_block(
    gov: Governance,
    actor: str,
    *,
    now: datetime | None = None,
    command: Sequence[str] | None = None,
    force: bool = False,
) -> C2SyncResult:
    """Bring the router's C&C table in step with the lists, consent and allocations."""
    t0 = time.perf_counter()
    at = now or datetime.now(UTC)
    cfg = gov.config
    nft = cfg.network.nft
    cmd = tuple(command or nft.command)
    endpoints = c2_endpoints(gov, actor, at=at)
    subs = consenting_addresses(gov, actor, at=at)
    n_subs = len(subs[0]) + len(subs[1])
    digest = endpoints.digest()
    life = timedelta(days=cfg.network.c2_block_expiry_days)
    cur = _current(gov, actor)
    owner = table_owner(cmd, "inet", c2_table(nft))
    renew = (
        force
        or cur is None
        or not cur.target.endswith(digest)
        or cur.expires - at < life / 2
        or owner != cur.action_id
    )
    if not renew:
        assert cur is not None
        run_nft(cmd, ["-f", "-"], render_subscribers(subs, nft))
        return C2SyncResult(cur.action_id, False, endpoints.count, n_subs,
                            time.perf_counter() - t0)  # fmt: skip
    proposal = Action(
        action_id=f"c2-ip-{digest[:12]}-{at:%Y%m%dT%H%M%S%fZ}",
        kind=ActionKind.NFTABLES,
        target=f"{TARGET_PREFIX}{c2_table(nft)}:{digest}",
        measure=MEASURE,
        legal_basis=LegalBasis.CONSENT,
        created=at,
        expires=at + life,
        subscribers_affected=n_subs,
    )
    detail = {"endpoints": endpoints.count, "rejected": endpoints.rejected, "digest": digest}
    backend = C2BlockBackend(cfg, endpoints, subs, command=cmd)
    [proposed] = act.propose(gov, [proposal], actor, now=at, detail=detail)
    [approved] = act.approve(gov, [proposed], actor, now=at)
    [applied] = act.apply(gov, [approved], actor, backend=backend, now=at, detail=detail)
    if cur is not None:  # replaced, not withdrawn: the new table is in force
        replaced = {"superseded_by": applied.action_id}
        if cur.due(at):
            act.expire(gov, [cur], actor, now=at, detail=replaced)
        else:
            act.end(gov, [cur], actor, now=at, detail=replaced)
    return C2SyncResult(applied.action_id, True, endpoints.count, n_subs, time.perf_counter() - t0)


def watch_c2_block(
    gov: Governance,
    actor: str,
    *,
    interval_s: float | None = None,
    stop: threading.Event | None = None,
    command: Sequence[str] | None = None,
    on_sync: Callable[[C2SyncResult], None] | None = None,
) -> None:
    """Re-sync whenever consent, allocations or the lists change (file names, sizes and times
    of the store — nothing is read until something changed), until ``stop`` is set."""
    every = interval_s or gov.config.dns.sync_interval_s
    stop = stop or threading.Event()
    seen: str | None = None
    while not stop.is_set():
        fp = store_fingerprint(gov.config.store, ("consent", "allocations", "reputation"))
        if fp != seen:
            try:
                result = sync_c2_block(gov, actor, command=command)
            except NftError as exc:
                log.error("c2-block: %s (retrying in %.1f s)", exc, every)
            else:
                seen = fp
                if on_sync is not None:
                    on_sync(result)
        stop.wait(every)
