"""Configuration: ``mamori.toml`` overlaid by ``MAMORI_*`` environment variables.

Precedence, highest first: explicit overrides (command-line flags), environment, the TOML file,
defaults. Nested keys use a double underscore in the environment: ``MAMORI_RETENTION__FLOWS=30``,
``MAMORI_SMTP__HOST=mail.example.net``. ``MAMORI_STORE`` names the store directory.
"""

from __future__ import annotations

import ipaddress
import itertools
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

from mamori.config_network import NetworkConfig

__all__ = [
    "AddressPool",
    "AlertsConfig",
    "AttributionConfig",
    "AuditConfig",
    "CollectorConfig",
    "ConfigError",
    "DnsConfig",
    "GovernanceConfig",
    "InputLimitsConfig",
    "MailConfig",
    "MamoriConfig",
    "ReputationConfig",
    "RetentionConfig",
    "ScheduleConfig",
    "ScheduledJob",
    "ShareConfig",
    "SmtpConfig",
    "SparkConfig",
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
    # Per-day aggregates of flows (M2, windows of days to weeks): communications data, so kept
    # no longer than the flows they summarise by default.
    flow_days: int = Field(default=90, gt=0, le=3650)
    dns_queries: int = Field(default=30, gt=0, le=3650)
    allocations: int = Field(default=180, gt=0, le=3650)
    subscribers: int = Field(default=3650, gt=0, le=36500)
    auth_events: int = Field(default=30, gt=0, le=3650)
    mail_queue: int = Field(default=30, gt=0, le=3650)
    reputation: int = Field(default=365, gt=0, le=3650)
    findings: int = Field(default=365, gt=0, le=3650)
    matches: int = Field(default=30, gt=0, le=3650)
    actions: int = Field(default=365, gt=0, le=3650)
    notifications: int = Field(default=365, gt=0, le=3650)
    consent: int = Field(default=3650, gt=0, le=36500)
    cases: int = Field(default=365, gt=0, le=3650)
    # Match records made for an alert are deleted this many days after the alert was sent.
    matches_after_alert_days: int = Field(default=7, ge=0, le=365)
    # Nothing true is dated in the future: an hour partition starting more than this many hours
    # after now holds garbage (a bad exporter clock) and is deleted by every purge.
    future_tolerance_hours: int = Field(default=48, ge=1, le=8760)

    def days(self, dataset: str) -> int | None:
        """Retention of ``dataset`` in days; ``None`` for the audit log, which is never purged."""
        if dataset == "audit":
            return None
        value = getattr(self, dataset, None)
        if not isinstance(value, int):
            raise KeyError(f"no retention configured for dataset {dataset!r}")
        return value


_SECRET_KEY = re.compile(r"(secret|password|token|credential|access\.key)", re.IGNORECASE)
_SPARK_MASTER = re.compile(r"^(local(\[(\*|\d+)(,\d+)?\])?|spark://\S+|k8s://\S+|yarn)$")
_STORE_URL = re.compile(r"^(s3a|gs|abfss|hdfs|file)://\S+$")


class SparkConfig(_Model):
    """``[spark]``: the Spark engine (``engine = "spark"``), for stores one machine cannot scan."""

    master: str = Field(
        default="local[*]",
        description='where Spark runs: "local[*]" (this machine\'s cores), "local[N]", '
        '"spark://host:7077" (a standalone cluster), "k8s://https://api:6443" or "yarn"',
    )
    store_url: str | None = Field(
        default=None,
        description="where Spark reads the datasets from, when not the store directory: an "
        "object-store or HDFS URL (s3a://bucket/prefix) holding the same date=/hour= layout. "
        "The audit log, state and writes stay in `store`",
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="extra Spark settings (spark.executor.memory, spark.hadoop.fs.s3a.endpoint, "
        "…); the time zone, ANSI mode and identifier quoting are the engine's and cannot be set",
    )

    @field_validator("master")
    @classmethod
    def _master(cls, value: str) -> str:
        if not _SPARK_MASTER.match(value):
            raise ValueError(
                f"spark.master {value!r}: expected local[*], local[N], spark://…, k8s://… or yarn"
            )
        return value

    @field_validator("store_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _STORE_URL.match(value):
            raise ValueError(
                f"spark.store_url {value!r}: expected s3a://, gs://, abfss://, hdfs:// or file://"
            )
        return value

    @field_validator("conf")
    @classmethod
    def _conf(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not k.startswith("spark.")]
        if bad:
            raise ValueError(f"spark.conf keys must start with 'spark.': {bad}")
        return {k: str(v) for k, v in value.items()}


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


_SINK = re.compile(r"^(syslog://(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d{1,5}|file:\S.*)$")


class AuditConfig(_Model):
    """Making the audit log evident to those who do not own the store (``mamori audit --help``).

    The key is the audit role's: outside the store, so that whoever can rewrite the store's files
    cannot sign a rewritten log.
    """

    signing_key: Path | None = Field(
        default=None,
        description="the audit role's Ed25519 private key (`mamori audit keygen`), outside the "
        "store: signs HEAD at every append, published heads and the transparency report's head",
    )
    public_key: str | list[str] | None = Field(
        default=None,
        description="public key(s) HEAD and published heads must be signed with: ed25519:<base64> "
        "or a file holding it; a list during a key rotation. Default: the signing key's",
    )
    publish_to: tuple[str, ...] = Field(
        default=(),
        description="where `mamori audit publish` sends the signed head: syslog://HOST:PORT "
        "(RFC 5424 over TCP) or file:PATH (another mount); verify reads the file sinks back",
    )

    @field_validator("publish_to")
    @classmethod
    def _sinks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not _SINK.match(s)]
        if bad:
            raise ValueError(f"{bad}: expected syslog://HOST:PORT or file:PATH")
        return value

    def public_keys(self) -> tuple[str, ...]:
        if self.public_key is None:
            return ()
        return (self.public_key,) if isinstance(self.public_key, str) else tuple(self.public_key)

    def file_sinks(self) -> tuple[Path, ...]:
        return tuple(Path(s[len("file:") :]) for s in self.publish_to if s.startswith("file:"))


_INSTANCE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class CollectorGroup(_Model):
    """One collector process (``mamori collect --group NAME``, unit ``mamori-collect@NAME``)."""

    listen: tuple[str, ...] = Field(min_length=1, description="udp://HOST:PORT listeners")
    metrics: str | None = Field(
        default=None, description="HOST:PORT to serve this group's Prometheus metrics on"
    )


class CollectorConfig(_Model):
    """The flow collector (``mamori collect``); command-line flags override these."""

    listen: tuple[str, ...] = Field(default=(), description="udp://HOST:PORT listeners")
    decoders: int = Field(
        default=1,
        ge=1,
        le=64,
        description="decoding processes sharing the listeners' ports (SO_REUSEPORT): the "
        "kernel gives each exporter to one of them; use more than one when one core cannot "
        "keep up (see bench/README.md)",
    )
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
    reuse_port: bool = Field(
        default=False,
        description="bind listeners with SO_REUSEPORT, so several collector processes (groups) "
        "share one port; the kernel keeps each exporter (source address and port) on one of "
        "them while their number does not change (docs/scale-out.md)",
    )
    metrics: str | None = Field(
        default=None,
        description="HOST:PORT to serve the collector's Prometheus metrics on, e.g. "
        "127.0.0.1:9465 (the group default; each group has its own)",
    )
    groups: dict[str, CollectorGroup] = Field(
        default_factory=dict,
        description="[collector.groups.NAME]: listener groups, one collector process each "
        "(systemd unit mamori-collect@NAME); `listen` above is the group named default",
    )

    @field_validator("groups")
    @classmethod
    def _group_names(cls, value: dict[str, CollectorGroup]) -> dict[str, CollectorGroup]:
        # the name becomes a systemd instance name and a state directory: keep it plain
        bad = [n for n in value if not _INSTANCE.match(n) or n == "default"]
        if bad:
            raise ValueError(
                f"group names {bad}: a lower-case letter, then letters, digits and _, at most "
                "32 in all, not 'default' (that is collector.listen)"
            )
        return value

    def listen_groups(self) -> dict[str, tuple[str, ...]]:
        """Every listener group by name; ``default`` is ``collector.listen`` when set."""
        out = {"default": self.listen} if self.listen else {}
        return out | {name: g.listen for name, g in self.groups.items()}

    def metrics_for(self, group: str) -> str | None:
        """Where the group's metrics are served (None: not served)."""
        return self.metrics if group == "default" else self.groups[group].metrics

    # Hostile or broken input must not stop the collector (mamori.ingest.collector).
    max_open_partitions: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="hour partitions with a file open at once; past it the least recently "
        "written is closed early (rows still become visible at the next flush)",
    )
    stop_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="on SIGTERM, how long the receiver may take to hand over what it holds "
        "before it is killed",
    )
    record_before_export_s: float = Field(
        default=86_400.0,
        gt=0,
        description="a record that started or ended more than this before its export time is "
        "refused (counted as records.refused.before_export)",
    )
    record_after_export_s: float = Field(
        default=300.0,
        gt=0,
        description="a record that ends more than this after its export time is refused "
        "(records.refused.after_export)",
    )
    export_clock_skew_s: float = Field(
        default=86_400.0,
        gt=0,
        description="the records of a packet whose export time is further than this from the "
        "time it was received are refused (records.refused.export_clock)",
    )
    templates_per_exporter: int = Field(
        default=1024,
        ge=1,
        description="templates kept per exporter address; past it the least recently "
        "announced is evicted (templates.evicted)",
    )
    templates_total: int = Field(
        default=32_768,
        ge=1,
        description="templates kept over all exporters (the same eviction)",
    )

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
    metrics_listen: str | None = Field(
        default=None,
        description="loopback HOST:PORT on which `mamori serve` also serves /metrics without a "
        "login, for a Prometheus on the same host, e.g. 127.0.0.1:9466",
    )

    @field_validator("metrics_listen")
    @classmethod
    def _loopback(cls, value: str | None) -> str | None:
        # no login on this listener: it must not be reachable from elsewhere
        if value is None:
            return None
        host = value.rpartition(":")[0].strip("[]")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback or not value.rpartition(":")[2].isdigit():
            raise ValueError("a loopback address and port, e.g. 127.0.0.1:9466 or [::1]:9466")
        return value

    time_zone: str = Field(
        default="Asia/Tokyo", description="the ISP's time zone: every time the console shows"
    )
    kept_read_max_s: int = Field(
        default=900,
        ge=0,
        le=86400,
        description="the longest the console keeps rows it read through governance (seconds; 0: "
        "read again for every page). It reads again sooner whenever the audit log shows a write, "
        "consent change or purge; this bounds what the log cannot show (a purge that deleted and "
        "died before writing its entry)",
    )
    warm_interval_s: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="how often the served console looks at the audit log for changes and reads "
        "the changed tables again through governance ahead of the next page view (seconds)",
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


