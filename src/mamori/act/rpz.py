"""RPZ zones from reputation data (M7: block C&C names; M8: send malware and phishing sites to the
warning page).

Two zones, one per measure, so a resolver can apply each only to the clients who are in for it
(Unbound: ``rpz:`` with ``tags:``; BIND: ``response-policy`` per view). Zone files are built with
Arrow string kernels — a million names take a few seconds — written beside the old file and renamed
over it, and carry a serial that only ever goes up, so any resolver reading the file or
transferring the zone sees a consistent, newer version.

Policy actions (RFC draft-vixie-dnsop-dns-rpz): ``CNAME .`` is NXDOMAIN, ``CNAME *.`` is NODATA,
``CNAME rpz-drop.`` drops the query, ``CNAME host.`` rewrites to the warning page host.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from mamori.act import base as act
from mamori.act.base import Action, ActionKind, ActionState
from mamori.config import DnsConfig, MamoriConfig
from mamori.governance import AccessRefused, Governance, LegalBasis
from mamori.ingest.reputation import current_reputation

__all__ = [
    "C2_CATEGORIES",
    "WARNING_CATEGORIES",
    "WARN_PREFIX",
    "RpzBackend",
    "RpzResult",
    "ZoneBuild",
    "ZonePlan",
    "action_serial",
    "atomic_write",
    "build_zone",
    "generate_rpz",
    "next_serial",
    "policy_ips",
    "policy_names",
    "rpz_dir",
    "rpz_ip_owner",
    "text_bytes",
    "zone_head",
]

log = logging.getLogger(__name__)

C2_CATEGORIES = ("c2",)
# first-stage servers hand out malware: a browser reaching one is shown the warning page, and a
# loader fetching from one gets HTML instead of its payload.
WARNING_CATEGORIES = ("malware-site", "phishing", "first-stage")
WARN_PREFIX = "warn-ip:"
"""Target of a ``warn`` action (kind ``rpz``, M8, proposed from a finding in the console): one
address whose rpz-ip trigger the warning zone carries while the action is approved or in force.
The zone build puts approved ones in force; an ended, rejected or expired one is left out of the
next build."""

C2Action = Literal["nxdomain", "nodata", "drop", "cname-warning"]

# Lower-case LDH labels (underscore allowed: it appears in real feeds), at least two labels, so a
# feed entry can never list a whole top-level domain.
_NAME_RE = (
    r"^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+"
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
_URL_HOST_RE = r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^/?#@]*@)?(?P<host>[^/:?#\[\]]+)"
_IPV4_RE = r"^[0-9]+(?:\.[0-9]+){3}$"
_SERIAL_RE = re.compile(rb"\bSOA\s+\S+\s+\S+\s+\(?\s*(\d+)", re.IGNORECASE)
_MAX_LOGGED = 5


class ZoneBuild(BaseModel):
    """A zone file written for one measure."""

    model_config = ConfigDict(frozen=True)

    measure: str
    zone: str
    path: Path
    serial: int
    names: int  # distinct listed names
    ips: int = 0  # distinct listed addresses (rpz-ip triggers: names that resolve to them)
    records: int  # policy records written (names, plus wildcards)
    rejected: int  # feed entries that are not usable host names
    seconds: float


class RpzResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    zones: tuple[ZoneBuild, ...]

    def by_measure(self, measure: str) -> ZoneBuild:
        for z in self.zones:
            if z.measure == measure:
                return z
        raise KeyError(measure)


def rpz_dir(config: MamoriConfig) -> Path:
    return config.dns.rpz_dir or config.store / "_state" / "rpz"


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _zone_file(zone: str) -> str:
    return _fqdn(zone).rstrip(".") + ".zone"


def policy_names(
    reputation: pa.Table,
    categories: Sequence[str],
    *,
    at: datetime,
    url_hosts: bool = True,
    never_block: Sequence[str] = (),
) -> tuple[pa.Array, int]:
    """Distinct, valid, lower-case names (no trailing dot) of current entries in ``categories``,
    and how many entries were rejected as unusable names. Rejections are logged (row numbers)."""
    if reputation.num_rows == 0:
        return pa.array([], pa.string()), 0
    cat = reputation.column("category")
    keep = pc.is_in(cat, value_set=pa.array(list(categories), pa.string()))
    expires = reputation.column("expires")
    current = pc.or_kleene(pc.is_null(expires), pc.greater(expires, pa.scalar(at, expires.type)))
    keep = pc.and_(pc.fill_null(keep, False), pc.fill_null(current, False))
    kind = reputation.column("indicator_type")
    domain = reputation.column("domain")
    from_domain = pc.and_(keep, pc.equal(kind, "domain"))
    candidates = pc.if_else(from_domain, domain, pa.scalar(None, pa.string()))
    if url_hosts and "url" in reputation.column_names:
        from_url = pc.and_(keep, pc.equal(kind, "url"))
        url = reputation.column("url")
        host = pc.struct_field(pc.extract_regex(pc.fill_null(url, ""), _URL_HOST_RE), "host")
        # A URL on a bare address says nothing about a name (rpz-ip triggers are a later step).
        host = pc.if_else(pc.match_substring_regex(host, _IPV4_RE), None, host)
        candidates = pc.if_else(pc.fill_null(from_url, False), host, candidates)
    url_text = reputation.column("url") if "url" in reputation.column_names else domain
    offered = pc.fill_null(
        pc.and_(keep, pc.or_(pc.equal(kind, "domain"), pc.equal(kind, "url"))), False
    )
    names = pc.utf8_lower(pc.utf8_trim(candidates, " \t"))
    names = pc.utf8_rtrim(names, ".")
    names = pc.if_else(pc.starts_with(names, "*."), pc.utf8_slice_codeunits(names, 2), names)
    valid = pc.and_(
        pc.match_substring_regex(names, _NAME_RE),
        pc.less_equal(pc.utf8_length(names), 253),
    )
    valid = pc.fill_null(valid, False)
    for suffix in never_block:
        s = suffix.lower().strip(".")
        spared = pc.or_(pc.equal(names, s), pc.ends_with(names, "." + s))
        valid = pc.and_(valid, pc.invert(pc.fill_null(spared, False)))
    bad = pc.and_(offered, pc.invert(valid))
    rejected = pc.sum(bad).as_py() or 0
    if rejected:
        rows = pc.indices_nonzero(bad).to_pylist()[:_MAX_LOGGED]
        shown = ", ".join(
            f"row {r}: {(domain[r].as_py() or url_text[r].as_py() or '')[:80]!r}" for r in rows
        )  # at most five rows
        log.warning("rpz: %d reputation entries are not usable names (%s …)", rejected, shown)
    combined = pc.filter(names, valid)
    if isinstance(combined, pa.ChunkedArray):
        combined = combined.combine_chunks()
    return pc.unique(combined), int(rejected)


def rpz_ip_owner(address: str) -> str:
    """The rpz-ip trigger name of one address (draft-vixie-dnsop-dns-rpz §4.3): the prefix length,
    then the address reversed — IPv4 octets, IPv6 16-bit words with ``zz`` for the ``::`` run."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return f"32.{'.'.join(reversed(str(ip).split('.')))}.rpz-ip"
    words = ip.compressed.split(":")
    if "" in words:  # the :: run, once; leading/trailing "::" leave two empty parts
        i = words.index("")
        words = [w for w in words[:i] if w] + ["zz"] + [w for w in words[i + 1 :] if w]
    return f"128.{'.'.join(reversed(words))}.rpz-ip"


