"""Benign and hostile traffic, generated with NumPy (no per-flow Python loop), with ground truth.

Every generator returns flows (both directions of a conversation where there is an answer), the
resolver queries it caused and, for hostile behaviour, a ground-truth entry. Times follow a
diurnal curve (Japan time); periodic benign traffic (NTP, update checks, messaging keep-alives,
IoT cameras all beaconing to one vendor cloud) is there to trap naive C&C detectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mamori.sim._net import F64, U32, ip, iso, ntoa
from mamori.sim.flows import FlowTable
from mamori.sim.world import (
    CGNAT,
    MAIL_SERVER,
    RESOLVERS,
    STATIC,
    Service,
    World,
)

I32 = npt.NDArray[np.int32]

#: relative activity per hour of the day in Japan time (0 = midnight JST)
DIURNAL_JST = np.array(
    [0.55, 0.4, 0.28, 0.2, 0.16, 0.16, 0.22, 0.35, 0.5, 0.55, 0.55, 0.58,
     0.65, 0.6, 0.58, 0.6, 0.65, 0.72, 0.8, 0.9, 0.98, 1.0, 0.92, 0.75]
)  # fmt: skip
TCP_FULL = 0x1B  # FIN SYN PSH ACK
SYN = 0x02
RST_ACK = 0x14


@dataclass
class DnsQueries:
    t: list[F64] = field(default_factory=list)
    client: list[U32] = field(default_factory=list)
    resolver: list[U32] = field(default_factory=list)
    qname: list[list[str]] = field(default_factory=list)
    qtype: list[str] = field(default_factory=list)
    port: list[npt.NDArray[np.int64]] = field(default_factory=list)

    def add(
        self,
        t: F64,
        client: U32,
        port: npt.NDArray[np.int64],
        resolver: U32,
        names: list[str],
        qtype: str = "A",
    ) -> None:
        assert len(names) == t.size == client.size == port.size == resolver.size
        self.t.append(t)
        self.client.append(client)
        self.port.append(port)
        self.resolver.append(resolver)
        self.qname.append(names)
        self.qtype.append(qtype)


@dataclass
class MailEvents:
    """SMTP AUTH / IMAP login events at the ISP's mail server."""

    t: list[float] = field(default_factory=list)
    client: list[int] = field(default_factory=list)
    user: list[str] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    service: list[str] = field(default_factory=list)  # "smtp" or "imap"
    messages: list[int] = field(default_factory=list)
    spam: list[bool] = field(default_factory=list)


@dataclass
class Traffic:
    flows: FlowTable
    dns: DnsQueries
    mail: MailEvents
    truth: dict[str, Any]
    #: hostile endpoints with their domain names (used by the feeds)
    endpoints: list[dict[str, Any]]