class MailConfig(_Model):
    """SMTP AUTH abuse (M11, M12): how mail-server logs are read (``mamori ingest mail``) and how
    refusals and suspensions reach Postfix, nftables and Dovecot (``mamori act smtp``)."""

    server: str | None = Field(
        default=None, description="mail server name recorded with each row; unset: this host's"
    )
    timezone: str = Field(
        default="UTC",
        description="IANA zone of log time stamps that carry none (syslog, Exim, Dovecot)",
    )
    queue_command: tuple[str, ...] = Field(
        default=("postqueue", "-j"),
        description="prints the queue as JSON lines (Postfix postqueue -j; add -c DIR for an "
        "instance)",
    )
    follow_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="--follow: seconds between reads of a live log"
    )
    refusal_backends: tuple[Literal["postfix", "nftables"], ...] = Field(
        default=("postfix",),
        min_length=1,
        description="where AUTH refusals go: a Postfix check_client_access hash map, an "
        "nftables set on the submission ports, or both",
    )
    postfix_access_map: Path | None = Field(
        default=None,
        description="source file of the check_client_access hash map (postmap makes the .db); "
        "default <store>/_state/mail/client_access",
    )
    postmap_command: tuple[str, ...] = Field(
        default=("postmap",),
        description="postmap, with -c DIR for a Postfix instance; empty: write the source file "
        "only",
    )
    postfix_reject: str = Field(
        default="450 4.7.1 too many failed logins from your address; try again later",
        min_length=1,
        description="access(5) action for a refused address",
    )
    nft_command: tuple[str, ...] = Field(default=("nft",), description="nft, with its options")
    nft_table: str = Field(
        default="mamori_smtp", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,30}$", description="inet table"
    )
    submission_ports: tuple[int, ...] = Field(
        default=(25, 465, 587), min_length=1, description="ports the nftables refusal covers"
    )
    dovecot_deny_file: Path | None = Field(
        default=None,
        description="passwd-file of a Dovecot passdb with deny = yes (one AUTH ID a line); "
        "default <store>/_state/mail/dovecot-deny",
    )
    refusal_margin_s: float = Field(
        default=3600.0, ge=0, description="a refusal lasts the attack so far plus this margin"
    )
    refusal_min_s: float = Field(default=600.0, gt=0, description="shortest refusal")
    refusal_max_s: float = Field(default=7 * 86400.0, gt=0, description="longest refusal")
    suspension_hours: float = Field(
        default=24.0, gt=0, le=24 * 90, description="how long an AUTH ID stays suspended"
    )
    auto_refuse: bool = Field(
        default=True,
        description="refusals are approved by policy and applied at once; false: proposed for "
        "the abuse desk to approve",
    )
    auto_suspend: bool = Field(
        default=True,
        description="suspensions are approved by policy and applied at once; false: proposed for "
        "the abuse desk to approve",
    )
    owner_address: str = Field(
        default="{auth_id}",
        description="where a suspended account's owner is told ({auth_id} is replaced); the "
        "suspension covers SMTP AUTH only, so the owner can still read the mailbox",
    )
    alert_languages: tuple[Literal["ja", "en"], ...] = Field(
        default=("ja", "en"), min_length=1, description="languages of the owner's alert, in order"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name such as Asia/Tokyo)"
            ) from None
        return value

    @model_validator(mode="after")
    def _refusal_bounds(self) -> MailConfig:
        if self.refusal_min_s > self.refusal_max_s:
            raise ValueError("refusal_min_s is longer than refusal_max_s")
        return self


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


