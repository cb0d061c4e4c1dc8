"""Simulated ISP: a deterministic world that feeds Mamori the formats real equipment speaks.

A *client* of Mamori: it imports nothing from the rest of the package, and nothing it writes
names a real network (addresses are 10/8, 100.64/10 and the documentation ranges; domains are
``example.*`` and ``.invalid``; UDP only ever goes to 127.0.0.1).

``simulate(scenario, out, seed=0, **overrides)`` writes, under ``out``:

====================================  ========================================================
``world/subscribers.csv``             customer database: contract, user name, contact e-mail,
                                      language, measures the subscriber opted out of
``world/address_plan.json``           pools: dynamic (PPPoE, IPoE), static, CGNAT in/out
``alloc/radius-detail``               FreeRADIUS ``detail`` accounting (Start/Interim/Stop)
``alloc/kea-leases4.csv``             Kea DHCPv4 memfile leases (IPoE, CGNAT inside)
``alloc/cgnat.log``                   Juniper ``JSERVICES_NAT_PORT_BLOCK_ALLOC/RELEASE`` syslog
``flows/exports.pcap``                NetFlow v9, IPFIX, sFlow v5 export packets (UDP to
                                      127.0.0.1:2055/4739/6343), one exporter per router
``dns/resolverN.dnstap``              dnstap CLIENT_QUERY messages in Frame Streams
``dns/unbound-resolverN.log``         the same queries as Unbound's ``log-queries`` lines
``mail/mail.log``                     Postfix submission + Dovecot syslog (SASL, queue)
``feeds/*``                           Feodo Tracker, URLhaus, ThreatFox CSV, STIX 2.1 bundle,
                                      phishing URL list (late listings, a few wrong entries)
``reports/*.csv``                     third-party infected hosts, taken-down C&C victim log,
                                      NOTICE-style vulnerable devices
``truth.json``                        ground truth (see ``simulate.py``)
``summary.json``                      what was written, with counts per router
====================================  ========================================================

Scenarios: ``tiny``, ``small``, ``demo``, ``large`` (every flow generated, then sampled by each
router) and ``national`` (100,000 subscribers over 7 days, botnets of thousands of bots, C&C sets
rotating over days, 1/1,000 or 1/10,000 sampling: the routers' sampled records are generated
directly, see :mod:`mamori.sim.national`). With ``randomise`` (always on for ``national``) each
seed draws its own world (:mod:`mamori.sim.randomise`).

``replay(pcap, host, port, rate)`` sends a pcap's export packets over UDP (to 127.0.0.1);
``score(kind, findings, truth)`` rates a detector's JSON findings against the truth.
"""

from mamori.sim.config import SCENARIOS, RouterSpec, ScenarioConfig, scenario_config
from mamori.sim.evaluate import (
    C2Score,
    LeadTime,
    Score,
    lead_time,
    load_findings,
    score,
    score_c2,
    score_files,
)
from mamori.sim.pcap import read_pcap, replay
from mamori.sim.simulate import RouterSummary, SimSummary, simulate

__all__ = [
    "SCENARIOS",
    "C2Score",
    "LeadTime",
    "RouterSpec",
    "RouterSummary",
    "ScenarioConfig",
    "Score",
    "SimSummary",
    "lead_time",
    "load_findings",
    "read_pcap",
    "replay",
    "scenario_config",
    "score",
    "score_c2",
    "score_files",
    "simulate",
]
