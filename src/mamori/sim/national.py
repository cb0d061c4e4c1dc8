"""The sampled generator: a national ISP over days, generated as the routers' sampled records.

Generating every flow of 100,000 subscribers over a week (billions of packets) and then sampling
it does not fit a machine. A router sampling 1-in-N packets keeps each packet independently with
probability 1/N, so what it exports can be drawn directly, per flow, without the rest:

* a **periodic stream** (a bot's beacons, a phone's push keep-alive, a VPN's keep-alive): one
  flow of ``p`` packets every ``T`` seconds (± jitter) for as long as the host is active. Each
  direction of each flow keeps at least one packet with probability ``q = 1 − (1 − 1/N)^p``; the
  flows that do are a Poisson number (mean ``n·q``) spread uniformly over the stream's flows,
  each carrying ``1 + Binomial(p − 1, 1/N)`` packets (binomial thinning, conditioned on one);
* **bulk conversations** (web, video, CDN, social, search): a conversation is seen with
  probability about ``p/N`` (``p ≪ N``), so the sampled ones are a Poisson number of
  conversations drawn *size-biased* (resampled in proportion to their packets) and thinned the
  same way, each direction on its own;
* **scans**: one SYN per probe, a Poisson number of them sampled.

Sampled records carry the TCP flags of the packets kept (SYN only when the first packet was),
times from the diurnal curve (bulk) or the stream's phase (periodic), and addresses from the
subscriber's sessions (dynamic, CGNAT port block, static). Only rates ≥ 1/100 are valid: the
approximations assume few packets per flow are kept.

Each seed draws its world (:func:`draw_mix`): botnet families (Mirai-like IoT keep-alives with
scanning, Emotet-like and TrickBot-like PC beacons to C&C sets rotating over days, a stealthy
low-rate family), their sizes (thousands of bots), periods, jitter, ports, infection and clean-up
over the window; the benign periodic mix (IoT clouds on MQTT 8883, push and messaging
keep-alives, game servers, WireGuard VPN, NAS relays, mail IDLE, IP-check services, NTP, update
checks, CDN polling), with shares and intervals; the resolver and mail logs are left empty (a
resolver log is not sampled, and a week of it is not what this scenario is for).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mamori.sim._net import F64, U32, ip, iso, ntoa
from mamori.sim.flows import FlowTable
from mamori.sim.randomise import CC_PORTS, loguniform
from mamori.sim.traffic.core import DIURNAL_JST, SYN, Gen, Traffic
from mamori.sim.world import CGNAT, STATIC, Service, World

__all__ = ["draw_mix", "generate_sampled"]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
ACK_PSH = 0x18
ACK = 0x10
FIN_ACK = 0x11
RST_ACK = 0x14


@dataclass(frozen=True)
class Periodic:
    """A benign periodic service: who uses it and how it keeps in touch."""

    role: str
    proto: int
    port: int
    servers: int
    share: float
    interval_s: float
    jitter: float
    #: share of each day a member's device is active (1: always on)
    duty: float
    up: tuple[int, int]  # packets, bytes per packet
    down: tuple[int, int]

    @property
    def persistent(self) -> bool:
        """Keep-alives on one long-lived TCP connection (no handshake per exchange)."""
        return self.proto == 6 and self.role in PERSISTENT_ROLES


#: benign periodic services that keep one TCP connection open and exchange on it
PERSISTENT_ROLES = ("iot-cloud", "push", "messaging", "nas-relay", "mail-idle")


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "iot" | "pc" | "stealth"
    bots: int
    period_s: float
    jitter: float
    ports: tuple[int, ...]
    cc_pool: int
    active_cc: int
    rotate_days: float
    up: tuple[int, int]
    down: tuple[int, int]
    infected_before: float
    cleaned: float
    scans_per_hour: float
    loaders: int


def _periodic_mix(rng: np.random.Generator) -> list[Periodic]:
    u, lu = rng.uniform, loguniform
    return [
        Periodic("iot-cloud", 6, 8883, int(rng.integers(3, 31)), u(0.05, 0.3),
                 lu(rng, 30, 300), u(0, 0.05), 1.0, (1, 90), (1, 80)),
        Periodic("push", 6, int(rng.choice([443, 5228, 5223])), int(rng.integers(5, 41)),
                 u(0.3, 0.8), lu(rng, 240, 1800), u(0, 0.2), u(0.5, 1.0), (2, 110), (2, 120)),
        Periodic("messaging", 6, 443, int(rng.integers(10, 61)), u(0.2, 0.7),
                 lu(rng, 60, 600), u(0, 0.1), u(0.5, 1.0), (2, 140), (2, 140)),
        Periodic("game", 17, int(rng.choice([3074, 27015, 3478, 9000, 7777])),
                 int(rng.integers(20, 201)), u(0.02, 0.15), lu(rng, 5, 60), u(0, 0.1),
                 u(0.05, 0.2), (3, 120), (3, 160)),
        Periodic("vpn", 17, 51820, int(rng.integers(5, 51)), u(0.01, 0.08),
                 float(rng.choice([25.0, 25.0, 15.0, 60.0])), 0.0, u(0.2, 1.0), (1, 74),
                 (1, 74)),
        Periodic("nas-relay", 6, int(rng.choice([443, 5001, 6690])), int(rng.integers(2, 21)),
                 u(0.02, 0.1), lu(rng, 60, 300), u(0, 0.05), 1.0, (2, 150), (2, 150)),
        Periodic("mail-idle", 6, 993, int(rng.integers(5, 41)), u(0.1, 0.5),
                 lu(rng, 600, 1740), u(0, 0.05), u(0.5, 1.0), (3, 120), (3, 200)),
        Periodic("ip-check", 6, int(rng.choice([443, 80])), int(rng.integers(1, 6)),
                 u(0.01, 0.1), lu(rng, 300, 3600), u(0, 0.05), 1.0, (6, 200), (5, 400)),
        Periodic("ntp", 17, 123, int(rng.integers(4, 21)), u(0.4, 0.9),
                 float(rng.choice([64.0, 256.0, 1024.0])), 0.01, 1.0, (1, 90), (1, 90)),
        Periodic("update", 6, 443, int(rng.integers(5, 31)), u(0.3, 0.8),
                 lu(rng, 3600, 21600), u(0.05, 0.3), 1.0, (12, 300), (20, 1200)),
        Periodic("cdn-poll", 6, 443, int(rng.integers(10, 101)), u(0.1, 0.5),
                 lu(rng, 300, 3600), u(0, 0.2), u(0.5, 1.0), (8, 250), (10, 1100)),
    ]  # fmt: skip


def _families(rng: np.random.Generator, subs: int) -> list[Family]:
    # botnets of thousands of bots at national scale; in a tiny world, at most a fifth of it
    cap = max(4, subs // 5)
    u, lu = rng.uniform, loguniform

    def ports(n: int) -> tuple[int, ...]:
        return tuple(int(p) for p in rng.choice(CC_PORTS, size=n, replace=False))

    fams = [
        Family("iot-mirai-like", "iot", int(lu(rng, 1000, 10000)), lu(rng, 30, 300),
               u(0, 0.1), (int(rng.choice([23, 38241, 48101, 6667, 1312, 9506])),),
               int(rng.integers(2, 6)), int(rng.integers(1, 3)), lu(rng, 2, 14), (2, 60),
               (2, 60), u(0.5, 0.9), u(0.0, 0.3), lu(rng, 60, 600), int(rng.integers(1, 4))),
        Family("pc-emotet-like", "pc", int(lu(rng, 1000, 8000)), lu(rng, 60, 900),
               u(0, 0.5), ports(int(rng.integers(1, 4))), int(rng.integers(10, 60)),
               int(rng.integers(2, 6)), lu(rng, 0.5, 3), (5, 140), (5, 500), u(0.3, 0.8),
               u(0.0, 0.3), 0.0, int(rng.integers(1, 4))),
        Family("stealth", "stealth", int(rng.integers(5, 41)), lu(rng, 900, 7200),
               u(0.1, 0.6), ports(1), 1, 1, 1e9, (4, 330), (4, 150), 1.0, 0.0, 0.0, 0),
    ]  # fmt: skip
    if rng.random() < 0.7:
        fams.append(
            Family(
                "pc-trickbot-like",
                "pc",
                int(lu(rng, 500, 5000)),
                lu(rng, 300, 3600),
                u(0, 0.3),
                ports(int(rng.integers(2, 4))),
                int(rng.integers(20, 120)),
                int(rng.integers(5, 20)),
                lu(rng, 1, 7),
                (6, 180),
                (6, 700),
                u(0.3, 0.9),
                u(0.0, 0.2),
                0.0,
                int(rng.integers(1, 3)),
            )
        )
    total = sum(f.bots for f in fams)
    if total > cap:
        k = cap / total
        fams = [Family(**{**f.__dict__, "bots": max(1, int(f.bots * k))}) for f in fams]
    return fams


def draw_mix(seed: int, subs: int) -> tuple[list[Periodic], list[Family], dict[str, Any]]:
    """The seed's benign periodic mix and botnet families, and the same as plain data."""
    rng = np.random.default_rng([seed, 12])
    mix = _periodic_mix(rng)
    fams = _families(rng, subs)
    return (
        mix,
        fams,
        {
            "periodic": [{**m.__dict__} for m in mix],
            "families": [{**f.__dict__} for f in fams],
        },
    )


