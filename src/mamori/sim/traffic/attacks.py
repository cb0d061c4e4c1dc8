"""Attacks: a DDoS by the IoT bots (some with spoofed sources), DNS / NTP reflection through
subscribers' open services, and phishing sites a few subscribers visit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mamori.sim._net import iso, ntoa
from mamori.sim.exporters import CUSTOMER_IFINDEX_BASE
from mamori.sim.flows import FlowTable
from mamori.sim.traffic.core import SYN, Gen
from mamori.sim.world import STATIC

__all__ = ["ddos", "phishing", "reflection"]


def ddos(g: Gen, attackers: list[int]) -> None:
    c, w, rng = g.cfg.ddos, g.w, g.rng
    if not c.enabled or not attackers:
        return
    victims = g.hostile_ips(c.victims)
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
    g.conversation(
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
        g.parts.append(
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
                    # the customer-facing interface its packets enter on (every border router)
                    "input_if": CUSTOMER_IFINDEX_BASE + int(w.region[b]),
                    "source_range": "198.18.0.0/15",
                    "from": iso(a0),
                    "until": iso(a1),
                }
            )
    g.truth["ddos"] = {
        "victims": [ntoa(v) for v in victims],
        "from": iso(a0),
        "until": iso(a1),
        "bots": [int(b) for b in bots],
        "spoofing": spoof_rows,
    }


def reflection(g: Gen) -> None:
    c, w, rng = g.cfg.reflection, g.w, g.rng
    if not c.enabled:
        return
    biz = np.flatnonzero(w.contract == STATIC).astype(np.int32)
    n_biz = min(biz.size, c.open_resolvers // 2)
    resolvers = np.concatenate([biz[:n_biz], g.pick_subs(c.open_resolvers - n_biz)])
    ntp = g.pick_subs(c.ntp_reflectors)
    victims = g.hostile_ips(c.victims)
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
        g.parts.append(
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
        g.parts.append(
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
                    # answers/s it sends while the attack lasts (before sampling)
                    "answer_pps": c.queries_per_s * amp_pkts,
                    # every address it held while the attack lasted (dynamic ones change)
                    "addresses": sorted(
                        {
                            ntoa(int(w.sessions.ip[i]))
                            for i in np.flatnonzero(
                                (w.sessions.sub == s)
                                & (w.sessions.start < a1)
                                & (w.sessions.stop > a0)
                            ).tolist()
                        }
                    ),
                }
            )
    g.truth["reflection"] = {
        "reflectors": entries,
        "victims": [ntoa(v) for v in victims],
        "from": iso(a0),
        "until": iso(a1),
    }


def phishing(g: Gen) -> None:
    """A few subscribers open phishing pages (the M8 warning-page case)."""
    c, w, rng = g.cfg, g.w, g.rng
    if c.phishing_sites == 0:
        return
    sites = g.hostile_ips(c.phishing_sites)
    rows: list[dict[str, Any]] = []
    for i, a in enumerate(sites):
        domain = f"secure-login{i + 1}.example-bank.invalid"
        since = w.t0 + rng.uniform(0.0, 0.3) * (w.t1 - w.t0)
        g.endpoint(a, 443, "tcp", "phishing", "phishing", since, w.t1, domain)
        n = c.phishing_visits_per_site
        subs = rng.choice(w.n, size=n).astype(np.int32)
        t = np.sort(rng.uniform(since, w.t1, n))
        g.resolve(subs, t - 0.3, [domain] * n)
        g.conversation("benign", subs, t, a, 443, 6, 12, 2400, 30, 40_000, 3.0)
        rows.append(
            {
                "url": f"https://{domain}/login",
                "domain": domain,
                "ip": ntoa(a),
                "from": iso(since),
                "visits": n,
            }
        )
    g.truth["phishing"] = rows