def policy_ips(reputation: pa.Table, categories: Sequence[str], *, at: datetime) -> pa.Array:
    """rpz-ip trigger names of the current entries in ``categories`` that give an address, so a
    name the lists do not know but that resolves to a listed address is caught too. Distinct,
    sorted; unusable addresses are left out."""
    if reputation.num_rows == 0 or "ip" not in reputation.column_names:
        return pa.array([], pa.string())
    keep = pc.is_in(reputation.column("category"), value_set=pa.array(list(categories)))
    expires = reputation.column("expires")
    current = pc.or_kleene(pc.is_null(expires), pc.greater(expires, pa.scalar(at, expires.type)))
    keep = pc.and_(pc.fill_null(keep, False), pc.fill_null(current, False))
    ips = pc.unique(pc.drop_null(pc.filter(reputation.column("ip"), keep)).combine_chunks())
    owners = set()
    for text in ips.to_pylist():  # distinct addresses of a feed: thousands, not millions
        try:
            owners.add(rpz_ip_owner(str(text).strip()))
        except ValueError:
            continue
    return pa.array(sorted(owners), pa.string())


def next_serial(path: Path, now: float | None = None) -> int:
    """A serial above the one in the zone file at ``path`` (if any): the current time in seconds
    when that is larger, so serials also say when a zone was made."""
    stamp = int(now if now is not None else time.time())
    previous = 0
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
        m = _SERIAL_RE.search(head)
        if m:
            previous = int(m.group(1))
    except FileNotFoundError:
        pass
    serial = max(previous + 1, stamp)
    if serial >= 2**32:  # RFC 1982 arithmetic would wrap; reaching this needs a broken clock
        raise ValueError(f"serial {serial} of {path} does not fit 32 bits")
    return serial


