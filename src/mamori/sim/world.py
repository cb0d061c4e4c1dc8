"""The world: subscribers, contracts, the address plan, sessions, and the Internet around the ISP.

Address plan (all of it data in files; nothing is ever sent to these addresses):

================  ===================  =================================================
pool              range                use
================  ===================  =================================================
infra             10.0.0.0/16          the ISP's resolvers and mail submission server
dynamic-pppoe     10.16.0.0/12         PPPoE home subscribers (RADIUS), reassigned
dynamic-ipoe      10.32.0.0/12         IPoE home subscribers (Kea DHCPv4), reassigned
static            10.48.0.0/16         business customers running their own DNS/mail
cgnat-public      10.64.0.0/16         CGNAT public side; subscribers hold port blocks
cgnat-inside      100.64.0.0/10        CGNAT inside addresses (Kea DHCPv4)
external          192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 (documentation ranges)
================  ===================  =================================================
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mamori.sim._net import F64, I64, U32, ip, pool_addresses
from mamori.sim.config import ScenarioConfig

PPPOE, IPOE, CGNAT, STATIC = 0, 1, 2, 3
CONTRACT_NAMES = ("home-pppoe", "home-ipoe", "home-cgnat", "business-static")

POOLS: dict[str, str] = {
    "infra": "10.0.0.0/16",
    "dynamic-pppoe": "10.16.0.0/12",
    "dynamic-ipoe": "10.32.0.0/12",
    "static": "10.48.0.0/16",
    "cgnat-public": "10.64.0.0/16",
    "cgnat-inside": "100.64.0.0/10",
}
EXTERNAL_NETS = ("192.0.2.0", "198.51.100.0", "203.0.113.0")

RESOLVERS = (ip("10.0.0.53"), ip("10.0.1.53"))
MAIL_SERVER = ip("10.0.2.25")
#: the RADIUS NAS (BRAS) addresses, one per access region
NAS_BASE = ip("10.0.9.1")
N_REGIONS = 4

#: (role, how many addresses, protocol, port, domain template)
SERVICE_ROLES: tuple[tuple[str, int, int, int, str], ...] = (
    ("cdn", 40, 6, 443, "edge{i}.cdn.example.net"),
    ("search", 8, 6, 443, "www{i}.search.example.com"),
    ("video", 16, 6, 443, "rr{i}.video.example.net"),
    ("social", 12, 6, 443, "api{i}.social.example.com"),
    ("messaging", 6, 6, 5228, "push{i}.msg.example.net"),
    ("ntp", 4, 17, 123, "ntp{i}.example.jp"),
    ("update", 6, 6, 443, "update{i}.os.example.com"),
    ("iot-cloud", 3, 6, 8883, "cam{i}.iotcloud.example.net"),
    ("mx", 20, 6, 25, "mx{i}.mail.example.org"),
    ("web", 300, 6, 443, "www.site{i}.example.jp"),
)
HOSTILE_ROLES = (
    "iot-cc",
    "iot-loader",
    "pc-infection",
    "pc-cc",
    "stealth-cc",
    "ddos-victim",
    "reflection-victim",
    "smtp-attacker",
    "scan-target",
)


@dataclass
class Service:
    role: str
    ip: int
    proto: int
    port: int
    domain: str


@dataclass
class Sessions:
    """One row per address holding: who held which address (and port block) when."""

    sub: npt.NDArray[np.int32]
    start: F64
    stop: F64
    ip: U32
    inside_ip: U32
    port_lo: npt.NDArray[np.uint16]
    port_hi: npt.NDArray[np.uint16]
    #: sessions sorted by (sub, start); key used for vectorised lookups
    key: I64 = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class World:
    cfg: ScenarioConfig
    seed: int
    t0: float
    t1: float
    contract: npt.NDArray[np.int8]
    region: npt.NDArray[np.int8]
    contract_start_days: npt.NDArray[np.int32]
    sessions: Sessions
    services: dict[str, list[Service]]
    ext_pool: U32

    @property
    def n(self) -> int:
        return int(self.contract.size)

    def user_name(self, sub: int) -> str:
        return f"u{sub:07d}@isp.example.jp"

    def email(self, sub: int) -> str:
        if self.contract[sub] == STATIC:
            return f"noc@biz{sub:07d}.example.jp"
        return f"s{sub:07d}@mail.example.jp"

    def lookup(self, sub: npt.NDArray[np.int32], t: F64) -> tuple[I64, npt.NDArray[np.bool_]]:
        """Session index held by ``sub`` at time ``t`` and whether it really covers ``t``."""
        s = self.sessions
        q = _key(sub, t, self.t0)
        idx = np.searchsorted(s.key, q, side="right").astype(np.int64) - 1
        idx = np.clip(idx, 0, s.key.size - 1)
        ok = (s.sub[idx] == sub) & (s.start[idx] <= t) & (t < s.stop[idx])
        return idx, ok

    def service_ips(self, role: str) -> U32:
        return np.array([s.ip for s in self.services[role]], dtype=np.uint32)


def _key(sub: npt.NDArray[np.int32], t: F64, t0: float) -> I64:
    rel = np.round((t - (t0 - 90 * 86400.0)) * 1000.0).astype(np.int64)
    return sub.astype(np.int64) * (1 << 34) + rel


def allocate_slots(
    starts: F64, stops: F64, n_slots: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Give each session a slot (address or port block) no other session holds at the same time.

    Released slots go to the back of a FIFO free list, so an address is reused only after the
    rest of the pool has been handed out — like a real pool. One Python step per event (not per
    flow): about a second per million sessions.
    """
    n = starts.size
    if n == 0:
        return np.zeros(0, np.int64)
    times = np.concatenate([stops, starts])
    kinds = np.concatenate([np.zeros(n, np.int8), np.ones(n, np.int8)])  # stops first at ties
    ids = np.concatenate([np.arange(n), np.arange(n)])
    order = np.lexsort((ids, kinds, times))
    free: deque[int] = deque(rng.permutation(n_slots).tolist())
    slot = np.full(n, -1, np.int64)
    kinds_l = kinds[order].tolist()
    ids_l = ids[order].tolist()
    for kind, sid in zip(kinds_l, ids_l, strict=True):
        if kind == 1:
            slot[sid] = free.popleft()
        elif slot[sid] >= 0:
            free.append(int(slot[sid]))
    return slot


