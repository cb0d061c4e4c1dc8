"""Botnets: IoT bots (Mirai-like: C&C keep-alives, loader downloads, telnet scanning), PC bots
(Emotet-like: first-stage download, beacons to rotating C&C servers), a stealthy low-rate botnet,
and the vulnerable devices (open telnet) a scan of the ISP's space would find.
"""

from __future__ import annotations

import numpy as np

from mamori.sim._net import iso, ntoa
from mamori.sim.traffic.core import RST_ACK, SYN, Gen, index_of
from mamori.sim.world import CGNAT

__all__ = ["iot", "pc", "stealth", "vulnerable"]


def iot(g: Gen) -> list[int]:
    c, w, rng = g.cfg.iot, g.w, g.rng
    if not c.enabled or c.bots == 0:
        return []
    bots = g.pick_subs(c.bots)
    since = g.infection_times(bots.size, c.infected_in_window)
    cc = g.hostile_ips(c.cc_servers)
    loaders = g.hostile_ips(c.loader_servers)
    for i, a in enumerate(cc):
        g.endpoint(
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
        g.endpoint(
            a, c.loader_port, "tcp", "iot-mirai-like", "loader", w.t0 - 7 * 86400.0, w.t1, None
        )
    my_cc = np.asarray(cc, np.uint32)[np.arange(bots.size) % len(cc)]
    # C&C keep-alives on a persistent connection (same source port within a session)
    ps, pt = g.periodic(bots, c.keepalive_s, 0.05, start=since)
    bot_i = index_of(bots, ps)
    s = w.sessions
    idx, _ = w.lookup(ps, pt)
    lo = s.port_lo[idx].astype(np.int64)
    span = s.port_hi[idx].astype(np.int64) - lo + 1
    sport = lo + (idx * 7919 + 13) % span
    sport = np.where(w.contract[ps] == CGNAT, sport, 40000 + (idx * 7919) % 20000)
    g.conversation(
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
    g.resolve(
        ps[ask],
        pt[ask] - 0.5,
        [f"cnc{int(bot_i[j]) % len(cc) + 1}.botnet-iot.invalid" for j in ask],
    )
    # bots infected in the window fetched their binary from the loader
    inw = since >= w.t0
    if inw.any():
        lb = bots[inw]
        g.conversation(
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
    per_bot = rng.poisson(c.scans_per_bot_hour * g.cfg.hours, bots.size)
    sb = np.repeat(bots, per_bot)
    begin = np.repeat(np.maximum(since, w.t0), per_bot)
    st = begin + rng.random(sb.size) * (w.t1 - begin)
    targets = np.concatenate([w.ext_pool, *(w.service_ips(r) for r in ("web", "mx"))])
    dst = targets[rng.integers(0, targets.size, sb.size)]
    dport = np.where(rng.random(sb.size) < 0.85, 23, 2323)
    answered = rng.random(sb.size) < 0.1
    g.conversation(
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
    g.truth["iot_botnet"] = {
        "cc": [ntoa(a) for a in cc],
        "cc_port": c.cc_port,
        "loaders": [ntoa(a) for a in loaders],
        "loader_port": c.loader_port,
        "scan_ports": [23, 2323],
    }
    g.infected("iot-mirai-like", bots, since)
    return [int(b) for b in bots]


def pc(g: Gen) -> None:
    c, w, rng = g.cfg.pc, g.w, g.rng
    if not c.enabled or c.bots == 0:
        return
    bots = g.pick_subs(c.bots)
    since = g.infection_times(bots.size, c.infected_in_window)
    inf = g.hostile_ips(c.infection_servers)
    cc = g.hostile_ips(c.cc_servers)
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
        g.endpoint(
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
        g.endpoint(
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
        g.resolve(ib, since[inw] - 1.0, [f"dl{i + 1}.first-stage.invalid" for i in which])
        g.conversation(
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
    ps, pt = g.periodic(bots, c.beacon_s, c.jitter, start=since + 60.0)
    slot = np.floor((pt - w.t0) / rot).astype(np.int64)
    pick = (slot * active + rng.integers(0, active, ps.size)) % len(cc)
    req = c.request_bytes + rng.integers(-4, 5, ps.size)
    g.conversation(
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
    g.resolve(ps[ask], pt[ask] - 0.5, [f"api{int(x) + 1}.rotating-cc.invalid" for x in pick[ask]])
    g.truth["pc_botnet"] = {
        "infection_servers": [ntoa(a) for a in inf],
        "cc": [ntoa(a) for a in cc],
        "rotate_hours": c.rotate_hours,
        "beacon_s": c.beacon_s,
        "jitter": c.jitter,
        "request_bytes": c.request_bytes,
    }
    g.infected("pc-emotet-like", bots, since)


def stealth(g: Gen) -> None:
    c, w, rng = g.cfg.stealth, g.w, g.rng
    if not c.enabled or c.bots == 0:
        return
    bots = g.pick_subs(c.bots)
    since = w.t0 - rng.uniform(86400.0, 20 * 86400.0, bots.size)
    (cc,) = g.hostile_ips(1)
    g.endpoint(
        cc,
        c.cc_port,
        "tcp",
        "stealth",
        "cc",
        w.t0 - 30 * 86400.0,
        w.t1,
        "cdn-static.quiet-cc.invalid",
    )
    ps, pt = g.periodic(bots, c.beacon_s, c.jitter)
    g.conversation(
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
    g.truth["stealth_botnet"] = {"cc": [ntoa(cc)], "beacon_s": c.beacon_s}
    g.infected("stealth", bots, since)


def vulnerable(g: Gen, iot_bots: list[int]) -> None:
    w, rng = g.w, g.rng
    n = g.cfg.vulnerable_devices
    extra = g.pick_subs(max(0, n - len(iot_bots) // 2))
    subs = np.concatenate([np.asarray(iot_bots[: len(iot_bots) // 2], np.int32), extra])[:n]
    t = np.round(rng.uniform(w.t0, w.t1, subs.size), 0)
    idx, ok = w.lookup(subs, t)
    g.truth["vulnerable"] = [
        {
            "subscriber": int(s),
            "ip": ntoa(int(w.sessions.ip[i])),
            "port": 23,
            "observed_at": iso(float(tt)),
        }
        for s, i, tt, k in zip(subs.tolist(), idx.tolist(), t.tolist(), ok.tolist(), strict=True)
        if k
    ]
