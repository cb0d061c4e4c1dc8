"""Keep a resolver's per-subscriber policy in step with consent (M7, M8).

Unbound applies an ``rpz:`` zone with ``tags:`` only to clients whose ``access-control-tag`` carries
one of those tags. Mamori writes one include file of ``access-control-tag`` lines — the addresses
currently allocated (allocations dataset) to subscribers who are in for M7 (tag ``m7``) and M8
(tag ``m8``), read through governance so opted-out subscribers are already gone — and asks Unbound
to ``reload_keep_cache``: the same process re-reads its configuration and keeps its cache.

A client with no allocation record gets no tag, hence no policy: consent cannot be checked for
it. A CGNAT port-block allocation names a shared public address, which a resolver on the
subscriber side never sees; only whole-address allocations become tags.

``watch`` polls the store's consent, allocation and reputation directories (file names, sizes and
times only — no data is read until something changed) and re-syncs within ``sync_interval_s``.

BIND 9 applies a ``response-policy`` per view, so each combination of measures is a view whose
``match-clients`` is an ACL Mamori writes (``clients-bind.conf``); :func:`bind_snippet` prints the
views. ``rndc reconfig`` re-reads the ACLs without re-reading unchanged zone files (a tenth of a
second with a million names), so with BIND (:class:`RndcControl`) every change is applied exactly
and at once: no opt-out zone, no spacing of reloads.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from mamori.act.rpz import (
    RpzResult,
    atomic_write,
    generate_rpz,
    next_serial,
    rpz_dir,
    text_bytes,
    zone_head,
)
from mamori.config import MamoriConfig
from mamori.governance import Governance

__all__ = [
    "BIND_VIEWS",
    "TAGS",
    "ResolverControl",
    "ResolverError",
    "RndcControl",
    "SyncResult",
    "UnboundControl",
    "bind_acl_file",
    "bind_snippet",
    "clients_file",
    "consenting_clients",
    "optout_file",
    "parse_clients",
    "prepare_resolver_files",
    "render_bind_acls",
    "render_clients",
    "resolver_control",
    "sync_resolver",
    "unbound_snippet",
    "watch",
    "withdrawn",
]

log = logging.getLogger(__name__)

# Unbound tag of each measure; the names appear in the operator's unbound.conf (docs/dns.md).
TAGS = {"M7": "m7", "M8": "m8"}
# BIND view (and ACL) of each combination of measures, with the measures it applies, in the order
# named matches them; the names appear in the operator's named.conf (docs/dns.md).
BIND_VIEWS = {"mamori-m7-m8": ("M7", "M8"), "mamori-m7": ("M7",), "mamori-m8": ("M8",)}
_ALLOC_COLUMNS = ["start", "end", "addr", "port_start", "port_end", "subscriber_id"]
_IPV4 = r"^[0-9]{1,3}(?:\.[0-9]{1,3}){3}$"


class ResolverError(RuntimeError):
    """The resolver could not be told (unbound-control failed); the message has its output."""


class SyncResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    clients_file: Path
    clients: dict[str, int]  # measure -> addresses tagged
    changed: bool  # the tag file changed and the resolver was reloaded
    passthru: int = 0  # addresses in the opt-out zone, waiting for the next reload
    pending: bool = False  # tags differ from what the resolver applies (reload not yet due)
    zones: RpzResult | None = None
    seconds: float


def clients_file(config: MamoriConfig) -> Path:
    return config.dns.clients_file or config.store / "_state" / "resolver" / "clients.conf"


def consenting_clients(
    gov: Governance,
    actor: str,
    *,
    at: datetime | None = None,
    measures: Sequence[str] = tuple(TAGS),
) -> dict[str, pa.Array]:
    """Per measure (M7, M8): sorted distinct client addresses (text, with a /prefix) whose current
    allocation belongs to a subscriber who is in for that measure."""
    now = at or datetime.now(UTC)
    out: dict[str, pa.Array] = {}
    for measure in measures:
        t = gov.open(measure, "allocations", _ALLOC_COLUMNS, actor).arrow()
        ts = pa.scalar(now, pa.timestamp("ms", tz="UTC"))
        current = pc.and_(
            pc.less_equal(t.column("start"), ts),
            pc.or_kleene(pc.is_null(t.column("end")), pc.greater(t.column("end"), ts)),
        )
        whole = pc.is_null(t.column("port_start"))
        addr = pc.filter(
            pc.utf8_trim_whitespace(t.column("addr")), pc.fill_null(pc.and_(current, whole), False)
        )
        both = _prefixes(addr, measure)
        distinct = pc.unique(both)
        out[measure] = pc.take(distinct, pc.sort_indices(distinct))
    return out


def _prefixes(addr: pa.Array, what: str) -> pa.Array:
    """``addr/len`` text for each valid address or prefix; anything else is counted, logged and
    left out (a bad line would make Unbound refuse its whole configuration)."""
    if isinstance(addr, pa.ChunkedArray):
        addr = addr.combine_chunks()
    is4 = pc.fill_null(pc.match_substring_regex(addr, _IPV4), False)
    v4 = pc.filter(addr, is4)
    if len(v4):
        octets = pc.list_flatten(pc.split_pattern(v4, ".")).cast(pa.int32()).to_numpy()
        ok4 = pa.array(octets.reshape(-1, 4).max(axis=1) <= 255)
    else:
        ok4 = pa.array([], pa.bool_())
    bad = len(v4) - (pc.sum(ok4).as_py() or 0)
    good = [pc.binary_join_element_wise(pc.filter(v4, ok4), "/32", "")]
    others = pc.filter(addr, pc.invert(is4)).to_pylist()
    rest: list[str] = []
    for text in others:
        try:
            rest.append(ipaddress.ip_network(text, strict=False).with_prefixlen)
        except (ValueError, TypeError):
            bad += 1
    if bad:
        log.warning("resolver: %d allocation addresses (%s) are not addresses; left out", bad, what)
    good.append(pa.array(rest, pa.string()))
    return pa.chunked_array(good, pa.string()).combine_chunks()


def render_clients(clients: dict[str, pa.Array]) -> bytes:
    """The Unbound include file: one ``access-control-tag`` line per address."""
    m7, m8 = (
        clients.get("M7", pa.array([], pa.string())),
        clients.get("M8", pa.array([], pa.string())),
    )
    all_addrs = pc.unique(pa.chunked_array([m7, m8], pa.string()).combine_chunks())
    all_addrs = pc.take(all_addrs, pc.sort_indices(all_addrs))
    in7 = pc.is_in(all_addrs, value_set=m7)
    in8 = pc.is_in(all_addrs, value_set=m8)
    tags = pc.if_else(
        pc.and_(in7, in8),
        f'"{TAGS["M7"]} {TAGS["M8"]}"',
        pc.if_else(in7, f'"{TAGS["M7"]}"', f'"{TAGS["M8"]}"'),
    )
    lines = pc.binary_join_element_wise("  access-control-tag: ", all_addrs, " ", tags, "\n", "")
    head = (
        "# Written by `mamori act resolver-sync`: addresses of subscribers in for M7 (tag m7)\n"
        "# and M8 (tag m8). Regenerated on every consent or allocation change; do not edit.\n"
        "server:\n"
    )
    return head.encode("ascii") + b"".join(bytes(c) for c in text_bytes([lines]))


def bind_acl_file(config: MamoriConfig) -> Path:
    return clients_file(config).with_name("clients-bind.conf")


def render_bind_acls(clients: dict[str, pa.Array]) -> bytes:
    """BIND ``acl`` statements for the same client sets: a view applies its response-policy to
    all its clients, so each combination of measures gets its own ACL (and view, docs/dns.md)."""
    empty = pa.array([], pa.string())
    m7, m8 = clients.get("M7", empty), clients.get("M8", empty)
    both = pc.filter(m7, pc.is_in(m7, value_set=m8))
    only7 = pc.filter(m7, pc.invert(pc.is_in(m7, value_set=m8)))
    only8 = pc.filter(m8, pc.invert(pc.is_in(m8, value_set=m7)))
    out = ["# Written by `mamori act resolver-sync`; apply with `rndc reconfig`. Do not edit.\n"]
    for name, addrs in zip(BIND_VIEWS, (both, only7, only8), strict=True):
        body = "".join(f"  {a};\n" for a in addrs.to_pylist()) or "  none;\n"
        out.append(f'acl "{name}" {{\n{body}}};\n')
    return "".join(out).encode("ascii")


class _Control:
    """A resolver's control program, run with the operator's options."""

    kind = ""

    def __init__(self, command: Sequence[str], timeout_s: float = 60.0) -> None:
        self.command = tuple(command)
        self.timeout_s = timeout_s

    def __call__(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [*self.command, *args],
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ResolverError(f"{' '.join(self.command)} {' '.join(args)}: {exc}") from None
        text = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or text.startswith("error"):
            raise ResolverError(f"{' '.join(self.command)} {' '.join(args)} failed: {text}")
        return text


class UnboundControl(_Control):
    """``unbound-control`` with the operator's options (``-c unbound.conf``, ``-s host@port``)."""

    kind = "unbound"

    def reload_clients(self) -> None:
        """Re-read the configuration (and with it the tag file and every zone), same process."""
        self("reload_keep_cache")

    def reload_zone(self, zone: str, measure: str) -> None:
        self("auth_zone_reload", _fqdn(zone))


