"""What every traffic generator shares: the flows, resolver queries and mail events made so far,
the ground truth, and :class:`Gen`, the generator state with the helpers the phenomena are built
from (addresses at a time, a two-way conversation, a DNS lookup, a periodic timer, diurnal times).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mamori.sim._net import F64, U32, iso, ntoa
from mamori.sim.flows import FlowTable
from mamori.sim.world import CGNAT, RESOLVERS, STATIC, World

__all__ = [
    "DIURNAL_JST",
    "RST_ACK",
    "SYN",
    "TCP_FULL",
    "DnsQueries",
    "Gen",
    "MailEvents",
    "Traffic",
    "index_of",
]

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

    def add(
        self,
        t: float,
        client: int,
        user: str,
        ok: bool,
        msgs: int,
        spam: bool,
        service: str = "smtp",
    ) -> None:
        self.t.append(t)
        self.client.append(client)
        self.user.append(user)
        self.ok.append(ok)
        self.messages.append(msgs)
        self.spam.append(spam)
        self.service.append(service)


@dataclass
class Traffic:
    flows: FlowTable
    dns: DnsQueries
    mail: MailEvents
    truth: dict[str, Any]
    #: hostile endpoints with their domain names (used by the feeds)
    endpoints: list[dict[str, Any]]


class Gen:
    """The state every generator shares: the world, one random stream (drawn from in a fixed
    order, so a seed gives the same bytes), the flows, queries, mail events and truth so far."""

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

    def infected(self, family: str, bots: I32, since: F64) -> None:
        """Ground truth: ``bots`` infected by ``family`` from ``since``."""
        lst = self.truth.setdefault("infected", [])
        for b, t in zip(bots.tolist(), since.tolist(), strict=True):
            lst.append(self.infected_entry(family, b, t))


def index_of(keys: I32, values: I32) -> npt.NDArray[np.int64]:
    """Where each of ``values`` is in ``keys`` (every value is one of the keys)."""
    order = np.argsort(keys, kind="stable")
    pos = np.searchsorted(keys[order], values)
    return order[pos].astype(np.int64)