class InputLimitsConfig(_Model):
    """Bounds on what outsiders' files and messages may make the parsers do.

    ``json.loads`` and the STIX pattern grammar recurse once per level: a document nested a few
    thousand levels deep, or a pattern of thousands of ``OR``, ends in ``RecursionError``. Nesting
    is measured on the raw text before parsing; the one object that exceeds a bound is refused
    with its position and the rest of the file is kept.
    """

    max_json_depth: int = Field(
        default=64,
        ge=8,
        le=256,
        description="deepest nesting of JSON arrays and objects read from a feed, a report or a "
        "TAXII peer (STIX and MISP need about 10)",
    )
    max_pattern_length: int = Field(
        default=16384, ge=256, le=1_000_000, description="longest STIX pattern, in characters"
    )
    max_pattern_operators: int = Field(
        default=128,
        ge=1,
        le=256,
        description="most operators (AND, OR, FOLLOWEDBY) and qualifiers (WITHIN, REPEATS, "
        "START … STOP) in one STIX pattern",
    )
    max_pattern_nesting: int = Field(
        default=32, ge=1, le=64, description="deepest nesting of ( and [ in one STIX pattern"
    )


class ShareConfig(_Model):
    """The TAXII server's limits per peer (``mamori share serve``, ``/taxii2/``).

    Counted per peer: objects and request-body bytes it posted in the current UTC day, and its
    requests (any route) in a fixed window of ``rate_window_s``. Past a limit the server answers
    429 with ``Retry-After`` and audits the first refusal of each window.
    """

    max_content_length: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="largest request body in bytes (413 past it, checked before it is read)",
    )
    max_objects_per_request: int = Field(
        default=1000, ge=1, description="most STIX objects in one posted envelope"
    )
    quota_objects_per_day: int = Field(
        default=10_000, ge=0, description="objects one peer may post per UTC day"
    )
    quota_bytes_per_day: int = Field(
        default=50 * 1024 * 1024, ge=0, description="request-body bytes one peer may post per day"
    )
    rate_requests: int = Field(
        default=120, ge=1, description="requests one peer may make per rate window"
    )
    rate_window_s: float = Field(default=60.0, gt=0, le=86400)
    refusal_summary_s: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="requests without a valid key, and a peer's refusals past a limit after the "
        "first of its window, are counted and written to the audit log as one refused-summary "
        "per interval (by route, source prefix, peer and limit), not one entry each",
    )