def _session_times(
    rng: np.random.Generator, subs: npt.NDArray[np.int32], t0: float, t1: float, mean_s: float
) -> tuple[npt.NDArray[np.int32], F64, F64]:
    """Back-to-back sessions per subscriber covering [t0, t1): exponential lengths, short gaps."""
    out_sub: list[npt.NDArray[np.int32]] = []
    out_start: list[F64] = []
    out_stop: list[F64] = []
    start = t0 - rng.uniform(0, mean_s, subs.size)
    stop = t0 + np.maximum(rng.exponential(mean_s, subs.size), 60.0)
    active = subs
    while active.size:
        out_sub.append(active)
        out_start.append(start)
        out_stop.append(stop)
        nxt = stop < t1
        active = active[nxt]
        start = stop[nxt] + rng.uniform(2.0, 90.0, active.size)
        stop = start + np.maximum(rng.exponential(mean_s, active.size), 600.0)
        keep = start < t1
        active, start, stop = active[keep], start[keep], stop[keep]
    return np.concatenate(out_sub), np.concatenate(out_start), np.concatenate(out_stop)


def build_world(cfg: ScenarioConfig, seed: int) -> World:
    rng = np.random.default_rng([seed, 1])
    n = cfg.subscribers
    t0 = cfg.start.timestamp()
    t1 = t0 + cfg.hours * 3600.0

    # contracts: a deterministic mix, shuffled
    n_static = max(1, round(n * cfg.share_static))
    n_cgnat = round(n * cfg.share_cgnat)
    n_ipoe = round(n * cfg.share_ipoe)
    n_pppoe = n - n_static - n_cgnat - n_ipoe
    contract = np.concatenate(
        [
            np.full(n_pppoe, PPPOE, np.int8),
            np.full(n_ipoe, IPOE, np.int8),
            np.full(n_cgnat, CGNAT, np.int8),
            np.full(n_static, STATIC, np.int8),
        ]
    )
    rng.shuffle(contract)
    region = rng.integers(0, N_REGIONS, n).astype(np.int8)
    contract_start_days = rng.integers(30, 3650, n).astype(np.int32)

    mean_s = cfg.mean_session_hours * 3600.0
    subs_all = np.arange(n, dtype=np.int32)
    parts: list[Sessions] = []
    for kind, pool in ((PPPOE, "dynamic-pppoe"), (IPOE, "dynamic-ipoe")):
        members = subs_all[contract == kind]
        s_sub, s_start, s_stop = _session_times(rng, members, t0, t1, mean_s)
        n_slots = max(16, int(members.size * 1.25) + 8)
        slot = allocate_slots(s_start, s_stop, n_slots, rng)
        addrs = pool_addresses(POOLS[pool].split("/")[0], n_slots)
        parts.append(
            Sessions(
                s_sub,
                s_start,
                s_stop,
                addrs[slot],
                np.zeros(s_sub.size, np.uint32),
                np.full(s_sub.size, 1024, np.uint16),
                np.full(s_sub.size, 65535, np.uint16),
            )
        )
    # CGNAT: static inside address per subscriber, public address + port block per session
    members = subs_all[contract == CGNAT]
    inside = pool_addresses("100.64.0.0", members.size)
    inside_of = np.zeros(n, np.uint32)
    inside_of[members] = inside
    s_sub, s_start, s_stop = _session_times(rng, members, t0, t1, mean_s)
    bpa = (65536 - 1024) // cfg.cgnat_block_size
    # a pool of port blocks 25 % larger than the subscribers, spread over as few public
    # addresses as the block size allows (slot s = block s // n_pub of address s % n_pub)
    n_slots = int(members.size * 1.25) + 8
    n_pub = max(2, -(-n_slots // bpa))
    slot = allocate_slots(s_start, s_stop, n_slots, rng)
    pub = pool_addresses("10.64.0.0", n_pub)
    port_lo = (1024 + (slot // n_pub) * cfg.cgnat_block_size).astype(np.uint16)
    parts.append(
        Sessions(
            s_sub,
            s_start,
            s_stop,
            pub[slot % n_pub],
            inside_of[s_sub],
            port_lo,
            (port_lo.astype(np.int64) + cfg.cgnat_block_size - 1).astype(np.uint16),
        )
    )
    # static business customers: one long session with a fixed address
    members = subs_all[contract == STATIC]
    parts.append(
        Sessions(
            members,
            np.full(members.size, t0 - 30 * 86400.0) - rng.uniform(0, 86400, members.size),
            np.full(members.size, t1 + 30 * 86400.0),
            pool_addresses("10.48.0.0", members.size),
            np.zeros(members.size, np.uint32),
            np.full(members.size, 1024, np.uint16),
            np.full(members.size, 65535, np.uint16),
        )
    )
    sub = np.concatenate([p.sub for p in parts])
    start = np.concatenate([p.start for p in parts])
    order = np.lexsort((start, sub))
    sessions = Sessions(
        sub[order],
        start[order],
        np.concatenate([p.stop for p in parts])[order],
        np.concatenate([p.ip for p in parts])[order],
        np.concatenate([p.inside_ip for p in parts])[order],
        np.concatenate([p.port_lo for p in parts])[order],
        np.concatenate([p.port_hi for p in parts])[order],
    )
    sessions.key = _key(sessions.sub, sessions.start, t0)

    # the Internet: the 762 documentation addresses, shuffled, dealt out to roles
    blocks = [pool_addresses(b, 254) for b in EXTERNAL_NETS]
    for net in cfg.external_nets:
        block = ipaddress.ip_network(net)
        blocks.append(pool_addresses(str(block.network_address), block.num_addresses // 256 * 254))
    ext = np.concatenate(blocks)
    ext = ext[rng.permutation(ext.size)]
    services: dict[str, list[Service]] = {}
    pos = 0
    for role, count, proto, port, tmpl in SERVICE_ROLES:
        services[role] = [
            Service(role, int(ext[pos + i]), proto, port, tmpl.format(i=i + 1))
            for i in range(count)
        ]
        pos += count
    return World(
        cfg, seed, t0, t1, contract, region, contract_start_days, sessions, services, ext[pos:]
    )