def _q(p: npt.ArrayLike, rate: int) -> F64:
    """Probability that a flow of ``p`` packets keeps at least one under 1-in-``rate``."""
    return -np.expm1(np.asarray(p, np.float64) * math.log1p(-1.0 / rate))


class _Out:
    """The sampled records generated so far, with the addresses each subscriber held."""

    def __init__(self, g: Gen, rate: int) -> None:
        self.g = g
        self.rate = rate
        self.parts = g.parts
        #: per hostile endpoint key (ip, port): flows before sampling (expected)
        self.flows_to: dict[tuple[int, int], float] = {}

    def emit(
        self,
        label: str,
        sub: I32,
        t: F64,
        ext: U32,
        eport: npt.ArrayLike,
        proto: npt.ArrayLike,
        flow_pkts: npt.ArrayLike,
        pkt_bytes: npt.ArrayLike,
        inbound: int,
        dur: float = 1.0,
        persistent: bool = False,
    ) -> None:
        """One sampled record per row, for one direction of flows of ``flow_pkts`` packets.

        ``persistent``: the exchanges ride one long-lived TCP connection (MQTT, push, IMAP
        IDLE, a Mirai bot's C&C link), so no kept packet is a handshake; otherwise a flow's
        first packet (SYN, or SYN-ACK back) is among the kept ones with probability k/p."""
        g, rng, n = self.g, self.g.rng, sub.size
        if n == 0:
            return
        src, port, ok = g.addresses(sub, t)
        p = np.broadcast_to(np.asarray(flow_pkts, np.int64), (n,))
        k = 1 + rng.binomial(np.maximum(p - 1, 0), 1.0 / self.rate)
        size = np.broadcast_to(np.asarray(pkt_bytes, np.float64), (n,))
        octets = np.maximum(np.round(k * size * rng.uniform(0.85, 1.15, n)), k * 28)
        prt = np.broadcast_to(np.asarray(proto, np.uint8), (n,))
        # the flags of the packets kept: SYN only if the first packet was among them
        first = (rng.random(n) < k / np.maximum(p, 1)) & (p >= 3) & (not persistent)
        opening = SYN if inbound == 0 else SYN | ACK
        flags = np.where(first, opening | np.where(k > 1, ACK_PSH, 0), ACK_PSH)
        flags = np.where(prt == 6, flags, 0).astype(np.uint8)
        span = np.where(k > 1, dur * rng.random(n), 0.0)
        ep = np.broadcast_to(np.asarray(eport, np.uint16), (n,))
        a, b = (src, ext) if inbound == 0 else (ext, src)
        sa, sb = (port, ep) if inbound == 0 else (ep, port)
        self.parts.append(
            FlowTable.make(
                t[ok],
                span[ok],
                a[ok],
                b[ok],
                sa[ok],
                sb[ok],
                prt[ok],
                flags[ok],
                k[ok],
                octets[ok],
                label,
                sub[ok],
                0,
                inbound,
            )
        )

    def stream(
        self,
        label: str,
        sub: I32,
        since: F64,
        until: F64,
        period: F64 | float,
        jitter: float,
        up: tuple[int, int],
        down: tuple[int, int],
    ) -> tuple[list[tuple[I32, F64, I64]], F64]:
        """Sampled flow times of each member's periodic stream, per direction (0 up, 1 down),
        with the index of the member they belong to; and each member's flows before sampling."""
        rng = self.g.rng
        per = np.broadcast_to(np.asarray(period, np.float64), sub.shape)
        span = np.maximum(until - since, 0.0)
        n_flows = span / per
        phase = rng.uniform(0, 1, sub.size) * per
        out = []
        for pk, _ in (up, down):
            m = rng.poisson(n_flows * _q(pk, self.rate))
            i = np.repeat(np.arange(sub.size), m)
            kk = np.floor(rng.random(i.size) * np.maximum(n_flows[i], 1)).astype(np.int64)
            t = since[i] + phase[i] + (kk + rng.uniform(-jitter, jitter, i.size)) * per[i]
            t = np.clip(t, since[i], np.maximum(until[i] - 1.0, since[i]))
            out.append((sub[i], t, i.astype(np.int64)))
        return out, n_flows


