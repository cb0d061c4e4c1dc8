"""Configuration: ``mamori.toml`` overlaid by ``MAMORI_*`` environment variables.

Precedence, highest first: explicit overrides (command-line flags), environment, the TOML file,
defaults. Nested keys use a double underscore in the environment: ``MAMORI_RETENTION__FLOWS=30``,
``MAMORI_SMTP__HOST=mail.example.net``. ``MAMORI_STORE`` names the store directory.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "AddressPool",
    "AlertsConfig",
    "AttributionConfig",
    "CollectorConfig",
    "ConfigError",
    "DnsConfig",
    "GovernanceConfig",
    "MamoriConfig",
    "ReputationConfig",
    "RetentionConfig",
    "SmtpConfig",
    "WebConfig",
    "load_config",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MEASURE_IDS = tuple(f"M{i}" for i in range(1, 15))


class ConfigError(Exception):
    """The configuration is invalid. The message names each key, its value and what is allowed."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddressPool(_Model):
    """A block of subscriber addresses and how it is handed out."""

    name: str = Field(min_length=1, max_length=64)
    kind: Literal["dynamic", "static", "cgnat"] = Field(
        description="dynamic: assigned per session (RADIUS/DHCP); static: fixed customer "
        "assignments (their own servers live here); cgnat: public addresses shared by "
        "subscribers who hold port blocks",
    )
    prefixes: tuple[IPNetwork, ...] = Field(min_length=1)


class RetentionConfig(_Model):
    """Days each dataset is kept; ``mamori purge`` deletes partitions past it."""

    flows: int = Field(default=90, gt=0, le=3650)
    dns_queries: int = Field(default=30, gt=0, le=3650)
    allocations: int = Field(default=180, gt=0, le=3650)
    subscribers: int = Field(default=3650, gt=0, le=36500)
    auth_events: int = Field(default=30, gt=0, le=3650)
    reputation: int = Field(default=365, gt=0, le=3650)
    findings: int = Field(default=365, gt=0, le=3650)
    matches: int = Field(default=30, gt=0, le=3650)
    actions: int = Field(default=365, gt=0, le=3650)
    notifications: int = Field(default=365, gt=0, le=3650)
    consent: int = Field(default=3650, gt=0, le=36500)
    cases: int = Field(default=365, gt=0, le=3650)
    # Match records made for an alert are deleted this many days after the alert was sent.
    matches_after_alert_days: int = Field(default=7, ge=0, le=365)

    def days(self, dataset: str) -> int | None:
        """Retention of ``dataset`` in days; ``None`` for the audit log, which is never purged."""
        if dataset == "audit":
            return None
        value = getattr(self, dataset, None)
        if not isinstance(value, int):
            raise KeyError(f"no retention configured for dataset {dataset!r}")
        return value


class GovernanceConfig(_Model):
    # Addresses inside the subscriber pools that no allocation record covers cannot be checked
    # against consent. "exclude" drops them from consent-based measures (the safe default).
    unattributed: Literal["exclude", "include"] = "exclude"
    sandbox_memory_limit_mb: int | None = Field(
        default=None,
        ge=64,
        description="memory of the sandbox a grant's holder queries (and of governance while it "
        "fills one); past it, work spills to <store>/_state/spill. Unset: DuckDB's default (80 % "
        "of RAM). A detector's own memory_limit_mb wins for its sandbox",
    )