def _lines(names: pa.Array, prefix: str, rdata: Sequence[str]) -> list[pa.Array]:
    """``<prefix><name> <rdata>\\n`` for every name and every rdata line, as Arrow strings."""
    out = []
    for r in rdata:
        parts: list[pa.Array | pa.Scalar] = [names, pa.scalar(f" {r}\n")]
        if prefix:
            parts.insert(0, pa.scalar(prefix))
        out.append(pc.binary_join_element_wise(*parts, pa.scalar("")))
    return out


def text_bytes(arrays: Sequence[pa.Array]) -> list[memoryview]:
    """The character data of string arrays: each element already ends with a newline, so the
    data buffer between the first and last offsets is the text, no per-line Python."""
    chunks: list[memoryview] = []
    for a in arrays:
        if len(a) == 0:
            continue
        width = pa.int64() if a.type == pa.large_string() else pa.int32()
        offsets = pa.Array.from_buffers(width, len(a) + 1, [None, a.buffers()[1]], offset=a.offset)
        lo, hi = offsets[0].as_py(), offsets[-1].as_py()
        data = a.buffers()[2]
        chunks.append(memoryview(data)[lo:hi])
    return chunks


def atomic_write(path: Path, chunks: Sequence[bytes | memoryview]) -> None:
    """Write ``path`` so readers see either the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            for c in chunks:
                fh.write(c)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def zone_head(zone: str, serial: int, ttl: int = 300) -> bytes:
    """$ORIGIN, $TTL, SOA and NS of a policy zone."""
    return (
        f"; RPZ written by Mamori at {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        f"$ORIGIN {_fqdn(zone)}\n$TTL {ttl}\n"
        f"@ IN SOA localhost. hostmaster.localhost. {serial} 3600 600 604800 {ttl}\n"
        "@ IN NS localhost.\n"
    ).encode("ascii")


def build_zone(
    path: Path,
    zone: str,
    names: pa.Array,
    rdata: Sequence[str],
    *,
    ttl: int = 300,
    subdomains: bool = True,
    serial: int | None = None,
    ip_triggers: pa.Array | None = None,
) -> tuple[int, int]:
    """Write an RPZ zone file listing ``names`` with the policy ``rdata`` lines (e.g. ``CNAME .``),
    and the ``ip_triggers`` (rpz-ip owner names, :func:`policy_ips`) with the same policy.
    Returns (serial, records)."""
    serial = serial if serial is not None else next_serial(path)
    head = zone_head(zone, serial, ttl)
    body = _lines(names, "", rdata)
    if subdomains:
        body += _lines(names, "*.", rdata)
    triggers = ip_triggers if ip_triggers is not None else pa.array([], pa.string())
    body += _lines(triggers, "", rdata)
    atomic_write(path, [head, *text_bytes(body)])
    return serial, (len(names) * (2 if subdomains else 1) + len(triggers)) * len(rdata)


def _c2_rdata(dns: DnsConfig, action: C2Action) -> list[str]:
    if action == "nxdomain":
        return ["CNAME ."]
    if action == "nodata":
        return ["CNAME *."]
    if action == "drop":
        return ["CNAME rpz-drop."]
    return _warning_rdata(dns)


def _warning_rdata(dns: DnsConfig) -> list[str]:
    if dns.warning_addrs:
        return [f"{'A' if a.version == 4 else 'AAAA'} {a}" for a in dns.warning_addrs]
    return [f"CNAME {_fqdn(dns.warning_host)}"]


_COLUMNS = ["indicator_type", "domain", "url", "ip", "category", "expires"]
_CATEGORIES_OF = {"M7": C2_CATEGORIES, "M8": WARNING_CATEGORIES}


def _rdata(dns: DnsConfig, measure: str, c2_action: C2Action) -> list[str]:
    return _c2_rdata(dns, c2_action) if measure == "M7" else _warning_rdata(dns)


class ZonePlan(BaseModel):
    """What applying one ``rpz`` action writes: its zone, with these names, at this serial."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    action_id: str
    zone: str
    path: Path
    serial: int
    names: pa.Array
    rdata: tuple[str, ...]
    ips: pa.Array | None = None