def _services(g: Gen, role: str, n: int, proto: int, port: int) -> list[Service]:
    ips = g.hostile_ips(n)  # the external pool serves benign and hostile roles alike
    return [Service(role, a, proto, port, f"{role}{k + 1}.example.net") for k, a in enumerate(ips)]


def _zipf(rng: np.random.Generator, n_items: int, size: int, s: float = 1.0) -> I64:
    w = 1.0 / np.arange(1, n_items + 1) ** s
    return rng.choice(n_items, size=size, p=w / w.sum()).astype(np.int64)


def _bulk(o: _Out, activity: F64, svc: dict[str, U32], day0: float, day1: float) -> None:
    """Web, video, CDN, social and search conversations of one day, as sampled."""
    w, cfg, rng, rate = o.g.w, o.g.cfg, o.g.rng, o.rate
    hours = (day1 - day0) / 3600.0
    hour_jst = ((day0 / 3600.0 + 9.0 + np.arange(math.ceil(hours))) % 24).astype(int)
    n_conn = w.n * cfg.connections_per_sub_hour * float(DIURNAL_JST[hour_jst].sum())
    roles = ("cdn", "search", "video", "social", "web")
    share = np.array([0.28, 0.12, 0.1, 0.15, 0.35])
    # mean packets per conversation, per role (both directions), from the same distributions
    # the conversations are drawn from below
    pool = 4 * max(1, int(n_conn * 60 / rate))
    role = rng.choice(len(roles), size=pool, p=share)
    up_p = np.ceil(rng.lognormal(1.8, 1.0, pool)).astype(np.int64) + 2
    down_p = (up_p * rng.uniform(1.0, 3.0, pool) * np.where(role == 2, 8, 1)).astype(np.int64)
    tot = (up_p + down_p).astype(np.float64)
    n_seen = int(rng.poisson(n_conn * float(_q(tot, rate).mean())))
    pick = rng.choice(pool, size=n_seen, p=tot / tot.sum())  # size-biased
    role, up_p, down_p = role[pick], up_p[pick], down_p[pick]
    sub = rng.choice(w.n, size=n_seen, p=activity).astype(np.int32)
    t = _diurnal(rng, day0, day1, n_seen)
    dst = np.zeros(n_seen, np.uint32)
    for r, name in enumerate(roles):
        m = role == r
        dst[m] = svc[name][_zipf(rng, svc[name].size, int(m.sum()))]
    quic = (role <= 2) & (rng.random(n_seen) < 0.3)
    proto = np.where(quic, 17, 6)
    # which directions kept packets, given that at least one did (the size-biased pick):
    # up only, down only or both, in proportion to q_up(1 - q_down), (1 - q_up)q_down, q_up q_down
    qu, qd = _q(up_p, rate), _q(down_p, rate)
    a, b, c = qu * (1 - qd), (1 - qu) * qd, qu * qd
    x = rng.random(n_seen) * (a + b + c)
    has_up = (x < a) | (x >= a + b)
    has_down = x >= a
    dur = np.minimum(rng.lognormal(1.2, 1.3, n_seen), 290.0)
    for mask, p, size, inbound in (
        (has_up, up_p, rng.integers(52, 180, n_seen) + 300 / up_p, 0),
        (has_down, down_p, rng.integers(900, 1450, n_seen), 1),
    ):
        i = np.flatnonzero(mask)
        o.emit("benign", sub[i], t[i], dst[i], 443, proto[i], p[i], size[i], inbound,
               dur=float(dur.mean()))  # fmt: skip


