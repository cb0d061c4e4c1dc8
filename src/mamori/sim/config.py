"""Scenario configuration: every knob of the simulated ISP, as typed data.

A scenario is a :class:`ScenarioConfig`; :data:`SCENARIOS` names the built-in ones. Every hostile
behaviour is switchable (``enabled``) and parameterised, so tests and benchmarks can build the
world they need with ``scenario_config(name, **overrides)``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ExportProtocol = Literal["netflow9", "ipfix", "sflow5"]
RouterRole = Literal["border", "dc"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouterSpec(_Model):
    """One exporting router: where it sits, what it speaks, how it samples."""

    name: str
    role: RouterRole = "border"
    protocol: ExportProtocol = "netflow9"
    sampling: int = Field(default=1, ge=1, le=10_000)
    #: exporter address written in the pcap's IPv4 source (loopback: never routable)
    exporter_ip: str = "127.0.1.1"
    #: NetFlow v9 source id / IPFIX observation domain / sFlow sub-agent id
    source_id: int = 0
    #: UDP destination port on 127.0.0.1 (2055 NetFlow, 4739 IPFIX, 6343 sFlow)
    port: int = 2055
    #: a template (and the sampling options template) is re-sent every N export packets
    template_refresh_packets: int = Field(default=20, ge=1)
    #: … and at least every N seconds, as real exporters do (a quiet, heavily sampled router
    #: would otherwise outlive a collector's template timeout)
    template_refresh_s: float = Field(default=600.0, gt=0)


class IotBotnet(_Model):
    enabled: bool = True
    bots: int = 12
    cc_servers: int = 2
    cc_port: int = 38241
    loader_servers: int = 1
    loader_port: int = 8080
    keepalive_s: float = 60.0
    scans_per_bot_hour: int = 240
    #: share of bots infected during the window (the rest before it)
    infected_in_window: float = 0.3


class PcBotnet(_Model):
    enabled: bool = True
    bots: int = 20
    infection_servers: int = 2
    cc_servers: int = 6
    #: how many C&C servers are active at any moment; the set rotates
    active_cc: int = 3
    rotate_hours: float = 2.0
    cc_ports: tuple[int, ...] = (443, 8080, 7080)
    beacon_s: float = 300.0
    jitter: float = 0.2
    request_bytes: int = 524
    infected_in_window: float = 0.4


class StealthBotnet(_Model):
    enabled: bool = True
    bots: int = 3
    cc_port: int = 443
    beacon_s: float = 1800.0
    jitter: float = 0.5
    request_bytes: int = 1337


class Ddos(_Model):
    enabled: bool = True
    victims: int = 1
    #: offset from the window start and duration, as fractions of the window
    start_frac: float = 0.55
    duration_frac: float = 0.08
    pps_per_bot: float = 300.0
    #: share of the attacking bots whose packets carry spoofed sources
    spoofing_bots: int = 2


class Reflection(_Model):
    enabled: bool = True
    open_resolvers: int = 4
    ntp_reflectors: int = 2
    victims: int = 1
    start_frac: float = 0.35
    duration_frac: float = 0.06
    queries_per_s: float = 50.0


class Smtp(_Model):
    enabled: bool = True
    brute_force_sources: int = 3
    brute_force_attempts: int = 400
    compromised_accounts: int = 1
    spam_messages: int = 300
    benign_mail_per_sub_day: float = 2.0
    #: share of honest submissions preceded by one to three mistyped passwords
    typo_share: float = 0.05
    #: devices per 1,000 subscribers still trying an old password every 15–40 minutes
    stale_devices_per_1000: float = 3.0


class Feeds(_Model):
    enabled: bool = True
    #: C&C servers appear in feeds this many hours after they start (0 = immediately)
    listing_delay_hours: float = 3.0
    #: share of C&C servers never listed
    unlisted_share: float = 0.2
    #: benign endpoints wrongly listed
    wrong_entries: int = 2


class ScenarioConfig(_Model):
    name: str = "custom"
    description: str = ""
    #: "flows": every flow is generated, then each router samples it (exact, memory-bound);
    #: "sampled": the routers' sampled records are generated directly by thinning each flow's
    #: packets (see :mod:`mamori.sim.national`) — the only way a national ISP over days fits
    generator: Literal["flows", "sampled"] = "flows"
    #: draw the world's parameters from the seed (botnets, benign periodic mix, CGNAT share):
    #: each seed is a different world, so a detector cannot be fitted to one
    randomise: bool = False
    #: extra external address blocks (CIDR) for the Internet around the ISP, after the three
    #: documentation /24s (a national ISP talks to more than 762 addresses)
    external_nets: tuple[str, ...] = ()
    subscribers: int = Field(default=200, ge=10, le=1_000_000)
    start: datetime = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
    hours: float = Field(default=2.0, gt=0)
    #: contract mix (the rest are dynamic PPPoE subscribers authenticated by RADIUS)
    share_static: float = 0.05
    share_cgnat: float = 0.35
    share_ipoe: float = 0.25
    mean_session_hours: float = 8.0
    #: RADIUS Interim-Update interval (operators use 5 minutes to a day; a week of hourly
    #: interims for 100,000 subscribers is gigabytes of log the detectors never read)
    radius_interim_s: float = Field(default=3600.0, ge=60.0)
    dhcp_lifetime_s: int = 7200
    cgnat_block_size: int = 512
    #: benign connections per subscriber per hour at the daily peak
    connections_per_sub_hour: float = 40.0
    dns_query_share: float = 0.5
    ntp_share: float = 0.5
    ntp_interval_s: float = 1024.0
    update_share: float = 0.4
    update_interval_s: float = 3600.0
    camera_share: float = 0.08
    camera_interval_s: float = 120.0
    messaging_share: float = 0.3
    messaging_interval_s: float = 600.0
    iot: IotBotnet = IotBotnet()
    pc: PcBotnet = PcBotnet()
    stealth: StealthBotnet = StealthBotnet()
    ddos: Ddos = Ddos()
    reflection: Reflection = Reflection()
    smtp: Smtp = Smtp()
    feeds: Feeds = Feeds()
    vulnerable_devices: int = 10
    phishing_sites: int = 2
    phishing_visits_per_site: int = 5
    routers: tuple[RouterSpec, ...] = (
        RouterSpec(
            name="border1",
            protocol="netflow9",
            sampling=1,
            exporter_ip="127.0.1.1",
            source_id=1,
            port=2055,
        ),
        RouterSpec(
            name="border2",
            protocol="ipfix",
            sampling=1,
            exporter_ip="127.0.1.2",
            source_id=2,
            port=4739,
        ),
        RouterSpec(
            name="border3",
            protocol="sflow5",
            sampling=16,
            exporter_ip="127.0.1.3",
            source_id=3,
            port=6343,
        ),
        RouterSpec(
            name="dc1",
            role="dc",
            protocol="ipfix",
            sampling=1,
            exporter_ip="127.0.1.4",
            source_id=4,
            port=4739,
        ),
    )


def _demo_routers() -> tuple[RouterSpec, ...]:
    return (
        RouterSpec(
            name="border1",
            protocol="netflow9",
            sampling=10,
            exporter_ip="127.0.1.1",
            source_id=1,
            port=2055,
        ),
        RouterSpec(
            name="border2",
            protocol="ipfix",
            sampling=4,
            exporter_ip="127.0.1.2",
            source_id=2,
            port=4739,
        ),
        RouterSpec(
            name="border3",
            protocol="sflow5",
            sampling=256,
            exporter_ip="127.0.1.3",
            source_id=3,
            port=6343,
        ),
        RouterSpec(
            name="dc1",
            role="dc",
            protocol="netflow9",
            sampling=1,
            exporter_ip="127.0.1.4",
            source_id=4,
            port=2055,
        ),
    )


def _large_routers() -> tuple[RouterSpec, ...]:
    return (
        RouterSpec(
            name="border1",
            protocol="netflow9",
            sampling=1,
            exporter_ip="127.0.1.1",
            source_id=1,
            port=2055,
        ),
        RouterSpec(
            name="border2",
            protocol="ipfix",
            sampling=1,
            exporter_ip="127.0.1.2",
            source_id=2,
            port=4739,
        ),
        RouterSpec(
            name="border3",
            protocol="sflow5",
            sampling=10_000,
            exporter_ip="127.0.1.3",
            source_id=3,
            port=6343,
        ),
        RouterSpec(
            name="dc1",
            role="dc",
            protocol="ipfix",
            sampling=1,
            exporter_ip="127.0.1.4",
            source_id=4,
            port=4739,
        ),
    )


def _national_routers() -> tuple[RouterSpec, ...]:
    # every router samples at one rate: the sampled generator thins each flow once
    return (
        RouterSpec(
            name="border1",
            protocol="netflow9",
            sampling=1000,
            exporter_ip="127.0.1.1",
            source_id=1,
            port=2055,
        ),
        RouterSpec(
            name="border2",
            protocol="ipfix",
            sampling=1000,
            exporter_ip="127.0.1.2",
            source_id=2,
            port=4739,
        ),
    )


_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "description": "20 subscribers, 1 hour, every hostile behaviour once: unit tests (< 1 s)",
        "subscribers": 20,
        "hours": 1.0,
        "connections_per_sub_hour": 20.0,
        "camera_interval_s": 300.0,
        "iot": IotBotnet(bots=2, cc_servers=1, scans_per_bot_hour=60),
        "pc": PcBotnet(bots=3, cc_servers=3, active_cc=2, rotate_hours=0.5),
        "stealth": StealthBotnet(bots=1, beacon_s=900.0),
        "ddos": Ddos(pps_per_bot=20.0, spoofing_bots=1),
        "reflection": Reflection(open_resolvers=1, ntp_reflectors=1, queries_per_s=2.0),
        "smtp": Smtp(brute_force_sources=1, brute_force_attempts=30, spam_messages=20),
        "feeds": Feeds(listing_delay_hours=0.25, wrong_entries=1),
        "vulnerable_devices": 2,
    },
    "small": {
        "description": "300 subscribers, 3 hours: integration tests (seconds)",
        "subscribers": 300,
        "hours": 3.0,
        "iot": IotBotnet(bots=6, cc_servers=2),
        "pc": PcBotnet(bots=8, cc_servers=4, active_cc=2, rotate_hours=1.0),
        "stealth": StealthBotnet(bots=2, beacon_s=1200.0),
        "ddos": Ddos(pps_per_bot=100.0),
        "reflection": Reflection(open_resolvers=2, ntp_reflectors=1, queries_per_s=10.0),
        "smtp": Smtp(brute_force_sources=2, brute_force_attempts=150, spam_messages=100),
        "feeds": Feeds(listing_delay_hours=1.0),
        "vulnerable_devices": 5,
    },
    "demo": {
        "description": "2,000 subscribers, 6 hours, sampled exporters (1/10, 1/4, 1/256, 1/1): "
        "the demo, every measure has something to find",
        "subscribers": 2000,
        "hours": 6.0,
        "start": datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        "routers": _demo_routers(),
        "iot": IotBotnet(bots=30, cc_servers=2, scans_per_bot_hour=600),
        "pc": PcBotnet(bots=40, cc_servers=8, active_cc=3, rotate_hours=2.0),
        "stealth": StealthBotnet(bots=4),
        "ddos": Ddos(victims=2, pps_per_bot=2000.0, spoofing_bots=4),
        "reflection": Reflection(
            open_resolvers=6, ntp_reflectors=3, victims=2, queries_per_s=200.0
        ),
        "smtp": Smtp(
            brute_force_sources=5,
            brute_force_attempts=2000,
            compromised_accounts=2,
            spam_messages=1500,
        ),
        "vulnerable_devices": 40,
    },
    "national": {
        "description": "100,000 subscribers, 7 days, every router sampling 1/1,000 (override "
        "with --sampling), randomised world per seed: botnets of thousands of bots, C&C sets "
        "rotating over days, the benign periodic mix; sampled records generated directly",
        "subscribers": 100_000,
        "hours": 168.0,
        "generator": "sampled",
        "randomise": True,
        "radius_interim_s": 86400.0,
        "external_nets": ("198.18.0.0/15",),
        "routers": _national_routers(),
        "feeds": Feeds(listing_delay_hours=24.0, wrong_entries=2),
    },
    "large": {
        "description": "135,000 subscribers, 6 hours, unsampled NetFlow v9/IPFIX borders, sFlow "
        "1/10,000: benchmarks (about 67M flows, 50M exported records; about 5 minutes and "
        "11 GB of memory)",
        "subscribers": 135_000,
        "hours": 6.0,
        "routers": _large_routers(),
        "camera_interval_s": 600.0,
        "iot": IotBotnet(bots=500, cc_servers=4),
        "pc": PcBotnet(bots=800, cc_servers=20, active_cc=5),
        "stealth": StealthBotnet(bots=10),
        "ddos": Ddos(victims=3, pps_per_bot=1000.0, spoofing_bots=20),
        "reflection": Reflection(open_resolvers=60, ntp_reflectors=20, victims=3),
        "smtp": Smtp(
            brute_force_sources=20,
            brute_force_attempts=20_000,
            compromised_accounts=5,
            spam_messages=5000,
        ),
        "vulnerable_devices": 2000,
    },
}

#: built-in scenario names → one-line description
SCENARIOS: dict[str, str] = {name: str(p["description"]) for name, p in _PRESETS.items()}


def scenario_config(name: str, **overrides: Any) -> ScenarioConfig:
    """The named scenario, with top-level fields replaced by ``overrides`` (None values ignored)."""
    if name not in _PRESETS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(sorted(_PRESETS))}")
    fields: dict[str, Any] = {"name": name, **_PRESETS[name]}
    sampling = overrides.pop("sampling", None)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    cfg = ScenarioConfig(**fields)
    return cfg if sampling is None else with_sampling(cfg, int(sampling))


def with_sampling(cfg: ScenarioConfig, rate: int) -> ScenarioConfig:
    """``cfg`` with every router sampling 1-in-``rate``."""
    routers = tuple(r.model_copy(update={"sampling": rate}) for r in cfg.routers)
    return cfg.model_copy(update={"routers": routers})