def action_serial(action: Action) -> int:
    """The zone serial an ``rpz`` action put in force (its id is ``rpz-<measure>-<serial>``)."""
    return int(action.action_id.rsplit("-", 1)[1])


def _serial_in_force(path: Path) -> int | None:
    try:
        with path.open("rb") as fh:
            m = _SERIAL_RE.search(fh.read(4096))
    except FileNotFoundError:
        return None
    return int(m.group(1)) if m else None


class RpzBackend:
    """The RPZ back end: an ``rpz`` action is one zone (its target) at one serial.

    ``apply`` writes the zone with the names the action was proposed with (``lists``, per
    measure); ``withdraw`` empties the zone, at a new serial, unless a newer zone has replaced the
    action's already (then there is nothing of it left to withdraw).
    """

    kind = ActionKind.RPZ

    def __init__(
        self,
        config: MamoriConfig,
        *,
        out_dir: Path | None = None,
        dns: DnsConfig | None = None,
        c2_action: C2Action | None = None,
        lists: Mapping[str, pa.Array] | None = None,
        ip_lists: Mapping[str, pa.Array] | None = None,
    ) -> None:
        self.dns = dns or config.dns
        self.out = out_dir or rpz_dir(config)
        self.c2_action: C2Action = c2_action or self.dns.c2_action
        self.lists = dict(lists or {})
        self.ip_lists = dict(ip_lists or {})
        self.written: dict[str, int] = {}  # action id -> policy records written

    def render(self, actions: Sequence[Action]) -> list[ZonePlan]:
        empty = pa.array([], pa.string())
        return [
            ZonePlan(
                action_id=a.action_id,
                zone=_fqdn(a.target),
                path=self.out / _zone_file(a.target),
                serial=action_serial(a),
                names=self.lists.get(a.measure, empty),
                rdata=tuple(_rdata(self.dns, a.measure, self.c2_action)),
                ips=self.ip_lists.get(a.measure),
            )
            for a in actions
        ]

    def apply(self, actions: Sequence[Action]) -> None:
        for p in self.render(actions):
            _, records = build_zone(
                p.path,
                p.zone,
                p.names,
                p.rdata,
                ttl=self.dns.ttl,
                subdomains=self.dns.subdomains,
                serial=p.serial,
                ip_triggers=p.ips,
            )
            self.written[p.action_id] = records

    def withdraw(self, actions: Sequence[Action]) -> None:
        for p in self.render(actions):
            if _serial_in_force(p.path) != p.serial:
                continue  # a newer zone replaced this one (or it is gone): nothing of it is left
            build_zone(p.path, p.zone, pa.array([], pa.string()), p.rdata, ttl=self.dns.ttl)