def _diurnal(rng: np.random.Generator, t0: float, t1: float, n: int) -> F64:
    edges = np.arange(t0, t1 + 60.0, 60.0)
    mid = edges[:-1] + 30.0
    hour_jst = ((mid / 3600.0 + 9.0) % 24.0).astype(np.int64)
    cdf = np.cumsum(DIURNAL_JST[hour_jst])
    cdf /= cdf[-1]
    m = np.searchsorted(cdf, rng.random(n), side="right")
    t = edges[np.minimum(m, edges.size - 2)] + rng.uniform(0, 60.0, n)
    return np.minimum(t, t1 - 1.0)


def _periodic(o: _Out, mix: list[Periodic]) -> dict[str, list[Service]]:
    g, w, rng = o.g, o.g.w, o.g.rng
    out: dict[str, list[Service]] = {}
    for m in mix:
        svcs = _services(g, m.role, m.servers, m.proto, m.port)
        out[m.role] = svcs
        ips = np.array([s.ip for s in svcs], np.uint32)
        members = np.flatnonzero(rng.random(w.n) < m.share).astype(np.int32)
        home = _zipf(rng, len(svcs), members.size, 0.8)
        # active part of each day: one contiguous stretch (always-on devices: the whole day)
        days = math.ceil((w.t1 - w.t0) / 86400.0)
        mem = np.repeat(members, days)
        hm = np.repeat(home, days)
        d0: F64 = w.t0 + 86400.0 * np.tile(np.arange(days), members.size).astype(np.float64)
        length = 86400.0 * m.duty
        begin: F64 = d0 + rng.uniform(0, 86400.0 - length, mem.size) if m.duty < 1 else d0
        end = np.minimum(begin + length, w.t1)
        dirs, _ = o.stream("benign-periodic", mem, begin, end, m.interval_s, m.jitter,
                           m.up, m.down)  # fmt: skip
        for inbound, (sub, t, i) in enumerate(dirs):
            pk, size = (m.up, m.down)[inbound]
            o.emit("benign-periodic", sub, t, ips[hm[i]], m.port, m.proto, pk, size, inbound,
                   persistent=m.persistent)  # fmt: skip
        users = np.bincount(home, minlength=len(svcs))
        g.truth.setdefault("benign_traps", []).extend(
            {"ip": ntoa(s.ip), "port": s.port, "proto": "udp" if m.proto == 17 else "tcp",
             "role": m.role, "interval_s": round(m.interval_s, 1),
             "subscribers": int(users[k])}
            for k, s in enumerate(svcs)
        )  # fmt: skip
    return out