_RELATIVE = re.compile(r"^-\d{1,5}[mhd]$")


class ScheduledJob(_Model):
    """A stage run by a systemd timer (``mamori install-units``) and watched by ``mamori status``."""

    on_calendar: str = Field(
        min_length=1,
        max_length=200,
        description="when the timer fires: a systemd OnCalendar expression (man systemd.time)",
    )
    since: str | None = Field(
        default=None,
        description="window start given to the stage, relative to the run: -15m, -24h, -7d",
    )
    overdue_after_hours: float = Field(
        gt=0,
        description="`mamori status` reports the stage overdue when its last successful run is "
        "older than this",
    )

    @field_validator("on_calendar")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # written into a unit file as is: a newline would add directives of its own
        if any(not c.isprintable() for c in value) or "%" in value:
            raise ValueError("one line of printable text without %, e.g. '*-*-* 03:30:00'")
        return value.strip()

    @field_validator("since")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and not _RELATIVE.match(value):
            raise ValueError("a time relative to the run: -NNm, -NNh or -NNd, e.g. -24h")
        return value


class ScheduleConfig(_Model):
    """When the timers run each batch stage (they are written into the units by
    ``mamori install-units``; rerun it after a change)."""

    detect_c2: ScheduledJob = ScheduledJob(
        on_calendar="*-*-* *:10:00", since="-24h", overdue_after_hours=3
    )
    detect_infected: ScheduledJob = ScheduledJob(
        on_calendar="*-*-* *:00/15:00", since="-1h", overdue_after_hours=1
    )
    notify: ScheduledJob = ScheduledJob(on_calendar="*-*-* *:05/15:00", overdue_after_hours=1)
    purge: ScheduledJob = ScheduledJob(on_calendar="*-*-* 03:30:00", overdue_after_hours=36)
    transparency: ScheduledJob = ScheduledJob(
        on_calendar="*-*-02 06:00:00", overdue_after_hours=24 * 33
    )