class CollectorConfig(_Model):
    """The flow collector (``mamori collect``); command-line flags override these."""

    listen: tuple[str, ...] = Field(default=(), description="udp://HOST:PORT listeners")
    flush_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="seconds between writes; a kill -9 loses at most this",
    )
    max_file_rows: int = Field(default=5_000_000, gt=0, description="start a new file sooner")
    batch_packets: int = Field(default=4096, gt=0, description="datagrams decoded together")
    rcvbuf_bytes: int = Field(default=16 << 20, ge=65536, description="socket receive buffer")
    # How they combine with what the exporter says: mamori.ingest.sampling.
    sampling_overrides: dict[str, int] = Field(
        default_factory=dict,
        description="exporter address → 1-in-N rate used instead of what the exporter reports",
    )
    sampling_defaults: dict[str, int] = Field(
        default_factory=dict,
        description="exporter address → 1-in-N rate used where the exporter reports none or 0",
    )
    template_timeout_s: float = Field(default=1800.0, gt=0)

    @field_validator("sampling_overrides", "sampling_defaults")
    @classmethod
    def _sampling_rates(cls, value: dict[str, int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for exporter, rate in value.items():
            try:
                # the collector names exporters in this canonical text form
                canonical = ipaddress.ip_address(exporter).compressed
            except ValueError:
                raise ValueError(f"{exporter!r} is not an exporter IP address") from None
            if not 1 <= rate <= 0xFFFFFFFF:
                raise ValueError(f"rate {rate} for {exporter} must be at least 1 (and < 2**32)")
            out[canonical] = rate
        return out


class SmtpConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=2525, gt=0, lt=65536)
    sender: str = "abuse-desk@isp.example.net"
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None


class WebConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, gt=0, lt=65536)
    base_url: str = "http://127.0.0.1:8080"
    secret_key: SecretStr | None = Field(
        default=None, description="signs consent-page tokens and sessions; generated if unset"
    )
    mailbox_dir: Path | None = Field(
        default=None,
        description="a local mailbox (a Maildir or a folder of .eml files; in the demo, the SMTP "
        "sink's) the abuse desk may read in the console; unset in production",
    )
    time_zone: str = Field(
        default="Asia/Tokyo", description="the ISP's time zone: every time the console shows"
    )
    secure_cookies: bool | None = Field(
        default=None,
        description="send the session cookie over HTTPS only; default: yes unless the console "
        "is served on loopback",
    )
    login_failures_per_minute: int = Field(
        default=10,
        ge=1,
        description="wrong passwords per account and per source in a minute; more are refused "
        "before they are checked",
    )
    lock_after_failures: int = Field(
        default=20, ge=1, description="wrong passwords in a row that lock an account"
    )
    lock_minutes: float = Field(default=15.0, gt=0, description="how long an account stays locked")
    subscriber_sso_header: str | None = Field(
        default=None,
        description="header the ISP's single sign-on proxy sets to the signed-in subscriber's "
        "id; when set and present, /consent opens that subscriber's settings",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name, e.g. Asia/Tokyo)") from None
        return v


class DnsConfig(_Model):
    """DNS protection (M7, M8): the RPZ zones Mamori writes and the resolver it keeps in step."""

    rpz_dir: Path | None = Field(
        default=None, description="where zone files are written; default <store>/_state/rpz"
    )
    c2_zone: str = Field(default="c2.rpz.mamori.", description="RPZ zone of C&C names (M7)")
    warning_zone: str = Field(
        default="warning.rpz.mamori.", description="RPZ zone of malware/phishing sites (M8)"
    )
    optout_zone: str = Field(
        default="optout.rpz.mamori.",
        description="small RPZ zone of client addresses that just withdrew consent (passthru)",
    )
    c2_action: Literal["nxdomain", "nodata", "drop", "cname-warning"] = "nxdomain"
    warning_host: str = Field(
        default="warning.mamori.invalid.",
        description="host name serving the warning page; listed sites become a CNAME to it",
    )
    warning_addrs: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = Field(
        default=(), description="if set, listed sites answer these A/AAAA records directly"
    )
    ttl: int = Field(default=300, gt=0, le=86400)
    subdomains: bool = Field(default=True, description="also list *.name for every name")
    url_hosts: bool = Field(
        default=True, description="take host names of listed malware/phishing URLs"
    )
    never_block: tuple[str, ...] = Field(
        default=(), description="domains (and their subdomains) never put in a zone"
    )
    resolver_control: tuple[str, ...] = Field(
        default=("unbound-control",),
        # the first name it had, when only Unbound was supported; still read
        validation_alias=AliasChoices("resolver_control", "unbound_control"),
        description="command that reaches the resolver: unbound-control (with -c/-s options) "
        "for Unbound, rndc (with -c/-s options) for BIND 9",
    )
    clients_file: Path | None = Field(
        default=None,
        description="Unbound include file of access-control-tag lines; default "
        "<store>/_state/resolver/clients.conf",
    )
    sync_interval_s: float = Field(default=2.0, gt=0, le=3600)
    tag_reload_min_interval_s: float = Field(
        default=0.0,
        ge=0,
        le=86400,
        description="least time between two reloads of the client tags; a reload re-reads the "
        "zones (seconds per million names, not answering meanwhile): raise it for large zones. "
        "Withdrawn consent applies at once regardless (opt-out zone)",
    )
    continue_url: str | None = Field(
        default=None,
        description="warning page 'continue' target, with {url}: a forwarding proxy that does "
        "not use the policy resolver; unset: the page explains how to switch the warning off",
    )
    zone_expiry_days: float = Field(
        default=7.0,
        gt=0,
        le=365,
        description="a zone not rebuilt within this long expires (every action ends): "
        "`mamori act expire` then empties it, as a zone is only as current as the lists it was "
        "built from",
    )


