"""Simulated ISP: a deterministic world that feeds Mamori the formats real equipment speaks.

A *client* of Mamori: it imports nothing from the rest of the package. ``simulate()`` writes
allocation logs (FreeRADIUS detail, Kea lease CSV, Juniper CGNAT syslog), router exports
(NetFlow v9, IPFIX, sFlow v5 in a pcap), resolver and mail logs, reputation feeds, third-party
reports and ``truth.json``; ``replay()`` sends a pcap's export packets to 127.0.0.1 over UDP;
``score()`` rates a detector's JSON findings against the truth.
"""

from mamori.sim.config import SCENARIOS, RouterSpec, ScenarioConfig, scenario_config
from mamori.sim.evaluate import Score, load_findings, score, score_files
from mamori.sim.pcap import read_pcap, replay
from mamori.sim.simulate import RouterSummary, SimSummary, simulate

__all__ = [
    "SCENARIOS",
    "RouterSpec",
    "RouterSummary",
    "ScenarioConfig",
    "Score",
    "SimSummary",
    "load_findings",
    "read_pcap",
    "replay",
    "scenario_config",
    "score",
    "score_files",
    "simulate",
]