class MamoriConfig(BaseSettings):
    """The effective configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MAMORI_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    store: Path = Field(default=Path("mamori-data"), description="store directory")
    engine: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description='what scans the store for governed reads: "duckdb" (embedded, one machine) or '
        '"spark" (Apache Spark, [spark]); grants are DuckDB sandboxes either way',
    )
    spark: SparkConfig = SparkConfig()
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
    schedule: ScheduleConfig = ScheduleConfig()
    audit: AuditConfig = AuditConfig()
    input_limits: InputLimitsConfig = InputLimitsConfig()
    share: ShareConfig = ShareConfig()
    network: NetworkConfig = NetworkConfig()
    mail: MailConfig = MailConfig()

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "reputation_match" in data:
            raise ValueError(
                "[reputation_match] is now [detect.infected] (the same keys); rename the section"
            )
        return data

    @field_validator("measures")
    @classmethod
    def _known_measures(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(value) - set(MEASURE_IDS))
        if unknown:
            raise ValueError(f"unknown measure(s) {unknown}; allowed: M1 … M14")
        return {**dict.fromkeys(MEASURE_IDS, True), **value}

    @model_validator(mode="after")
    def _pools_disjoint(self) -> MamoriConfig:
        names: set[str] = set()
        spans: list[tuple[int, int, int, str, IPNetwork]] = []
        for pool in self.address_plan:
            if pool.name in names:
                raise ValueError(f"address pool name {pool.name!r} is used twice")
            names.add(pool.name)
            spans += [
                (n.version, int(n.network_address), int(n.broadcast_address), pool.name, n)
                for n in pool.prefixes
            ]
        # Sorted by start, prefixes overlap only where one starts before its predecessor ends:
        # a plan of 100,000 prefixes is checked in n log n, not n².
        spans.sort(key=lambda s: (s[0], s[1], s[2]))
        for prev, cur in itertools.pairwise(spans):
            if cur[0] == prev[0] and cur[1] <= prev[2]:
                raise ValueError(
                    f"prefix {cur[4]} of pool {cur[3]!r} overlaps {prev[4]} of pool "
                    f"{prev[3]!r}; pools must be disjoint"
                )
        return self

    @model_validator(mode="after")
    def _audit_outside_store(self) -> MamoriConfig:
        # A key or published copy the store's owner can rewrite proves nothing against that owner.
        store = self.store.expanduser().resolve()

        def inside(path: Path) -> bool:
            p = path.expanduser().resolve()
            return p == store or store in p.parents

        if self.audit.signing_key is not None and inside(self.audit.signing_key):
            raise ValueError(
                f"audit.signing_key {str(self.audit.signing_key)!r} is inside the store "
                f"{str(self.store)!r}; keep the audit key outside the store"
            )
        for path in self.audit.file_sinks():
            if inside(path):
                raise ValueError(
                    f"audit.publish_to file:{path} is inside the store {str(self.store)!r}; "
                    "publish to another mount"
                )
        return self

    def measure_enabled(self, measure: str) -> bool:
        return self.measures.get(measure, False)

    def pools(self, kind: str | None = None) -> list[IPNetwork]:
        return [n for p in self.address_plan if kind in (None, p.kind) for n in p.prefixes]

    def public_dict(self) -> dict[str, Any]:
        """The configuration as plain data, secrets masked, for printing."""
        data = self.model_dump(mode="json")
        conf = data["spark"]["conf"]
        for k in conf:
            if _SECRET_KEY.search(k):
                conf[k] = "***"
        return data

    def engine_plan(self) -> dict[str, str]:
        """What will scan the store, in words (``mamori config check``)."""
        if self.engine == "duckdb":
            return {
                "reads": f"DuckDB in this process, over {self.store}",
                "grants": "DuckDB sandboxes (one per detector run)",
                "writes": f"Parquet files in {self.store}",
            }
        where = self.spark.store_url or str(self.store)
        return {
            "reads": f"Apache Spark, master {self.spark.master}, over {where} "
            "(hour partitions pruned by the window; consent filter on Spark)",
            "grants": "granted rows copied from Spark into DuckDB sandboxes (one per detector run)",
            "writes": f"Parquet files in {self.store} (findings, consent, registry; DuckDB)",
        }

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


# Parts of a pydantic error location that name its schema (a union branch, a validator), not a
# key the operator wrote: they are left out of the key shown.
_SCHEMA_TAG = re.compile(
    r"[\[\](),=]|^(?:function-(?:after|before|plain|wrap)|lax-or-strict|json-or-python|"
    r"is-instance|union|tagged-union|chain|nullable|default|model|literal|str|int|float|bool|"
    r"bytes|list|tuple|dict|set|frozenset|none|enum|url|uuid|date|datetime|time|timedelta|"
    r"decimal|[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*)$"
)
_NETWORK = "expected an IP network in CIDR form, e.g. 192.0.2.0/24 or 2001:db8::/32"
_ADDRESS = "expected an IP address, e.g. 192.0.2.1 or 2001:db8::1"
_INTERFACE = "expected an address with its prefix length, e.g. 192.0.2.1/24"
_PROBLEM = {
    "ip_v4_network": _NETWORK,
    "ip_v6_network": _NETWORK,
    "ip_any_network": _NETWORK,
    "ip_v4_address": _ADDRESS,
    "ip_v6_address": _ADDRESS,
    "ip_any_address": _ADDRESS,
    "ip_v4_interface": _INTERFACE,
    "ip_v6_interface": _INTERFACE,
    "ip_any_interface": _INTERFACE,
    "missing": "required, but not given",
    "extra_forbidden": "not a setting (check its spelling and its [section])",
}


def _key(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """The key an error is about, as the operator wrote it (``address_plan.0.prefixes.0``)."""
    parts: list[str] = []
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            parts.append(str(part))
            node = node[part] if isinstance(node, list | tuple) and part < len(node) else None
        elif isinstance(node, Mapping) and part in node:
            parts.append(part)
            node = node[part]
        elif part == "[key]":
            parts[-1:] = [f"{parts[-1]} (the key)"] if parts else []
        elif not _SCHEMA_TAG.search(part):
            parts.append(part)
            node = None
    return ".".join(parts) or "(top level)"


def _problem(error: Mapping[str, Any]) -> str:
    known = _PROBLEM.get(str(error["type"]))
    if known:
        return known
    msg = str(error["msg"])
    for prefix, now in (("Input should be ", "expected "), ("Value error, ", "")):
        if msg.startswith(prefix):
            return now + msg[len(prefix) :]
    return msg


def _merged(problems: list[str]) -> str:
    """A union's branches as one problem: "expected A or B"."""
    if len(problems) > 1 and all(p.startswith("expected ") for p in problems):
        return "expected " + " or ".join(p.removeprefix("expected ") for p in problems)
    return "; ".join(problems)