def _family(o: _Out, f: Family) -> None:
    g, w, rng = o.g, o.g.w, o.g.rng
    bots = g.pick_subs(f.bots)
    if bots.size == 0:
        return
    before = rng.random(bots.size) < f.infected_before
    since: F64 = np.where(
        before,
        w.t0 - rng.uniform(3600.0, 20 * 86400.0, bots.size),
        rng.uniform(w.t0, w.t0 + 0.9 * (w.t1 - w.t0), bots.size),
    )
    cleaned = rng.random(bots.size) < f.cleaned
    until = np.where(
        cleaned, np.maximum(since, w.t0) + rng.uniform(0.1, 1.0, bots.size) * (w.t1 - w.t0), w.t1
    )
    until = np.minimum(until, w.t1)
    cc = g.hostile_ips(f.cc_pool)
    port_of = np.array([f.ports[k % len(f.ports)] for k in range(len(cc))], np.int64)
    rot = f.rotate_days * 86400.0
    # rotation slots that start inside the window
    n_slots = max(1, math.ceil((w.t1 - w.t0) / rot))
    active = min(f.active_cc, len(cc))
    step = max(1, active // 2)  # consecutive sets overlap: servers outlive one rotation
    first_slot: dict[int, int] = {}
    last_slot: dict[int, int] = {}
    for j in range(n_slots):
        for m in range(active):
            k = (j * step + m) % len(cc)
            first_slot.setdefault(k, j)
            last_slot[k] = j
    dom = f.name.removesuffix("-like")
    role_label = {"iot": "iot-cc", "pc": "pc-cc", "stealth": "stealth-cc"}[f.kind]
    for k, a in enumerate(cc):
        if k not in first_slot:
            continue
        frm = w.t0 + first_slot[k] * rot
        if f.kind != "pc":  # IoT and stealth C&C were up long before the window
            frm = w.t0 - 14 * 86400.0
        g.endpoint(
            a,
            int(port_of[k]),
            "tcp",
            f.name,
            "cc",
            frm,
            min(w.t1, w.t0 + (last_slot[k] + 1) * rot),
            f"c{k + 1}.{dom}.invalid",
        )
    # beacons: each flow goes to one server of the set active at its time
    dirs, n_flows = o.stream(role_label, bots, np.maximum(since, w.t0), until, f.period_s,
                             f.jitter, f.up, f.down)  # fmt: skip
    for inbound, (sub, t, _) in enumerate(dirs):
        slot = np.floor((t - w.t0) / rot).astype(np.int64)
        srv = (slot * step + rng.integers(0, active, t.size)) % len(cc)
        pk, size = (f.up, f.down)[inbound]
        # a Mirai-like bot holds one TCP connection to its C&C; PC bots call anew each time
        o.emit(role_label, sub, t, np.asarray(cc, np.uint32)[srv], port_of[srv], 6, pk, size,
               inbound, dur=0.5, persistent=f.kind == "iot")  # fmt: skip
    # flows before sampling, per server (for the truth): spread evenly over the active set
    total = float(n_flows.sum())
    for k, a in enumerate(cc):
        if k in first_slot:
            o.flows_to[(a, int(port_of[k]))] = (
                total * (last_slot[k] - first_slot[k] + 1) / (n_slots * active)
            )
    # first stage: bots infected in the window fetched their binary once
    loaders = g.hostile_ips(f.loaders)
    new = np.flatnonzero(~before)
    if loaders and new.size:
        role = "loader" if f.kind == "iot" else "infection"
        lport = 8080 if f.kind == "iot" else 80
        for k, a in enumerate(loaders):
            g.endpoint(a, lport, "tcp", f.name, role, w.t0 - 3 * 86400.0, w.t1,
                       f"dl{k + 1}.{dom}.invalid")  # fmt: skip
        which = rng.integers(0, len(loaders), new.size)
        lab = "iot-loader" if f.kind == "iot" else "pc-infection"
        for inbound, (pk, size) in enumerate(((40, 70), (200, 1300))):
            keep = rng.random(new.size) < _q(pk, o.rate)
            i = new[keep]
            o.emit(lab, bots[i], since[i] + 2.0, np.asarray(loaders, np.uint32)[which[keep]],
                   lport, 6, pk, size, inbound, dur=5.0)  # fmt: skip
            for k, a in enumerate(loaders):
                o.flows_to[(a, lport)] = float(np.sum(which == k))
    # telnet scanning (IoT): one SYN per probe, the few answers a RST
    if f.scans_per_hour > 0:
        hours = np.maximum(until - np.maximum(since, w.t0), 0.0) / 3600.0
        m = rng.poisson(hours * f.scans_per_hour / o.rate)
        i = np.repeat(np.arange(bots.size), m)
        st = np.maximum(since[i], w.t0) + rng.random(i.size) * (
            until[i] - np.maximum(since[i], w.t0)
        )
        dst = w.ext_pool[rng.integers(0, w.ext_pool.size, i.size)]
        dport = np.where(rng.random(i.size) < 0.85, 23, 2323)
        src, port, ok = g.addresses(bots[i], st)
        o.parts.append(
            FlowTable.make(
                st[ok],
                0.0,
                src[ok],
                dst[ok],
                port[ok],
                dport[ok],
                6,
                SYN,
                1,
                40,
                "iot-scan",
                bots[i][ok],
                0,
                0,
            )
        )
    g.truth.setdefault("families", []).append(
        {"family": f.name, "bots": int(bots.size), "period_s": round(f.period_s, 1),
         "jitter": round(f.jitter, 3), "ports": list(f.ports), "cc_servers": len(cc),
         "active_cc": active, "rotate_days": round(f.rotate_days, 2)}
    )  # fmt: skip
    _infected(g, f.name, bots, since)


def _infected(g: Gen, family: str, bots: I32, since: F64) -> None:
    """Ground truth of infected subscribers, vectorised over the sorted sessions."""
    w, s = g.w, g.w.sessions
    lo = np.searchsorted(s.sub, bots, side="left")
    hi = np.searchsorted(s.sub, bots, side="right")
    lst = g.truth.setdefault("infected", [])
    for b, t, a, z in zip(bots.tolist(), since.tolist(), lo.tolist(), hi.tolist(), strict=True):
        rows = [r for r in range(a, z) if s.stop[r] > max(t, w.t0) and s.start[r] < w.t1]
        lst.append(
            {
                "subscriber": int(b),
                "family": family,
                "infected_at": iso(t),
                "addresses": [
                    {
                        "ip": ntoa(int(s.ip[r])),
                        "port_lo": int(s.port_lo[r]),
                        "port_hi": int(s.port_hi[r]),
                        "inside_ip": ntoa(int(s.inside_ip[r])) if s.inside_ip[r] else None,
                        "from": iso(float(s.start[r])),
                        "until": iso(float(s.stop[r])),
                    }
                    for r in rows
                ],
            }
        )


def sampling_rate(world: World) -> int:
    rates = {r.sampling for r in world.cfg.routers if r.role == "border"}
    if len(rates) != 1:
        raise ValueError("the sampled generator needs every border router at one sampling rate")
    rate = rates.pop()
    if rate < 100:
        raise ValueError(
            f"the sampled generator assumes few packets per flow are kept: 1/{rate} is too "
            "dense; use a rate of 1/100 or sparser, or the full generator"
        )
    return rate


def generate_sampled(world: World, seed: int) -> Traffic:
    """The border routers' sampled records of ``world``, with ground truth (see module doc)."""
    rate = sampling_rate(world)
    g = Gen(world, seed)
    o = _Out(g, rate)
    mix, fams, drawn = draw_mix(seed, world.n)
    g.truth["world_parameters"] = {"sampled_generator": drawn, "sampling": rate}
    rng = g.rng
    # the Internet as the subscribers see it: a long tail of web sites, CDN edges, video...
    sizes = {"cdn": 600, "search": 20, "video": 150, "social": 60, "web": 30_000}
    scale = min(1.0, max(0.02, world.n / 100_000))
    svc = {r: np.array(g.hostile_ips(max(5, int(n * scale))), np.uint32) for r, n in sizes.items()}
    periodic = _periodic(o, mix)
    # the feeds' wrong entries are drawn from benign services that carry traffic here
    world.services["iot-cloud"] = periodic["iot-cloud"]
    world.services["cdn"] = [Service("cdn", int(a), 6, 443, f"edge{k + 1}.cdn.example.net")
                             for k, a in enumerate(svc["cdn"][:20])]  # fmt: skip
    for f in fams:
        _family(o, f)
    activity = rng.lognormal(0.0, 1.0, world.n)
    activity[world.contract == STATIC] *= 4.0
    activity /= activity.sum()
    day = world.t0
    while day < world.t1:
        _bulk(o, activity, svc, day, min(day + 86400.0, world.t1))
        day += 86400.0
    flows = FlowTable.concat(g.parts) if g.parts else FlowTable.empty()
    g.parts.clear()
    idx = np.flatnonzero((flows.start >= world.t0) & (flows.start < world.t1))
    flows = flows.take(idx[np.argsort(flows.start[idx], kind="stable")])
    flows.end = np.minimum(flows.end, world.t1)
    for e in g.endpoints:
        key = (ip(e["ip"]), int(e["port"]))
        e["contacts"] = round(o.flows_to.get(key, 0.0))
        e["first_contact"] = iso(max(e["_from"], world.t0)) if e["contacts"] else None
        e["last_contact"] = iso(min(e["_until"], world.t1)) if e["contacts"] else None
    g.truth.setdefault("infected", [])
    g.truth["cgnat_share"] = float(np.mean(world.contract == CGNAT))
    return Traffic(flows, g.dns, g.mail, g.truth, g.endpoints)
