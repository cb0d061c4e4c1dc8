"""Benign traffic: web, video and CDN conversations on a diurnal curve with their DNS lookups,
business customers' own DNS and mail servers, subscribers sending mail, and the periodic benign
traffic (NTP, update checks, messaging keep-alives, IoT cameras beaconing to one vendor cloud)
that is there to trap naive C&C detectors.
"""

from __future__ import annotations

import numpy as np

from mamori.sim._net import ntoa
from mamori.sim.flows import FlowTable
from mamori.sim.traffic.core import DIURNAL_JST, I32, TCP_FULL, Gen
from mamori.sim.world import MAIL_SERVER, STATIC

__all__ = ["benign"]


def benign(g: Gen) -> None:
    w, cfg, rng = g.w, g.cfg, g.rng
    n_conn = int(w.n * cfg.connections_per_sub_hour * cfg.hours * float(DIURNAL_JST.mean()))
    activity = rng.lognormal(0.0, 1.0, w.n)
    activity[w.contract == STATIC] *= 4.0
    activity /= activity.sum()
    sub = rng.choice(w.n, size=n_conn, p=activity).astype(np.int32)
    t = g.diurnal_times(n_conn)
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
    g.conversation("benign", sub, t, dst, 443, proto, up_p, up_b, down_p, down_b, dur)
    ask = rng.random(n_conn) < cfg.dns_query_share
    all_names = [[s.domain for s in w.services[name]] for name in roles]
    names = [all_names[int(r)][int(i)] for r, i in zip(role[ask], svc_idx[ask], strict=True)]
    g.resolve(sub[ask], t[ask], names)

    # business customers run DNS and mail servers: inbound queries and mail from outside
    biz = np.flatnonzero(w.contract == STATIC).astype(np.int32)
    n_q = int(biz.size * 30 * cfg.hours)
    if n_q:
        bs = biz[rng.integers(0, biz.size, n_q)]
        tq = g.diurnal_times(n_q)
        src_ext = w.ext_pool[rng.integers(0, w.ext_pool.size, n_q)]
        ip_b = w.sessions.ip[w.lookup(bs, tq)[0]]
        sp = rng.integers(1024, 65536, n_q)
        g.parts.append(
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
        g.parts.append(
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
        tm = g.diurnal_times(n_m)
        ip_m = w.sessions.ip[w.lookup(bm, tm)[0]]
        srcm = mx[rng.integers(0, mx.size, n_m)]
        spm = rng.integers(1024, 65536, n_m)
        pk = rng.integers(8, 40, n_m)
        g.parts.append(
            FlowTable.make(
                tm, 2.0, srcm, ip_m, spm, 25, 6, TCP_FULL, pk, pk * 600, "benign", bm, 0, 1
            )
        )
        g.parts.append(
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
        ps, pt = g.periodic(members, interval, jitter)
        svc = np.asarray(home[ps])
        users = np.bincount(home[members], minlength=len(svcs))
        g.truth.setdefault("benign_traps", []).extend(
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
        g.conversation(
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
            g.resolve(ps[pick], pt[pick], [svcs[int(i)].domain for i in svc[pick]])

    # subscribers sending mail through the ISP's submission server
    n_mail = int(w.n * g.cfg.smtp.benign_mail_per_sub_day * cfg.hours / 24.0)
    if n_mail:
        ms = rng.choice(w.n, size=n_mail, p=activity).astype(np.int32)
        tm = g.diurnal_times(n_mail)
        ok, src, _ = g.conversation(
            "benign", ms, tm, MAIL_SERVER, 587, 6, 14, 6000, 12, 1400, 1.5, path=1
        )
        for tt, s, sb in zip(tm[ok].tolist(), src[ok].tolist(), ms[ok].tolist(), strict=True):
            g.mail.add(tt, s, w.user_name(sb), True, 1, False)