def generate_rpz(
    gov: Governance,
    actor: str,
    *,
    out_dir: Path | None = None,
    c2_action: C2Action | None = None,
    warning_host: str | None = None,
    at: datetime | None = None,
    record_action: bool = True,
) -> RpzResult:
    """Read current reputation entries (through governance, under M7 and M8) and write both zones.

    Each zone is an ``rpz`` action of its measure (:mod:`mamori.act.base`): proposed, approved by
    the actor who runs this (running it is the operator's decision, as before the contract), and
    applied by writing the zone; it expires after ``dns.zone_expiry_days`` unless a newer zone
    ends it first.
    """
    cfg = gov.config
    dns = cfg.dns
    if warning_host is not None:
        dns = dns.model_copy(update={"warning_host": warning_host})
    action: C2Action = c2_action or dns.c2_action
    out = out_dir or rpz_dir(cfg)
    now = at or datetime.now(UTC)
    builds = []
    for measure, zone in (("M7", dns.c2_zone), ("M8", dns.warning_zone)):
        t0 = time.perf_counter()
        # per source, its latest load only: a name a feed no longer lists leaves the zone
        rep = current_reputation(gov, measure, actor, now).select(_COLUMNS)
        names, rejected = policy_names(
            rep,
            _CATEGORIES_OF[measure],
            at=now,
            url_hosts=dns.url_hosts,
            never_block=dns.never_block,
        )
        # C&C addresses (M7): names that resolve to them are caught by rpz-ip triggers
        ips = policy_ips(rep, C2_CATEGORIES, at=now) if measure == "M7" else None
        warns = _warn_actions(gov, actor, now) if measure == "M8" and record_action else []
        if warns:  # endpoints a person decided to warn about (M8, proposed from a finding)
            owners = sorted({rpz_ip_owner(a.target.removeprefix(WARN_PREFIX)) for a in warns})
            ips = pa.array(owners, pa.string())
        path = out / _zone_file(zone)
        backend = RpzBackend(
            cfg,
            out_dir=out,
            dns=dns,
            c2_action=action,
            lists={measure: names},
            ip_lists={measure: ips} if ips is not None else None,
        )
        proposal = Action(
            action_id=f"rpz-{measure}-{next_serial(path)}",
            kind=ActionKind.RPZ,
            target=_fqdn(zone),
            measure=measure,
            legal_basis=LegalBasis.CONSENT,
            created=now,
            expires=now + timedelta(days=dns.zone_expiry_days),
            subscribers_affected=_subscribers_protected(gov, measure, actor)
            if record_action
            else None,
        )
        if record_action:
            _apply_zone(gov, actor, backend, proposal, now, len(names), rejected, len(ips or []))
            pending = [a for a in warns if a.state is ActionState.APPROVED]
            # in force now: the zone just written carries them (no back end of their own)
            act.apply(gov, pending, actor, now=now, detail={"zone": proposal.action_id})
        else:
            backend.apply([proposal])
        serial = action_serial(proposal)
        took = time.perf_counter() - t0
        build = ZoneBuild(
            measure=measure,
            zone=_fqdn(zone),
            path=path,
            serial=serial,
            names=len(names),
            ips=len(ips or []),
            records=backend.written[proposal.action_id],
            rejected=rejected,
            seconds=took,
        )
        builds.append(build)
    return RpzResult(zones=tuple(builds))


def _warn_actions(gov: Governance, actor: str, now: datetime) -> list[Action]:
    """The warnings the zone must carry: ``warn`` actions approved or in force, not past expiry."""
    keep = (ActionState.APPROVED, ActionState.APPLIED)
    return [
        a
        for a in act.current(gov, actor, ["M8"]).values()
        if a.kind is ActionKind.RPZ
        and a.target.startswith(WARN_PREFIX)
        and a.state in keep
        and not a.due(now)
    ]


def _subscribers_protected(gov: Governance, measure: str, actor: str) -> int | None:
    """How many subscribers the zone applies to: those with an address on record who have not
    opted out of ``measure`` (governance leaves the others out of the read). For the
    transparency report's "subscribers affected"."""
    try:
        grant = gov.open(measure, "allocations", ["subscriber_id"], actor)
    except AccessRefused:
        return None
    try:
        n = grant.sql(f"SELECT count(DISTINCT subscriber_id) FROM {grant.name}").fetchall()[0][0]
    finally:
        grant.sandbox.close()
    return int(n or 0)


def _apply_zone(
    gov: Governance,
    actor: str,
    backend: RpzBackend,
    proposal: Action,
    now: datetime,
    names: int,
    rejected: int,
    ips: int = 0,
) -> None:
    """propose → approve → apply (write the zone) → end the zone it replaced."""
    detail = {
        "names": names,
        "rejected": rejected,
        "serial": action_serial(proposal),
        "subscribers": proposal.subscribers_affected,
    }
    if ips:
        detail["ips"] = ips
    earlier = [
        a
        for a in act.current(gov, actor, [proposal.measure]).values()
        if a.kind is ActionKind.RPZ
        and a.state is ActionState.APPLIED
        and a.target == proposal.target
    ]
    [proposed] = act.propose(gov, [proposal], actor, now=now, detail=detail)
    [approved] = act.approve(gov, [proposed], actor, now=now)
    [applied] = act.apply(gov, [approved], actor, backend=backend, now=now, detail=detail)
    # replaced, not withdrawn: the new zone is in force (no back end)
    replaced = {"superseded_by": applied.action_id}
    act.end(gov, [a for a in earlier if not a.due(now)], actor, now=now, detail=replaced)
    act.expire(gov, [a for a in earlier if a.due(now)], actor, now=now, detail=replaced)