class RndcControl(_Control):
    """``rndc`` with the operator's options (``-c rndc.conf``, ``-s server``, ``-p port``): BIND 9
    with the views of :func:`bind_snippet`."""

    kind = "bind"

    def reload_clients(self) -> None:
        """Re-read named.conf and with it the ACLs; unchanged zone files are not re-read."""
        self("reconfig")

    def reload_zone(self, zone: str, measure: str) -> None:
        # every view holds its own copy of the zone (BIND refuses a response-policy zone shared
        # with in-view), so each copy is reloaded
        for view, measures in BIND_VIEWS.items():
            if measure in measures:
                self("reload", zone.rstrip("."), "IN", view)


ResolverControl = UnboundControl | RndcControl


def resolver_control(command: Sequence[str], timeout_s: float = 60.0) -> ResolverControl:
    """The control for ``command``: ``rndc …`` drives BIND 9, anything else is unbound-control."""
    if command and Path(command[0]).name == "rndc":
        return RndcControl(command, timeout_s)
    return UnboundControl(command, timeout_s)


def optout_file(config: MamoriConfig) -> Path:
    return rpz_dir(config) / (config.dns.optout_zone.rstrip(".") + ".zone")


_TAG_LINE = r'^\s*access-control-tag:\s*(?P<addr>\S+)\s+"(?P<tags>[^"]*)"'


