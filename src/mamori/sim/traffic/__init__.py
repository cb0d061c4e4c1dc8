"""Benign and hostile traffic, generated with NumPy (no per-flow Python loop), with ground truth.

Every generator returns flows (both directions of a conversation where there is an answer), the
resolver queries it caused and, for hostile behaviour, a ground-truth entry. Times follow a
diurnal curve (Japan time); periodic benign traffic (NTP, update checks, messaging keep-alives,
IoT cameras all beaconing to one vendor cloud) is there to trap naive C&C detectors.

One module per phenomenon (:mod:`.benign`, :mod:`.botnets`, :mod:`.attacks`, :mod:`.mail`), all
drawing from the shared state in :mod:`.core`. They run in a fixed order from one random
stream, so the same seed gives the same bytes: add a phenomenon at the end of :func:`generate`,
never in between.
"""

from __future__ import annotations

import numpy as np

from mamori.sim._net import ip, iso
from mamori.sim.flows import FlowTable
from mamori.sim.traffic import attacks, benign, botnets, mail
from mamori.sim.traffic.core import DnsQueries, Gen, MailEvents, Traffic
from mamori.sim.world import Service, World

__all__ = ["DnsQueries", "MailEvents", "Service", "Traffic", "generate"]


def generate(world: World, seed: int) -> Traffic:
    g = Gen(world, seed)
    benign.benign(g)
    iot_bots = botnets.iot(g)
    botnets.pc(g)
    botnets.stealth(g)
    attacks.ddos(g, iot_bots)
    attacks.reflection(g)
    mail.smtp(g)
    attacks.phishing(g)
    botnets.vulnerable(g, iot_bots)
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