class AttributionConfig(_Model):
    """Who held an address when (``mamori attribute``, ``mamori ingest allocations``)."""

    skew_s: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="clock-skew tolerance: a holder within this many seconds of the time asked "
        "about counts as a candidate (two candidates: ambiguous, never a guess)",
    )
    session_timeout_s: float = Field(
        default=86400.0,
        gt=0,
        description="an accounting session or port block with no Stop/release is closed this long "
        "after its last record (or earlier, by the next allocation of the same address)",
    )
    memory_limit_mb: int | None = Field(
        default=3072,
        ge=256,
        description="memory the query engine may use for one batch of lookups; the rest spills "
        "to disk in the store (null: the engine's default, 80% of RAM)",
    )


class AlertsConfig(_Model):
    """Alerts to subscribers (``mamori notify``, measures M5, M6, M9) and their risk tests."""

    interval_hours: float = Field(
        default=168.0, gt=0, description="a case is alerted at most once per interval"
    )
    escalate_after_events: int = Field(
        default=3, ge=1, description="events after an alert that escalate the case to the desk"
    )
    rate_limit_per_hour: int = Field(default=500, ge=1, description="most alerts sent per hour")
    max_attempts: int = Field(default=20, ge=1, description="delivery attempts before giving up")
    retry_after_s: float = Field(default=300.0, ge=0, description="wait before retrying")
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    risk_window_hours: float = Field(
        default=24.0, gt=0, description="window the risk tests count devices in"
    )
    m5_infected_devices_threshold: int | None = Field(
        default=None,
        ge=0,
        description="M5 justified act: likely-infected devices on the network above this; "
        "None: M5 rests on consent only",
    )
    m9_network_capacity_bps: float | None = Field(
        default=None,
        gt=0,
        description="M9 justified act: capacity of the network (bit/s); None: consent only",
    )
    m9_attack_bps_per_device: float = Field(
        default=10e6, gt=0, description="expected attack traffic of one infected device (bit/s)"
    )
    m9_capacity_share: float = Field(
        default=0.5, gt=0, le=1, description="share of capacity the expected attack must exceed"
    )


_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