def parse_clients(text: bytes) -> dict[str, pa.Array]:
    """The tag sets an include file written by :func:`render_clients` applies."""
    lines = pa.array(text.decode("ascii", errors="replace").splitlines(), pa.string())
    parts = pc.extract_regex(lines, _TAG_LINE)
    parts = pc.filter(parts, pc.is_valid(parts))
    addr, tags = pc.struct_field(parts, "addr"), pc.struct_field(parts, "tags")
    out = {}
    for measure, tag in TAGS.items():
        has = pc.match_substring_regex(tags, rf"(^|\s){tag}(\s|$)")
        out[measure] = pc.filter(addr, has)
    return out


def _rpz_client_ip(prefixes: list[str]) -> list[str]:
    """RPZ client-IP trigger owner names (``<len>.<reversed address>.rpz-client-ip``)."""
    out = []
    for text in prefixes:
        net = ipaddress.ip_network(text, strict=False)
        if net.version == 4:
            rev = ".".join(reversed(str(net.network_address).split(".")))
        else:
            groups = net.network_address.exploded.split(":")
            rev = ".".join(g.lstrip("0") or "0" for g in reversed(groups))
        out.append(f"{net.prefixlen}.{rev}.rpz-client-ip")
    return out


def withdrawn(applied: dict[str, pa.Array], wanted: dict[str, pa.Array]) -> list[str]:
    """Addresses the resolver still tags for a measure whose subscriber is no longer in."""
    gone: set[str] = set()
    for measure in TAGS:
        have = applied.get(measure, pa.array([], pa.string()))
        want = wanted.get(measure, pa.array([], pa.string()))
        gone.update(pc.filter(have, pc.invert(pc.is_in(have, value_set=want))).to_pylist())
    return sorted(gone)