def _where(key: str, file: Path | None, data: Mapping[str, Any]) -> str:
    """Where a key's value came from: the environment variable that set it (which wins over the
    file), the file, or else the command line."""
    names = []
    for part in key.split(" ", 1)[0].split("."):
        if part.isdigit():
            break
        names.append(part.upper())
    for n in range(len(names), 0, -1):
        env = "MAMORI_" + "__".join(names[:n])
        if env in os.environ:
            return f"environment {env}"
    if file is not None and key.split(".", 1)[0] in data:
        return str(file)
    return "command line or defaults"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}…"


def _describe(err: ValidationError, file: Path | None, data: Mapping[str, Any]) -> str:
    """One line per problem: where the value came from, the key, the value given and what is
    expected. A union's branches (an IPv4 or an IPv6 network) are merged into one line."""
    merged: dict[str, tuple[Any, list[str]]] = {}
    for e in err.errors():
        key = _key(tuple(e["loc"]), data)
        value = e.get("input") if e["type"] not in ("missing",) else None
        _, wants = merged.setdefault(key, (value, []))
        want = _problem(e)
        if want not in wants:
            wants.append(want)
    lines = []
    for key, (value, wants) in merged.items():
        shown = "" if value is None or isinstance(value, Mapping) else f" = {_shown(value)}"
        hint = ""
        if isinstance(value, str) and value.lstrip().startswith("#"):
            hint = " (a '#' inside quotes is part of the value, not a comment)"
        where = _where(key, file, data)
        lines.append(f"{where}: {key}{shown}: {_merged(wants)}{hint}")
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n  " + "\n  ".join(lines)


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
    read: Path | None = None
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid configuration ({file}): not valid TOML: {exc}") from None
        read = file
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
        raise ConfigError(_describe(exc, read, data)) from None
