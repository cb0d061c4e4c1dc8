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
"""

from __future__ import annotations

import hashlib
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

from mamori.act.rpz import RpzResult, atomic_write, generate_rpz, rpz_dir, text_bytes
from mamori.config import MamoriConfig
from mamori.governance import Governance

__all__ = [
    "TAGS",
    "ResolverError",
    "SyncResult",
    "UnboundControl",
    "clients_file",
    "consenting_clients",
    "render_clients",
    "sync_resolver",
    "unbound_snippet",
    "watch",
]

log = logging.getLogger(__name__)

# Unbound tag of each measure; the names appear in the operator's unbound.conf (docs/dns.md).
TAGS = {"M7": "m7", "M8": "m8"}
_ALLOC_COLUMNS = ["start", "end", "addr", "port_start", "port_end", "subscriber_id"]
_IPV4 = r"^[0-9]{1,3}(?:\.[0-9]{1,3}){3}$"
_IPV6 = r"^[0-9a-fA-F:.]+(?:/[0-9]{1,3})?$"


class ResolverError(RuntimeError):
    """The resolver could not be told (unbound-control failed); the message has its output."""


class SyncResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    clients_file: Path
    clients: dict[str, int]  # measure -> addresses tagged
    changed: bool  # the include file changed (and the resolver was reloaded)
    zones: RpzResult | None = None
    seconds: float


def clients_file(config: MamoriConfig) -> Path:
    return config.dns.clients_file or config.store / "_state" / "resolver" / "clients.conf"


def consenting_clients(
    gov: Governance, actor: str, *, at: datetime | None = None
) -> dict[str, pa.Array]:
    """Per measure (M7, M8): sorted distinct client addresses (text, with a /prefix) whose current
    allocation belongs to a subscriber who is in for that measure."""
    now = at or datetime.now(UTC)
    out: dict[str, pa.Array] = {}
    for measure in TAGS:
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
        is4 = pc.match_substring_regex(addr, _IPV4)
        is6 = pc.and_(pc.invert(is4), pc.match_substring_regex(addr, _IPV6))
        bad = pc.sum(pc.invert(pc.or_(is4, is6))).as_py() or 0
        if bad:
            log.warning("resolver: %d allocation addresses of %s are not addresses", bad, measure)
        has_len = pc.match_substring(addr, "/")
        v4 = pc.filter(addr, is4)
        v4 = pc.if_else(pc.match_substring(v4, "/"), v4, pc.binary_join_element_wise(v4, "/32", ""))
        v6 = pc.filter(addr, is6)
        v6 = pc.if_else(
            pc.filter(has_len, is6), v6, pc.binary_join_element_wise(v6, "/128", "")
        )
        both = pa.chunked_array([v4, v6], pa.string()).combine_chunks()
        distinct = pc.unique(both)
        out[measure] = pc.take(distinct, pc.sort_indices(distinct))
    return out


def render_clients(clients: dict[str, pa.Array]) -> bytes:
    """The Unbound include file: one ``access-control-tag`` line per address."""
    m7, m8 = clients.get("M7", pa.array([], pa.string())), clients.get("M8", pa.array([], pa.string()))
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


class UnboundControl:
    """``unbound-control`` with the operator's options (``-c unbound.conf``, ``-s host@port``)."""

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


def sync_resolver(
    gov: Governance,
    actor: str,
    *,
    control: UnboundControl | None = None,
    zones: bool = False,
    at: datetime | None = None,
    force: bool = False,
) -> SyncResult:
    """Regenerate the client tag file (and, with ``zones``, the RPZ zones) and apply them.

    The resolver is reloaded only when the tag file's content changed (or ``force``); zones are
    reloaded one by one with ``auth_zone_reload``, which keeps everything else in place.
    """
    t0 = time.perf_counter()
    cfg = gov.config
    ctl = control or UnboundControl(cfg.dns.unbound_control)
    clients = consenting_clients(gov, actor, at=at)
    text = render_clients(clients)
    path = clients_file(cfg)
    old = path.read_bytes() if path.exists() else None
    changed = force or old != text
    built: RpzResult | None = None
    if zones:
        built = generate_rpz(gov, actor, at=at)
    if changed:
        atomic_write(path, [text])
        ctl("reload_keep_cache")
    elif built is not None:
        for z in built.zones:
            ctl("auth_zone_reload", z.zone)
    counts = {m: len(a) for m, a in clients.items()}
    gov.audit.append(
        actor=actor,
        event="action",
        measure="M7",
        legal_basis="consent",
        detail={
            "action": "resolver-sync",
            "clients": counts,
            "changed": changed,
            "digest": hashlib.sha256(text).hexdigest()[:16],
        },
    )
    return SyncResult(
        clients_file=path,
        clients=counts,
        changed=changed,
        zones=built,
        seconds=time.perf_counter() - t0,
    )


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
    control: UnboundControl | None = None,
    interval_s: float | None = None,
    stop: threading.Event | None = None,
    on_sync: Callable[[SyncResult], None] | None = None,
) -> None:
    """Re-sync whenever consent, allocations or reputation change, until ``stop`` is set."""
    cfg = gov.config
    every = interval_s or cfg.dns.sync_interval_s
    stop = stop or threading.Event()
    seen_clients = seen_rep = None
    while not stop.is_set():
        fp_clients = _fingerprint(cfg.store, ("consent", "allocations"))
        fp_rep = _fingerprint(cfg.store, ("reputation",))
        if fp_clients != seen_clients or fp_rep != seen_rep:
            try:
                result = sync_resolver(
                    gov,
                    actor,
                    control=control,
                    zones=fp_rep != seen_rep,
                    force=seen_clients is None,
                )
            except ResolverError as exc:
                log.error("resolver-sync: %s (retrying in %.1f s)", exc, every)
            else:
                seen_clients, seen_rep = fp_clients, fp_rep
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
    warn = dns.warning_zone if dns.warning_zone.endswith(".") else dns.warning_zone + "."
    return (
        "server:\n"
        f'  define-tag: "{TAGS["M7"]} {TAGS["M8"]}"\n'
        f'  include: "{inc}"\n'
        "  # RPZ needs the respip module, e.g. module-config: \"respip validator iterator\"\n"
        "rpz:\n"
        f'  name: "{c2}"\n'
        f'  zonefile: "{zdir / (c2.rstrip(".") + ".zone")}"\n'
        f'  tags: "{TAGS["M7"]}"\n'
        "rpz:\n"
        f'  name: "{warn}"\n'
        f'  zonefile: "{zdir / (warn.rstrip(".") + ".zone")}"\n'
        f'  tags: "{TAGS["M8"]}"\n'
    )