def sync_resolver(
    gov: Governance,
    actor: str,
    *,
    control: ResolverControl | None = None,
    zones: bool = False,
    at: datetime | None = None,
    force: bool = False,
) -> SyncResult:
    """Bring the resolver's client policy (and, with ``zones``, its RPZ zones) up to date.

    Unbound: two steps, because a reload re-reads every zone (seconds for a million names):

    * at once: addresses still tagged for a measure their subscriber has left go into the small
      opt-out zone (client-IP triggers, ``rpz-passthru``, first in order), reloaded alone with
      ``auth_zone_reload``. Consent withdrawn is honoured in well under a second. Until the next
      step such an address gets no policy at all, even of a measure it is still in for (RPZ stops
      at the first zone that matches a client) — erring on the side of not intervening.
    * the tag file is rewritten and Unbound told ``reload_keep_cache`` (same process, cache kept)
      when the tags changed and ``tag_reload_min_interval_s`` has passed since the last reload
      (or ``force``); the opt-out zone is emptied in the same step. New consent and new
      allocations wait for this step.

    BIND (:class:`RndcControl`): the ACL file is rewritten and ``rndc reconfig`` applies it at once
    (zone files are not re-read), whenever the client sets changed.
    """
    t0 = time.perf_counter()
    cfg = gov.config
    ctl = control or resolver_control(cfg.dns.resolver_control)
    bind = ctl.kind == "bind"
    wanted = consenting_clients(gov, actor, at=at)
    text = render_clients(wanted)
    path = clients_file(cfg)
    acls = bind_acl_file(cfg)
    old = path.read_bytes() if path.exists() else b""
    old_acls = acls.read_bytes() if acls.exists() else b""
    stale = old != text
    state = gov.state_dir("resolver") / "last_reload"
    last_reload = float(state.read_text()) if state.exists() else 0.0
    due = bind or time.time() - last_reload >= cfg.dns.tag_reload_min_interval_s
    built: RpzResult | None = None
    if zones:
        built = generate_rpz(gov, actor, at=at)
    optout = optout_file(cfg)
    passthru = withdrawn(parse_clients(old), wanted) if stale and not bind else []
    reloaded = False
    # first what is quick: withdrawn consent, through the small opt-out zone (Unbound)
    if not bind and _write_optout(optout, cfg.dns.optout_zone, passthru):
        try:
            ctl.reload_zone(cfg.dns.optout_zone, "M7")
        except ResolverError:
            optout.unlink(missing_ok=True)  # so the next sync writes and reloads it again
            raise
    if (stale and due) or force:
        if not bind:
            _write_optout(optout, cfg.dns.optout_zone, [])
        atomic_write(acls, [render_bind_acls(wanted)])
        atomic_write(path, [text])
        try:
            ctl.reload_clients()
        except ResolverError:
            # what the resolver applies is still the old files: keep those, so a retry reloads
            for file, before in ((path, old), (acls, old_acls)):
                if before:
                    atomic_write(file, [before])
                else:
                    file.unlink(missing_ok=True)
            raise
        state.write_text(repr(time.time()))
        reloaded = True
        passthru = []
    # Unbound's reload re-read the zones; BIND's reconfig does not
    if built is not None and (bind or not reloaded):
        for z in built.zones:
            ctl.reload_zone(z.zone, z.measure)
    counts = {m: len(a) for m, a in wanted.items()}
    gov.audit.append(
        actor=actor,
        event="action",
        measure="M7",
        legal_basis="consent",
        detail={
            "action": "resolver-sync",
            "resolver": ctl.kind,
            "clients": counts,
            "reloaded": reloaded,
            "withdrawn_pending_reload": len(passthru),
            "digest": hashlib.sha256(text).hexdigest()[:16],
        },
    )
    return SyncResult(
        clients_file=path,
        clients=counts,
        changed=reloaded,
        passthru=len(passthru),
        pending=stale and not reloaded,
        zones=built,
        seconds=time.perf_counter() - t0,
    )


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _write_optout(path: Path, zone: str, prefixes: list[str]) -> bool:
    """Write the opt-out zone if its triggers differ from what is there; True if written."""
    body = "".join(f"{o} CNAME rpz-passthru.\n" for o in _rpz_client_ip(prefixes))
    if path.exists():
        current = path.read_text(encoding="ascii", errors="replace")
        if current.split("@ IN NS localhost.\n", 1)[-1] == body:
            return False
    atomic_write(path, [zone_head(zone, next_serial(path)), body.encode("ascii")])
    return True


