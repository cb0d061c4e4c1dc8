"""Mail abuse at the ISP's submission server: password guessing (SMTP AUTH / IMAP logins) from
outside, and compromised subscriber accounts sending spam.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mamori.sim._net import iso, ntoa
from mamori.sim.flows import FlowTable
from mamori.sim.traffic.core import TCP_FULL, Gen
from mamori.sim.world import MAIL_SERVER

__all__ = ["smtp"]


def smtp(g: Gen) -> None:
    c, w, rng = g.cfg.smtp, g.w, g.rng
    if not c.enabled:
        return
    attackers = g.hostile_ips(c.brute_force_sources)
    b0 = w.t0 + 0.2 * (w.t1 - w.t0)
    b1 = w.t0 + 0.5 * (w.t1 - w.t0)
    n = c.brute_force_attempts
    t = np.sort(rng.uniform(b0, b1, n))
    who = np.asarray(attackers, np.uint32)[rng.integers(0, len(attackers), n)]
    sp = rng.integers(1024, 65536, n)
    g.parts.append(
        FlowTable.make(
            t, 1.2, who, MAIL_SERVER, sp, 587, 6, TCP_FULL, 10, 900, "smtp-bruteforce", -1, 1, 1
        )
    )
    g.parts.append(
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
        g.mail.add(tt, a, user, False, 0, False, service="smtp" if i % 4 else "imap")
    victims = rng.choice(w.n, size=c.compromised_accounts, replace=False)
    abusers = g.hostile_ips(max(1, c.compromised_accounts))
    comp: list[dict[str, Any]] = []
    c0 = w.t0 + 0.6 * (w.t1 - w.t0)
    c1 = w.t0 + 0.8 * (w.t1 - w.t0)
    per = max(1, c.spam_messages // max(1, c.compromised_accounts))
    for j, v in enumerate(victims.tolist()):
        src = abusers[j % len(abusers)]
        ts = np.sort(rng.uniform(c0, c1, per // 10 + 1))
        spp = rng.integers(1024, 65536, ts.size)
        g.parts.append(
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
        g.parts.append(
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
            g.mail.add(tt, src, w.user_name(v), True, 10, True)
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
    g.truth["smtp"] = {
        "brute_force": {
            "sources": [ntoa(a) for a in attackers],
            "from": iso(b0),
            "until": iso(b1),
            "attempts": n,
        },
        "compromised_accounts": comp,
    }