class ReputationConfig(_Model):
    """Outside reputation lists (feeds, partners' C&C lists) and the operator's corrections.

    Feeds list things by mistake (a cloud service, a CDN, the ISP's own mail relay). An entry on
    the allowlist is dropped from every list Mamori reads: never matched against subscribers'
    traffic (M4), never blocked or redirected at the resolver (M7, M8).
    """

    allow_prefixes: tuple[IPNetwork, ...] = Field(
        default=(), description="addresses no feed may make Mamori act on (CIDR prefixes)"
    )
    allow_domains: tuple[str, ...] = Field(
        default=(), description="domains no feed may make Mamori act on, with their subdomains"
    )

    @field_validator("allow_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(d.strip().lower().rstrip(".") for d in value)
        bad = [d for d in out if not _DOMAIN.match(d)]
        if bad:
            raise ValueError(f"not domain names: {bad}")
        return out


class MamoriConfig(BaseSettings):
    """The effective configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MAMORI_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    store: Path = Field(default=Path("mamori-data"), description="store directory")
    engine: Literal["duckdb", "spark"] = "duckdb"
    isp_name: str = "Example ISP"
    address_plan: tuple[AddressPool, ...] = ()
    retention: RetentionConfig = RetentionConfig()
    measures: dict[str, bool] = Field(
        default_factory=lambda: dict.fromkeys(MEASURE_IDS, True),
        description="measure switches: a switched-off measure refuses every access",
    )
    governance: GovernanceConfig = GovernanceConfig()
    collector: CollectorConfig = CollectorConfig()
    smtp: SmtpConfig = SmtpConfig()
    web: WebConfig = WebConfig()
    detect: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="[detect.NAME]: each detector's parameters (`mamori config check` prints "
        "them all with their defaults)",
    )
    dns: DnsConfig = DnsConfig()
    attribution: AttributionConfig = AttributionConfig()
    alerts: AlertsConfig = AlertsConfig()
    reputation: ReputationConfig = ReputationConfig()

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "reputation_match" in data:
            raise ValueError(
                "[reputation_match] is now [detect.infected] (the same keys); rename the section"
            )
        return data

    @field_validator("engine")
    @classmethod
    def _engine_built(cls, value: str) -> str:
        # A setting that validates but does nothing would let an operator believe the store is
        # read by Spark. Refused until the Spark engine exists.
        if value != "duckdb":
            raise ValueError(
                f"engine {value!r} is not available yet (only 'duckdb' is built; the Spark engine "
                "is planned)"
            )
        return value

    @field_validator("measures")
    @classmethod
    def _known_measures(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(value) - set(MEASURE_IDS))
        if unknown:
            raise ValueError(f"unknown measure(s) {unknown}; allowed: M1 … M14")
        return {**dict.fromkeys(MEASURE_IDS, True), **value}

    @model_validator(mode="after")
    def _pools_disjoint(self) -> MamoriConfig:
        seen: list[tuple[str, IPNetwork]] = []
        names: set[str] = set()
        for pool in self.address_plan:
            if pool.name in names:
                raise ValueError(f"address pool name {pool.name!r} is used twice")
            names.add(pool.name)
            for net in pool.prefixes:
                for other_name, other in seen:
                    if net.version == other.version and net.overlaps(other):
                        raise ValueError(
                            f"prefix {net} of pool {pool.name!r} overlaps {other} of pool "
                            f"{other_name!r}; pools must be disjoint"
                        )
                seen.append((pool.name, net))
        return self

    def measure_enabled(self, measure: str) -> bool:
        return self.measures.get(measure, False)

    def pools(self, kind: str | None = None) -> list[IPNetwork]:
        return [n for p in self.address_plan if kind in (None, p.kind) for n in p.prefixes]

    def public_dict(self) -> dict[str, Any]:
        """The configuration as plain data, secrets masked, for printing."""
        return self.model_dump(mode="json")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives through init_settings (see load_config), below the environment.
        return env_settings, init_settings


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"  {key}{shown}: {e['msg']}")
    return "\n".join(lines)


DEFAULT_CONFIG_FILE = Path("mamori.toml")


def load_config(
    path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> MamoriConfig:
    """Read the configuration.

    ``path`` defaults to ``$MAMORI_CONFIG`` or ``./mamori.toml`` when that exists. ``overrides`` (from
    command-line flags) win over the environment; the environment wins over the file.
    """
    explicit = path is not None or "MAMORI_CONFIG" in os.environ
    file = path or Path(os.environ.get("MAMORI_CONFIG", DEFAULT_CONFIG_FILE))
    data: dict[str, Any] = {}
    source = "defaults and environment"
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid configuration ({file}): not valid TOML: {exc}") from None
        source = f"{file} and environment"
    elif explicit:
        raise ConfigError(f"configuration file {file} does not exist")
    try:
        config = MamoriConfig(**data)
        update: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key not in MamoriConfig.model_fields:
                raise ConfigError(f"unknown configuration key {key!r}")
            annotation: Any = MamoriConfig.model_fields[key].annotation
            update[key] = TypeAdapter(annotation).validate_python(value)
        return config.model_copy(update=update) if update else config
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