def prepare_resolver_files(gov: Governance, actor: str) -> RpzResult:
    """Write the zones, the client tags (Unbound) and ACLs (BIND) and an empty opt-out zone before
    the resolver first starts (its configuration names these files; it refuses to start without
    them)."""
    built = generate_rpz(gov, actor)
    clients = consenting_clients(gov, actor)
    atomic_write(bind_acl_file(gov.config), [render_bind_acls(clients)])
    atomic_write(clients_file(gov.config), [render_clients(clients)])
    _write_optout(optout_file(gov.config), gov.config.dns.optout_zone, [])
    return built


def _fingerprint(root: Path, datasets: Sequence[str]) -> str:
    """Names, sizes and modification times of a dataset's files: changes when anything is
    written, without reading any data."""
    h = hashlib.sha256()
    for ds in datasets:
        base = root / ds
        if not base.exists():
            continue
        for p in sorted(base.rglob("*.parquet")):
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def watch(
    gov: Governance,
    actor: str,
    *,
    control: ResolverControl | None = None,
    interval_s: float | None = None,
    stop: threading.Event | None = None,
    on_sync: Callable[[SyncResult], None] | None = None,
) -> None:
    """Re-sync whenever consent, allocations or reputation change, until ``stop`` is set."""
    cfg = gov.config
    every = interval_s or cfg.dns.sync_interval_s
    stop = stop or threading.Event()
    # the lists the zones were last built from survive restarts: a restarted watcher does not
    # rebuild (and make Unbound reload) zones that are already current
    rep_state = gov.state_dir("resolver") / "reputation_fingerprint"
    seen_clients: str | None = None
    seen_rep: str | None = rep_state.read_text() if rep_state.exists() else None
    pending = False
    pending_since = 0.0
    while not stop.is_set():
        fp_clients = _fingerprint(cfg.store, ("consent", "allocations"))
        fp_rep = _fingerprint(cfg.store, ("reputation",))
        due = pending and time.monotonic() >= pending_since + cfg.dns.tag_reload_min_interval_s
        if fp_clients != seen_clients or fp_rep != seen_rep or due:
            try:
                result = sync_resolver(
                    gov,
                    actor,
                    control=control,
                    zones=fp_rep != seen_rep,
                )
            except ResolverError as exc:
                log.error("resolver-sync: %s (retrying in %.1f s)", exc, every)
            else:
                if fp_rep != seen_rep:
                    rep_state.write_text(fp_rep)
                seen_clients, seen_rep = fp_clients, fp_rep
                if result.pending and not pending:
                    pending_since = time.monotonic()
                pending = result.pending
                if on_sync is not None:
                    on_sync(result)
        stop.wait(every)