class _Gen:
    def __init__(self, world: World, seed: int) -> None:
        self.w = world
        self.cfg = world.cfg
        self.rng = np.random.default_rng([seed, 2])
        self.parts: list[FlowTable] = []
        self.dns = DnsQueries()
        self.mail = MailEvents()
        self.truth: dict[str, Any] = {}
        self.endpoints: list[dict[str, Any]] = []
        self.hostile_pool = list(world.ext_pool.tolist())
        self._bot_pool = self.rng.permutation(
            np.flatnonzero(world.contract != STATIC).astype(np.int32)
        )
        self._bot_pos = 0

    # --- helpers -------------------------------------------------------------------------
    def hostile_ips(self, n: int) -> list[int]:
        out = self.hostile_pool[:n]
        self.hostile_pool = self.hostile_pool[n:]
        if len(out) < n:
            raise ValueError("the external address space is exhausted; lower the counts")
        return [int(x) for x in out]

    def pick_subs(self, n: int) -> I32:
        """Distinct non-business subscribers (each infected by one family at most)."""
        out = self._bot_pool[self._bot_pos : self._bot_pos + n]
        self._bot_pos += n
        return out

    def diurnal_times(self, n: int) -> F64:
        w = self.w
        edges = np.arange(w.t0, w.t1 + 60.0, 60.0)
        mid = edges[:-1] + 30.0
        hour_jst = ((mid / 3600.0 + 9.0) % 24.0).astype(np.int64)
        cdf = np.cumsum(DIURNAL_JST[hour_jst])
        cdf /= cdf[-1]
        m = np.searchsorted(cdf, self.rng.random(n), side="right")
        t = edges[np.minimum(m, edges.size - 2)] + self.rng.uniform(0, 60.0, n)
        return np.minimum(np.sort(t), w.t1 - 1.0)

    def addresses(
        self, sub: I32, t: F64, inside: bool = False
    ) -> tuple[U32, npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """The address (and an ephemeral source port) ``sub`` used at ``t``."""
        s = self.w.sessions
        idx, ok = self.w.lookup(sub, t)
        lo = s.port_lo[idx].astype(np.int64)
        hi = s.port_hi[idx].astype(np.int64)
        cg = self.w.contract[sub] == CGNAT
        lo = np.where(cg, lo, 49152)
        hi = np.where(cg, hi, 65535)
        port = lo + (self.rng.random(sub.size) * (hi - lo + 1)).astype(np.int64)
        addr = s.ip[idx]
        if inside:
            addr = np.where(cg, s.inside_ip[idx], addr).astype(np.uint32)
            port = np.where(cg, self.rng.integers(1024, 65536, sub.size), port)
        return addr, port, ok

    def conversation(
        self,
        label: str,
        sub: I32,
        t: F64,
        dst: U32 | int,
        dport: npt.ArrayLike,
        proto: npt.ArrayLike,
        up_pkts: npt.ArrayLike,
        up_bytes: npt.ArrayLike,
        down_pkts: npt.ArrayLike,
        down_bytes: npt.ArrayLike,
        duration: npt.ArrayLike,
        path: int = 0,
        sport: npt.NDArray[np.int64] | None = None,
        inside: bool = False,
        flags_up: npt.ArrayLike = TCP_FULL,
        flags_down: npt.ArrayLike = TCP_FULL,
    ) -> tuple[npt.NDArray[np.bool_], U32, npt.NDArray[np.int64]]:
        """A subscriber opens a conversation; adds both directions. Returns (kept, src, sport)."""
        src, port, ok = self.addresses(sub, t, inside=inside)
        if sport is not None:
            port = sport
        n = sub.size

        def arr(x: npt.ArrayLike, dt: type[np.generic]) -> npt.NDArray[Any]:
            return np.broadcast_to(np.asarray(x).astype(dt), (n,))[ok]

        dst_a = arr(dst, np.uint32)
        proto_a = arr(proto, np.uint8)
        is_tcp = proto_a == 6
        fu = np.where(is_tcp, arr(flags_up, np.uint8), 0)
        fd = np.where(is_tcp, arr(flags_down, np.uint8), 0)
        dur = arr(duration, np.float64)
        tt = t[ok]
        self.parts.append(
            FlowTable.make(
                tt,
                dur,
                src[ok],
                dst_a,
                port[ok],
                arr(dport, np.uint16),
                proto_a,
                fu,
                arr(up_pkts, np.int64),
                arr(up_bytes, np.int64),
                label,
                sub[ok],
                path,
                0,
            )
        )
        dp = arr(down_pkts, np.int64)
        has = dp > 0
        if has.any():
            self.parts.append(
                FlowTable.make(
                    tt[has] + 0.001,
                    dur[has],
                    dst_a[has],
                    src[ok][has],
                    arr(dport, np.uint16)[has],
                    port[ok][has],
                    proto_a[has],
                    fd[has],
                    dp[has],
                    arr(down_bytes, np.int64)[has],
                    label,
                    sub[ok][has],
                    path,
                    1,
                )
            )
        return ok, src, port

    def resolve(self, sub: I32, t: F64, names: list[str], qtype: str = "A") -> None:
        """Subscribers ask the ISP resolvers (UDP/53 via the data-centre router)."""
        if sub.size == 0:
            return
        rng = self.rng
        res = np.array(RESOLVERS, np.uint32)[rng.integers(0, 2, sub.size)]
        tq = t - 0.02
        ok, src, sport = self.conversation(
            "benign",
            sub,
            tq,
            res,
            53,
            17,
            1,
            rng.integers(60, 90, sub.size),
            1,
            rng.integers(90, 400, sub.size),
            0.01,
            path=1,
            inside=True,
        )
        idx = np.flatnonzero(ok).tolist()
        self.dns.add(tq[ok], src[ok], sport[ok], res[ok], [names[i] for i in idx], qtype)

    def periodic(
        self, subs: I32, interval: float, jitter: float, start: F64 | None = None
    ) -> tuple[I32, F64]:
        """(sub, t) for a timer firing every ``interval`` s (± jitter·interval) per subscriber."""
        w = self.w
        if subs.size == 0:
            return subs, np.zeros(0)
        begin = np.full(subs.size, w.t0) if start is None else np.maximum(start, w.t0)
        first = begin + self.rng.uniform(0, interval, subs.size)
        k = int(np.ceil((w.t1 - w.t0) / (interval * max(1e-3, 1 - jitter)))) + 1
        steps = interval * (1 + self.rng.uniform(-jitter, jitter, (subs.size, k)))
        steps[:, 0] = 0.0
        t = first[:, None] + np.cumsum(steps, axis=1)
        keep = t < w.t1
        return np.broadcast_to(subs[:, None], t.shape)[keep], t[keep]

    def endpoint(
        self,
        ip_: int,
        port: int,
        proto: str,
        family: str,
        role: str,
        since: float,
        until: float,
        domain: str | None,
    ) -> None:
        self.endpoints.append(
            {
                "ip": ntoa(ip_),
                "port": port,
                "proto": proto,
                "family": family,
                "role": role,
                "from": iso(since),
                "until": iso(until),
                "domain": domain,
                "_from": since,
                "_until": until,
            }
        )

    def infected_entry(self, family: str, sub: int, since: float) -> dict[str, Any]:
        s = self.w.sessions
        rows = np.flatnonzero(
            (s.sub == sub) & (s.stop > max(since, self.w.t0)) & (s.start < self.w.t1)
        )
        return {
            "subscriber": int(sub),
            "family": family,
            "infected_at": iso(since),
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

    def infection_times(self, n: int, in_window: float) -> F64:
        w = self.w
        inw = self.rng.random(n) < in_window
        before = w.t0 - self.rng.uniform(3600.0, 5 * 86400.0, n)
        during = self.rng.uniform(w.t0, w.t0 + 0.7 * (w.t1 - w.t0), n)
        return np.round(np.where(inw, during, before), 3).astype(np.float64)

    # --- benign --------------------------------------------------------------------------
    def benign(self) -> None:
        w, cfg, rng = self.w, self.cfg, self.rng
        n_conn = int(w.n * cfg.connections_per_sub_hour * cfg.hours * float(DIURNAL_JST.mean()))
        activity = rng.lognormal(0.0, 1.0, w.n)
        activity[w.contract == STATIC] *= 4.0
        activity /= activity.sum()
        sub = rng.choice(w.n, size=n_conn, p=activity).astype(np.int32)
        t = self.diurnal_times(n_conn)
        roles = ("cdn", "search", "video", "social", "web")
        role = rng.choice(len(roles), size=n_conn, p=[0.28, 0.12, 0.1, 0.15, 0.35])
        dst = np.zeros(n_conn, np.uint32)
        names: list[str] = [""] * 0
        svc_idx = np.zeros(n_conn, np.int64)
        for r, name in enumerate(roles):
            svcs = w.services[name]
            m = role == r
            zipf = 1.0 / np.arange(1, len(svcs) + 1)
            svc_idx[m] = rng.choice(len(svcs), size=int(m.sum()), p=zipf / zipf.sum())
            dst[m] = w.service_ips(name)[svc_idx[m]]
        quic = (role <= 2) & (rng.random(n_conn) < 0.3)
        proto = np.where(quic, 17, 6)
        up_p = np.ceil(rng.lognormal(1.8, 1.0, n_conn)).astype(np.int64) + 2
        down_p = (up_p * rng.uniform(1.0, 3.0, n_conn) * np.where(role == 2, 8, 1)).astype(np.int64)
        up_b = up_p * rng.integers(52, 180, n_conn) + 300
        down_b = down_p * rng.integers(900, 1450, n_conn)
        dur = np.minimum(rng.lognormal(1.2, 1.3, n_conn), 290.0)
        self.conversation("benign", sub, t, dst, 443, proto, up_p, up_b, down_p, down_b, dur)
        ask = rng.random(n_conn) < cfg.dns_query_share
        all_names = [[s.domain for s in w.services[name]] for name in roles]
        names = [all_names[int(r)][int(i)] for r, i in zip(role[ask], svc_idx[ask], strict=True)]
        self.resolve(sub[ask], t[ask], names)

        # business customers run DNS and mail servers: inbound queries and mail from outside
        biz = np.flatnonzero(w.contract == STATIC).astype(np.int32)
        n_q = int(biz.size * 30 * cfg.hours)
        if n_q:
            bs = biz[rng.integers(0, biz.size, n_q)]
            tq = self.diurnal_times(n_q)
            src_ext = w.ext_pool[rng.integers(0, w.ext_pool.size, n_q)]
            ip_b = w.sessions.ip[w.lookup(bs, tq)[0]]
            sp = rng.integers(1024, 65536, n_q)
            self.parts.append(
                FlowTable.make(
                    tq,
                    0.01,
                    src_ext,
                    ip_b,
                    sp,
                    53,
                    17,
                    0,
                    1,
                    rng.integers(60, 90, n_q),
                    "benign",
                    bs,
                    0,
                    1,
                )
            )
            self.parts.append(
                FlowTable.make(
                    tq + 0.001,
                    0.01,
                    ip_b,
                    src_ext,
                    53,
                    sp,
                    17,
                    0,
                    1,
                    rng.integers(90, 500, n_q),
                    "benign",
                    bs,
                    0,
                    0,
                )
            )
            mx = w.service_ips("mx")
            n_m = n_q // 6
            bm = biz[rng.integers(0, biz.size, n_m)]
            tm = self.diurnal_times(n_m)
            ip_m = w.sessions.ip[w.lookup(bm, tm)[0]]
            srcm = mx[rng.integers(0, mx.size, n_m)]
            spm = rng.integers(1024, 65536, n_m)
            pk = rng.integers(8, 40, n_m)
            self.parts.append(
                FlowTable.make(
                    tm, 2.0, srcm, ip_m, spm, 25, 6, TCP_FULL, pk, pk * 600, "benign", bm, 0, 1
                )
            )
            self.parts.append(
                FlowTable.make(
                    tm + 0.001,
                    2.0,
                    ip_m,
                    srcm,
                    25,
                    spm,
                    6,
                    TCP_FULL,
                    pk,
                    pk * 60,
                    "benign",
                    bm,
                    0,
                    0,
                )
            )

        # periodic traps
        def group(share: float) -> I32:
            return np.flatnonzero(rng.random(w.n) < share).astype(np.int32)

        for role_name, share, interval, jitter, proto_, up, down in (
            ("ntp", cfg.ntp_share, cfg.ntp_interval_s, 0.01, 17, (1, 90), (1, 90)),
            ("update", cfg.update_share, cfg.update_interval_s, 0.05, 6, (8, 1400), (8, 5200)),
            ("iot-cloud", cfg.camera_share, cfg.camera_interval_s, 0.02, 6, (3, 330), (3, 250)),
            (
                "messaging",
                cfg.messaging_share,
                cfg.messaging_interval_s,
                0.1,
                6,
                (2, 140),
                (2, 140),
            ),
        ):
            members = group(share)
            svcs = w.services[role_name]
            home = rng.integers(0, len(svcs), w.n)
            ps, pt = self.periodic(members, interval, jitter)
            svc = np.asarray(home[ps])
            users = np.bincount(home[members], minlength=len(svcs))
            self.truth.setdefault("benign_traps", []).extend(
                {
                    "ip": ntoa(s.ip),
                    "port": s.port,
                    "proto": "udp" if proto_ == 17 else "tcp",
                    "role": role_name,
                    "interval_s": interval,
                    "subscribers": int(users[i]),
                }
                for i, s in enumerate(svcs)
            )
            self.conversation(
                "benign-periodic",
                ps,
                pt,
                w.service_ips(role_name)[svc],
                svcs[0].port,
                proto_,
                up[0],
                up[1],
                down[0],
                down[1],
                0.3,
            )
            if role_name in ("update", "iot-cloud"):
                pick = rng.random(ps.size) < 0.1
                self.resolve(ps[pick], pt[pick], [svcs[int(i)].domain for i in svc[pick]])

        # subscribers sending mail through the ISP's submission server
        n_mail = int(w.n * self.cfg.smtp.benign_mail_per_sub_day * cfg.hours / 24.0)
        if n_mail:
            ms = rng.choice(w.n, size=n_mail, p=activity).astype(np.int32)
            tm = self.diurnal_times(n_mail)
            ok, src, _ = self.conversation(
                "benign", ms, tm, MAIL_SERVER, 587, 6, 14, 6000, 12, 1400, 1.5, path=1
            )
            for tt, s, sb in zip(tm[ok].tolist(), src[ok].tolist(), ms[ok].tolist(), strict=True):
                self._mail(tt, s, w.user_name(sb), True, 1, False)

    def _mail(
        self,
        t: float,
        client: int,
        user: str,
        ok: bool,
        msgs: int,
        spam: bool,
        service: str = "smtp",
    ) -> None:
        m = self.mail
        m.t.append(t)
        m.client.append(client)
        m.user.append(user)
        m.ok.append(ok)
        m.messages.append(msgs)
        m.spam.append(spam)
        m.service.append(service)

    # --- hostile -------------------------------------------------------------------------
    def iot(self) -> list[int]:
        c, w, rng = self.cfg.iot, self.w, self.rng
        if not c.enabled or c.bots == 0:
            return []
        bots = self.pick_subs(c.bots)
        since = self.infection_times(bots.size, c.infected_in_window)
        cc = self.hostile_ips(c.cc_servers)
        loaders = self.hostile_ips(c.loader_servers)
        for i, a in enumerate(cc):
            self.endpoint(
                a,
                c.cc_port,
                "tcp",
                "iot-mirai-like",
                "cc",
                w.t0 - 7 * 86400.0,
                w.t1,
                f"cnc{i + 1}.botnet-iot.invalid",
            )
        for a in loaders:
            self.endpoint(
                a, c.loader_port, "tcp", "iot-mirai-like", "loader", w.t0 - 7 * 86400.0, w.t1, None
            )
        my_cc = np.asarray(cc, np.uint32)[np.arange(bots.size) % len(cc)]
        # C&C keep-alives on a persistent connection (same source port within a session)
        ps, pt = self.periodic(bots, c.keepalive_s, 0.05, start=since)
        bot_i = _index_of(bots, ps)
        s = w.sessions
        idx, _ = w.lookup(ps, pt)
        lo = s.port_lo[idx].astype(np.int64)
        span = s.port_hi[idx].astype(np.int64) - lo + 1
        sport = lo + (idx * 7919 + 13) % span
        sport = np.where(w.contract[ps] == CGNAT, sport, 40000 + (idx * 7919) % 20000)
        self.conversation(
            "iot-cc",
            ps,
            pt,
            my_cc[bot_i],
            c.cc_port,
            6,
            2,
            120,
            2,
            120,
            0.2,
            sport=sport,
            flags_up=0x18,
            flags_down=0x18,
        )
        # now and then (new session, lost connection) a bot resolves its C&C name again
        ask = np.flatnonzero(rng.random(ps.size) < 0.03)
        self.resolve(
            ps[ask],
            pt[ask] - 0.5,
            [f"cnc{int(bot_i[j]) % len(cc) + 1}.botnet-iot.invalid" for j in ask],
        )
        # bots infected in the window fetched their binary from the loader
        inw = since >= w.t0
        if inw.any():
            lb = bots[inw]
            self.conversation(
                "iot-loader",
                lb,
                since[inw] - 5.0,
                np.asarray(loaders, np.uint32)[np.arange(lb.size) % len(loaders)],
                c.loader_port,
                6,
                30,
                1800,
                60,
                75_000,
                4.0,
            )
        # telnet scanning: one SYN per probe, a few RSTs back
        per_bot = rng.poisson(c.scans_per_bot_hour * self.cfg.hours, bots.size)
        sb = np.repeat(bots, per_bot)
        begin = np.repeat(np.maximum(since, w.t0), per_bot)
        st = begin + rng.random(sb.size) * (w.t1 - begin)
        targets = np.concatenate([w.ext_pool, *(w.service_ips(r) for r in ("web", "mx"))])
        dst = targets[rng.integers(0, targets.size, sb.size)]
        dport = np.where(rng.random(sb.size) < 0.85, 23, 2323)
        answered = rng.random(sb.size) < 0.1
        self.conversation(
            "iot-scan",
            sb,
            st,
            dst,
            dport,
            6,
            1,
            40,
            answered.astype(np.int64),
            40,
            0.0,
            flags_up=SYN,
            flags_down=RST_ACK,
        )
        self.truth["iot_botnet"] = {
            "cc": [ntoa(a) for a in cc],
            "cc_port": c.cc_port,
            "loaders": [ntoa(a) for a in loaders],
            "loader_port": c.loader_port,
            "scan_ports": [23, 2323],
        }
        self._infected("iot-mirai-like", bots, since)
        return [int(b) for b in bots]

    def _infected(self, family: str, bots: I32, since: F64) -> None:
        lst = self.truth.setdefault("infected", [])
        for b, t in zip(bots.tolist(), since.tolist(), strict=True):
            lst.append(self.infected_entry(family, b, t))

    def pc(self) -> None:
        c, w, rng = self.cfg.pc, self.w, self.rng
        if not c.enabled or c.bots == 0:
            return
        bots = self.pick_subs(c.bots)
        since = self.infection_times(bots.size, c.infected_in_window)
        inf = self.hostile_ips(c.infection_servers)
        cc = self.hostile_ips(c.cc_servers)
        ports = np.array([c.cc_ports[k % len(c.cc_ports)] for k in range(len(cc))])
        rot = c.rotate_hours * 3600.0
        n_slots = int(np.ceil((w.t1 - w.t0) / rot)) + 1
        active = min(c.active_cc, len(cc))
        # slot j uses servers (j*active + m) % n for m < active
        seen: dict[int, list[int]] = {}
        for j in range(n_slots):
            for m in range(active):
                seen.setdefault((j * active + m) % len(cc), []).append(j)
        for i, a in enumerate(inf):
            self.endpoint(
                a,
                80,
                "tcp",
                "pc-emotet-like",
                "infection",
                w.t0 - 3 * 86400.0,
                w.t1,
                f"dl{i + 1}.first-stage.invalid",
            )
        for k, a in enumerate(cc):
            slots = seen.get(k)
            if not slots:
                continue
            self.endpoint(
                a,
                int(ports[k]),
                "tcp",
                "pc-emotet-like",
                "cc",
                w.t0 + min(slots) * rot,
                min(w.t1, w.t0 + (max(slots) + 1) * rot),
                f"api{k + 1}.rotating-cc.invalid",
            )
        inw = since >= w.t0
        if inw.any():
            ib = bots[inw]
            which = np.arange(ib.size) % len(inf)
            self.resolve(ib, since[inw] - 1.0, [f"dl{i + 1}.first-stage.invalid" for i in which])
            self.conversation(
                "pc-infection",
                ib,
                since[inw],
                np.asarray(inf, np.uint32)[which],
                80,
                6,
                60,
                4000,
                200,
                260_000,
                6.0,
            )
        ps, pt = self.periodic(bots, c.beacon_s, c.jitter, start=since + 60.0)
        slot = np.floor((pt - w.t0) / rot).astype(np.int64)
        pick = (slot * active + rng.integers(0, active, ps.size)) % len(cc)
        req = c.request_bytes + rng.integers(-4, 5, ps.size)
        self.conversation(
            "pc-cc",
            ps,
            pt,
            np.asarray(cc, np.uint32)[pick],
            ports[pick],
            6,
            5,
            req + 5 * 40,
            5,
            rng.integers(300, 2400, ps.size),
            0.8,
        )
        ask = rng.random(ps.size) < 0.3
        self.resolve(
            ps[ask], pt[ask] - 0.5, [f"api{int(x) + 1}.rotating-cc.invalid" for x in pick[ask]]
        )
        self.truth["pc_botnet"] = {
            "infection_servers": [ntoa(a) for a in inf],
            "cc": [ntoa(a) for a in cc],
            "rotate_hours": c.rotate_hours,
            "beacon_s": c.beacon_s,
            "jitter": c.jitter,
            "request_bytes": c.request_bytes,
        }
        self._infected("pc-emotet-like", bots, since)

    def stealth(self) -> None:
        c, w, rng = self.cfg.stealth, self.w, self.rng
        if not c.enabled or c.bots == 0:
            return
        bots = self.pick_subs(c.bots)
        since = w.t0 - rng.uniform(86400.0, 20 * 86400.0, bots.size)
        (cc,) = self.hostile_ips(1)
        self.endpoint(
            cc,
            c.cc_port,
            "tcp",
            "stealth",
            "cc",
            w.t0 - 30 * 86400.0,
            w.t1,
            "cdn-static.quiet-cc.invalid",
        )
        ps, pt = self.periodic(bots, c.beacon_s, c.jitter)
        self.conversation(
            "stealth-cc",
            ps,
            pt,
            cc,
            c.cc_port,
            6,
            4,
            c.request_bytes + 160,
            4,
            rng.integers(200, 900, ps.size),
            0.5,
        )
        self.truth["stealth_botnet"] = {"cc": [ntoa(cc)], "beacon_s": c.beacon_s}
        self._infected("stealth", bots, since)

    def ddos(self, attackers: list[int]) -> None:
        c, w, rng = self.cfg.ddos, self.w, self.rng
        if not c.enabled or not attackers:
            return
        victims = self.hostile_ips(c.victims)
        a0 = w.t0 + c.start_frac * (w.t1 - w.t0)
        a1 = a0 + max(60.0, c.duration_frac * (w.t1 - w.t0))
        minutes = np.arange(a0, a1, 60.0)
        bots = np.asarray(attackers, np.int32)
        spoofers = bots[: c.spoofing_bots]
        plain = bots[c.spoofing_bots :] if bots.size > c.spoofing_bots else bots
        vb = np.asarray(victims, np.uint32)[np.arange(plain.size) % len(victims)]
        mb, tb = np.meshgrid(np.arange(plain.size), minutes, indexing="ij")
        mb, tb = mb.ravel(), tb.ravel() + rng.uniform(0, 1, mb.size)
        pk = rng.poisson(c.pps_per_bot * 60.0, mb.size) + 1
        self.conversation(
            "ddos",
            plain[mb],
            tb,
            vb[mb],
            rng.integers(1, 65536, mb.size),
            17,
            pk,
            pk * 512,
            0,
            0,
            59.0,
        )
        spoof_rows: list[dict[str, Any]] = []
        if spoofers.size:
            per = 20
            sb = np.repeat(spoofers, minutes.size * per)
            st = np.tile(np.repeat(minutes, per), spoofers.size) + rng.uniform(0, 60, sb.size)
            src = (np.uint32(0xC6120000) + rng.integers(0, 1 << 17, sb.size)).astype(np.uint32)
            dst = np.asarray(victims, np.uint32)[np.arange(sb.size) % len(victims)]
            _, ok = w.lookup(sb, st)
            pk = rng.poisson(c.pps_per_bot * 3.0, sb.size) + 1
            self.parts.append(
                FlowTable.make(
                    st[ok],
                    2.9,
                    src[ok],
                    dst[ok],
                    rng.integers(1024, 65536, int(ok.sum())),
                    80,
                    6,
                    SYN,
                    pk[ok],
                    pk[ok] * 40,
                    "spoofed",
                    sb[ok],
                    0,
                    0,
                )
            )
            for b in spoofers.tolist():
                spoof_rows.append(
                    {
                        "subscriber": b,
                        "region": int(w.region[b]),
                        "source_range": "198.18.0.0/15",
                        "from": iso(a0),
                        "until": iso(a1),
                    }
                )
        self.truth["ddos"] = {
            "victims": [ntoa(v) for v in victims],
            "from": iso(a0),
            "until": iso(a1),
            "bots": [int(b) for b in bots],
            "spoofing": spoof_rows,
        }

    def reflection(self) -> None:
        c, w, rng = self.cfg.reflection, self.w, self.rng
        if not c.enabled:
            return
        biz = np.flatnonzero(w.contract == STATIC).astype(np.int32)
        n_biz = min(biz.size, c.open_resolvers // 2)
        resolvers = np.concatenate([biz[:n_biz], self.pick_subs(c.open_resolvers - n_biz)])
        ntp = self.pick_subs(c.ntp_reflectors)
        victims = self.hostile_ips(c.victims)
        a0 = w.t0 + c.start_frac * (w.t1 - w.t0)
        a1 = a0 + max(60.0, c.duration_frac * (w.t1 - w.t0))
        minutes = np.arange(a0, a1, 60.0)
        entries: list[dict[str, Any]] = []
        for group, port, q_bytes, amp_pkts, r_bytes in (
            (resolvers, 53, 64, 3, 1400),
            (ntp, 123, 234, 100, 468),
        ):
            if group.size == 0:
                continue
            gi, tm = np.meshgrid(np.arange(group.size), minutes, indexing="ij")
            gi, tm = gi.ravel(), tm.ravel() + rng.uniform(0, 1, gi.size)
            subs = group[gi]
            idx, ok = w.lookup(subs, tm)
            refl = w.sessions.ip[idx]
            vic = np.asarray(victims, np.uint32)[gi % len(victims)]
            q = rng.poisson(c.queries_per_s * 60.0, gi.size) + 1
            sp = rng.integers(1024, 65536, gi.size)
            self.parts.append(
                FlowTable.make(
                    tm[ok],
                    59.0,
                    vic[ok],
                    refl[ok],
                    sp[ok],
                    port,
                    17,
                    0,
                    q[ok],
                    q[ok] * q_bytes,
                    "reflection-trigger",
                    subs[ok],
                    0,
                    1,
                )
            )
            self.parts.append(
                FlowTable.make(
                    tm[ok] + 0.01,
                    59.0,
                    refl[ok],
                    vic[ok],
                    port,
                    sp[ok],
                    17,
                    0,
                    q[ok] * amp_pkts,
                    q[ok] * amp_pkts * r_bytes,
                    "reflection-response",
                    subs[ok],
                    0,
                    0,
                )
            )
            for s in group.tolist():
                rows = w.sessions.ip[w.lookup(np.array([s], np.int32), np.array([a0]))[0]]
                entries.append(
                    {
                        "subscriber": s,
                        "ip": ntoa(int(rows[0])),
                        "port": port,
                        "proto": "udp",
                        "kind": "dns-open-resolver" if port == 53 else "ntp-monlist",
                        "static": bool(w.contract[s] == STATIC),
                    }
                )
        self.truth["reflection"] = {
            "reflectors": entries,
            "victims": [ntoa(v) for v in victims],
            "from": iso(a0),
            "until": iso(a1),
        }

    def smtp(self) -> None:
        c, w, rng = self.cfg.smtp, self.w, self.rng
        if not c.enabled:
            return
        attackers = self.hostile_ips(c.brute_force_sources)
        b0 = w.t0 + 0.2 * (w.t1 - w.t0)
        b1 = w.t0 + 0.5 * (w.t1 - w.t0)
        n = c.brute_force_attempts
        t = np.sort(rng.uniform(b0, b1, n))
        who = np.asarray(attackers, np.uint32)[rng.integers(0, len(attackers), n)]
        sp = rng.integers(1024, 65536, n)
        self.parts.append(
            FlowTable.make(
                t, 1.2, who, MAIL_SERVER, sp, 587, 6, TCP_FULL, 10, 900, "smtp-bruteforce", -1, 1, 1
            )
        )
        self.parts.append(
            FlowTable.make(
                t + 0.001,
                1.2,
                MAIL_SERVER,
                who,
                587,
                sp,
                6,
                TCP_FULL,
                9,
                1300,
                "smtp-bruteforce",
                -1,
                1,
                0,
            )
        )
        guesses = ("admin", "info", "test", "sales", "webmaster", "postmaster")
        real = rng.integers(0, w.n, n)
        for i, (tt, a) in enumerate(zip(t.tolist(), who.tolist(), strict=True)):
            user = w.user_name(int(real[i])) if i % 3 else f"{guesses[i % 6]}@isp.example.jp"
            self._mail(tt, a, user, False, 0, False, service="smtp" if i % 4 else "imap")
        victims = rng.choice(w.n, size=c.compromised_accounts, replace=False)
        abusers = self.hostile_ips(max(1, c.compromised_accounts))
        comp: list[dict[str, Any]] = []
        c0 = w.t0 + 0.6 * (w.t1 - w.t0)
        c1 = w.t0 + 0.8 * (w.t1 - w.t0)
        per = max(1, c.spam_messages // max(1, c.compromised_accounts))
        for j, v in enumerate(victims.tolist()):
            src = abusers[j % len(abusers)]
            ts = np.sort(rng.uniform(c0, c1, per // 10 + 1))
            spp = rng.integers(1024, 65536, ts.size)
            self.parts.append(
                FlowTable.make(
                    ts,
                    20.0,
                    src,
                    MAIL_SERVER,
                    spp,
                    587,
                    6,
                    TCP_FULL,
                    200,
                    10 * 6000,
                    "smtp-abuse",
                    v,
                    1,
                    1,
                )
            )
            self.parts.append(
                FlowTable.make(
                    ts + 0.001,
                    20.0,
                    MAIL_SERVER,
                    src,
                    587,
                    spp,
                    6,
                    TCP_FULL,
                    120,
                    12_000,
                    "smtp-abuse",
                    v,
                    1,
                    0,
                )
            )
            for tt in ts.tolist():
                self._mail(tt, src, w.user_name(v), True, 10, True)
            comp.append(
                {
                    "subscriber": v,
                    "auth_id": w.user_name(v),
                    "from": iso(c0),
                    "until": iso(c1),
                    "abuse_sources": [ntoa(src)],
                    "messages": int(ts.size * 10),
                }
            )
        self.truth["smtp"] = {
            "brute_force": {
                "sources": [ntoa(a) for a in attackers],
                "from": iso(b0),
                "until": iso(b1),
                "attempts": n,
            },
            "compromised_accounts": comp,
        }

    def phishing(self) -> None:
        """A few subscribers open phishing pages (the M8 warning-page case)."""
        c, w, rng = self.cfg, self.w, self.rng
        if c.phishing_sites == 0:
            return
        sites = self.hostile_ips(c.phishing_sites)
        rows: list[dict[str, Any]] = []
        for i, a in enumerate(sites):
            domain = f"secure-login{i + 1}.example-bank.invalid"
            since = w.t0 + rng.uniform(0.0, 0.3) * (w.t1 - w.t0)
            self.endpoint(a, 443, "tcp", "phishing", "phishing", since, w.t1, domain)
            n = c.phishing_visits_per_site
            subs = rng.choice(w.n, size=n).astype(np.int32)
            t = np.sort(rng.uniform(since, w.t1, n))
            self.resolve(subs, t - 0.3, [domain] * n)
            self.conversation("benign", subs, t, a, 443, 6, 12, 2400, 30, 40_000, 3.0)
            rows.append(
                {
                    "url": f"https://{domain}/login",
                    "domain": domain,
                    "ip": ntoa(a),
                    "from": iso(since),
                    "visits": n,
                }
            )
        self.truth["phishing"] = rows

    def vulnerable(self, iot_bots: list[int]) -> None:
        w, rng = self.w, self.rng
        n = self.cfg.vulnerable_devices
        extra = self.pick_subs(max(0, n - len(iot_bots) // 2))
        subs = np.concatenate([np.asarray(iot_bots[: len(iot_bots) // 2], np.int32), extra])[:n]
        t = np.round(rng.uniform(w.t0, w.t1, subs.size), 0)
        idx, ok = w.lookup(subs, t)
        self.truth["vulnerable"] = [
            {
                "subscriber": int(s),
                "ip": ntoa(int(w.sessions.ip[i])),
                "port": 23,
                "observed_at": iso(float(tt)),
            }
            for s, i, tt, k in zip(
                subs.tolist(), idx.tolist(), t.tolist(), ok.tolist(), strict=True
            )
            if k
        ]


def _index_of(keys: I32, values: I32) -> npt.NDArray[np.int64]:
    order = np.argsort(keys, kind="stable")
    pos = np.searchsorted(keys[order], values)
    return order[pos].astype(np.int64)


def generate(world: World, seed: int) -> Traffic:
    g = _Gen(world, seed)
    g.benign()
    iot_bots = g.iot()
    g.pc()
    g.stealth()
    g.ddos(iot_bots)
    g.reflection()
    g.smtp()
    g.phishing()
    g.vulnerable(iot_bots)
    flows = FlowTable.concat(g.parts) if g.parts else FlowTable.empty()
    g.parts.clear()
    # only what happened inside the window, in time order (stable: deterministic)
    idx = np.flatnonzero((flows.start >= world.t0) & (flows.start < world.t1))
    flows = flows.take(idx[np.argsort(flows.start[idx], kind="stable")])
    flows.end = np.minimum(flows.end, world.t1)
    # what the traffic really shows of each hostile endpoint (a rotating C&C server may be
    # scheduled but never contacted in the window)
    for e in g.endpoints:
        hit = np.flatnonzero(
            (flows.dst == ip(e["ip"])) & (flows.dport == e["port"]) & (flows.inbound == 0)
        )
        e["contacts"] = int(hit.size)
        e["first_contact"] = iso(float(flows.start[hit[0]])) if hit.size else None
        e["last_contact"] = iso(float(flows.start[hit[-1]])) if hit.size else None
    g.truth.setdefault("infected", [])
    return Traffic(flows, g.dns, g.mail, g.truth, g.endpoints)


__all__ = ["DnsQueries", "MailEvents", "Service", "Traffic", "generate"]