def unbound_snippet(
    config: MamoriConfig, *, zone_dir: Path | None = None, include: Path | None = None
) -> str:
    """The ``unbound.conf`` lines that load Mamori's zones and client tags (see docs/dns.md)."""
    dns = config.dns
    zdir = zone_dir or rpz_dir(config)
    inc = include or clients_file(config)
    c2 = dns.c2_zone if dns.c2_zone.endswith(".") else dns.c2_zone + "."
    optout = _fqdn(dns.optout_zone)
    warn = dns.warning_zone if dns.warning_zone.endswith(".") else dns.warning_zone + "."
    return (
        "server:\n"
        f'  define-tag: "{TAGS["M7"]} {TAGS["M8"]}"\n'
        f'  include: "{inc}"\n'
        '  # RPZ needs the respip module, e.g. module-config: "respip validator iterator"\n'
        "rpz:\n"
        f'  name: "{optout}"\n'
        f'  zonefile: "{zdir / (optout.rstrip(".") + ".zone")}"\n'
        "rpz:\n"
        f'  name: "{c2}"\n'
        f'  zonefile: "{zdir / (c2.rstrip(".") + ".zone")}"\n'
        f'  tags: "{TAGS["M7"]}"\n'
        "rpz:\n"
        f'  name: "{warn}"\n'
        f'  zonefile: "{zdir / (warn.rstrip(".") + ".zone")}"\n'
        f'  tags: "{TAGS["M8"]}"\n'
    )


def bind_snippet(
    config: MamoriConfig, *, zone_dir: Path | None = None, include: Path | None = None
) -> str:
    """The ``named.conf`` lines (BIND 9.16+) that load Mamori's zones and client ACLs: one view per
    combination of measures, then a default view for everyone else (see docs/dns.md).

    Each view loads its own copy of its zones: named refuses a response-policy zone taken from
    another view with ``in-view``. The views share one cache (``attach-cache``): rewriting happens
    after the cache, so the cache holds only real answers, and a client that moves to another view
    when its consent changes keeps a warm cache. ``qname-wait-recurse no`` rewrites a listed name
    without first resolving it (no query reaches a C&C operator's name servers, as with Unbound);
    ``min-update-interval 0`` applies a reloaded zone at once instead of up to 60 s later."""
    dns = config.dns
    zdir = zone_dir or rpz_dir(config)
    inc = include or bind_acl_file(config)
    zones = {"M7": dns.c2_zone.rstrip("."), "M8": dns.warning_zone.rstrip(".")}
    out = [
        "# Mamori: ACLs written by `mamori act resolver-sync` (apply with `rndc reconfig`).\n",
        "# Keep rewritten queries' client addresses out of the log (M8):\n",
        "#   logging { category rpz { null; }; };\n",
        f'include "{inc}";\n',
    ]
    for view, measures in BIND_VIEWS.items():
        out.append(
            f'view "{view}" {{\n  match-clients {{ {view}; }};\n  recursion yes;\n'
            '  attach-cache "mamori";\n'
        )
        for m in measures:
            out.append(
                f'  zone "{zones[m]}" {{ type primary; file "{zdir / (zones[m] + ".zone")}"; }};\n'
            )
        policy = "".join(f'    zone "{zones[m]}" min-update-interval 0;\n' for m in measures)
        out.append(
            f"  response-policy {{\n{policy}  }} qname-wait-recurse no break-dnssec yes;\n}};\n"
        )
    out.append(
        "# everyone else: opted out, or no allocation record. Zones you already serve go in here.\n"
        'view "default" {\n  match-clients { any; };\n  recursion yes;\n'
        '  attach-cache "mamori";\n};\n'
    )
    return "".join(out)
