"""``[network]``: what Mamori needs to know to protect the ISP's own network (M7 IP blocking, M10
reflection filters, M13 spoofing): the ISP's resolvers, the protocols reflection filters cover
and why, and how to reach the Linux router's nftables.

Each reflection protocol can be switched off or changed in ``mamori.toml`` without restating the
others::

    [network.reflection.protocols.ntp]
    enabled = false          # our subscribers' NTP clients use source port 123

    [network.reflection.protocols.quic-amp]
    port = 4433
    reason = "lab: a service of ours that answers larger than it is asked"
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_REFLECTION_PROTOCOLS",
    "BgpConfig",
    "CustomerInterface",
    "NetworkConfig",
    "NftConfig",
    "ReflectionConfig",
    "ReflectionProtocol",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReflectionProtocol(_Model):
    """A UDP service that answers a small spoofed request with a large reply."""

    enabled: bool = True
    port: int = Field(gt=0, lt=65536)
    transport: Literal["udp", "tcp"] = "udp"
    reason: str = Field(
        min_length=1, max_length=100, description="why it is filtered (shown in every rendering)"
    )


# Amplification factors: US-CERT TA14-017A and the vendors' advisories behind it.
DEFAULT_REFLECTION_PROTOCOLS: Mapping[str, Mapping[str, Any]] = {
    "dns": {"port": 53, "reason": "DNS: open resolvers answer ANY/DNSSEC queries 28-54x larger"},
    "ntp": {"port": 123, "reason": "NTP: monlist answers up to 556x larger"},
    "snmp": {"port": 161, "reason": "SNMP: GetBulk on exposed agents, up to 6x"},
    "ssdp": {"port": 1900, "reason": "SSDP: UPnP devices answer M-SEARCH up to 30x larger"},
    "cldap": {"port": 389, "reason": "CLDAP: rootDSE queries answered 56-70x larger"},
    "memcached": {"port": 11211, "reason": "memcached: UDP get/stats, up to 51,000x"},
    "chargen": {"port": 19, "reason": "CharGEN: any datagram draws a reply up to 358x larger"},
    "ws-discovery": {"port": 3702, "reason": "WS-Discovery: cameras and printers, up to 500x"},
    "coap": {"port": 5683, "reason": "CoAP: IoT devices answer GET .well-known/core 10-50x"},
    "arms": {"port": 3283, "reason": "ARMS: Apple Remote Management answers 35x larger"},
}


class ReflectionConfig(_Model):
    """Standing reflection filters (M10, ``mamori act filters --kind reflection``)."""

    match: Literal["destination-port", "source-port"] = Field(
        default="destination-port",
        description="destination-port (seeds/001): requests from outside to a reflection port of "
        "a dynamic address are dropped, so subscribers' devices cannot be used as reflectors; "
        "only the destination address and port are examined. source-port: replies from a "
        "reflection port to a dynamic address are dropped (the ISP's resolvers exempt) — this "
        "also drops answers from outside resolvers and NTP servers and examines the source "
        "port, which seeds/001 does not cover",
    )
    protocols: dict[str, ReflectionProtocol] = Field(
        default_factory=lambda: {
            k: ReflectionProtocol(**v) for k, v in DEFAULT_REFLECTION_PROTOCOLS.items()
        },
        description="name -> port, transport, enabled, reason; entries overlay the defaults",
    )
    expiry_days: float = Field(
        default=30.0,
        gt=0,
        le=366,
        description="a standing filter is an action like any other and ends: re-apply it "
        "(e.g. daily, after address-plan changes) before this",
    )

    @field_validator("protocols", mode="before")
    @classmethod
    def _overlay_defaults(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = {k: dict(v) for k, v in DEFAULT_REFLECTION_PROTOCOLS.items()}
        for name, entry in value.items():
            if isinstance(entry, ReflectionProtocol):
                out[name] = entry
            elif isinstance(entry, Mapping) and name in DEFAULT_REFLECTION_PROTOCOLS:
                out[name] = {**DEFAULT_REFLECTION_PROTOCOLS[name], **entry}
            else:
                out[name] = entry
        return out

    @field_validator("protocols")
    @classmethod
    def _names(cls, value: dict[str, ReflectionProtocol]) -> dict[str, ReflectionProtocol]:
        for name in value:
            # the name becomes an nft comment, a Junos term and an IOS-XR remark
            if not name or len(name) > 32 or not name.replace("-", "").isalnum():
                raise ValueError(f"protocol name {name!r}: letters, digits and '-', at most 32")
        return value

    def enabled(self) -> list[tuple[str, ReflectionProtocol]]:
        """The protocols switched on, by port (the order every rendering lists them in)."""
        on = [(n, p) for n, p in self.protocols.items() if p.enabled]
        return sorted(on, key=lambda np_: (np_[1].transport, np_[1].port, np_[0]))


class NftConfig(_Model):
    """The Linux router (a BNG, a border box) whose nftables Mamori configures."""

    command: tuple[str, ...] = Field(
        default=("nft",),
        description="how to run nft there, e.g. ['ip', 'netns', 'exec', 'bng', 'nft'] or "
        "['ssh', 'bng1', 'nft']",
    )
    hook: Literal["forward", "prerouting", "input"] = Field(
        default="forward", description="netfilter hook the chains attach to (forward: a router)"
    )
    priority: int = Field(default=-10, ge=-400, le=400)
    upstream_interfaces: tuple[str, ...] = Field(
        default=(),
        description="if set, reflection rules match only traffic arriving on these interfaces "
        "(the ISP's edge, seeds/001: at the network's entrance)",
    )
    table_prefix: str = Field(default="mamori", pattern=r"^[a-z][a-z0-9_]{0,40}$")


class CustomerInterface(_Model):
    """A customer-facing interface (BCP 38): traffic entering on it must come from the
    addresses behind it."""

    exporter: ipaddress.IPv4Address | ipaddress.IPv6Address = Field(
        description="the router, as its flow records name it"
    )
    ifindex: int = Field(ge=0, lt=2**32, description="SNMP index (the flows' input_if)")
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_./:-]+$",
        description="the interface's name on the router (ge-0/0/1.100, Bundle-Ether1.100, "
        "ppp0), used in the uRPF/ACL renderings",
    )
    pools: tuple[str, ...] = Field(default=(), description="address-plan pools behind it")
    prefixes: tuple[IPNetwork, ...] = Field(
        default=(), description="other addresses behind it (a customer's own space, link nets)"
    )


class BgpConfig(_Model):
    """FlowSpec (RFC 8955) and RTBH (RFC 7999) announcements through ExaBGP."""

    api_socket: Path | None = Field(
        default=None,
        description="the unix socket of the relay ExaBGP runs (`mamori act bgp exabgp-config`); "
        "unset: the dry-run back end, which only writes the commands to "
        "<store>/_state/bgp/dry-run.log",
    )
    rtbh_next_hop: ipaddress.IPv4Address = Field(
        default=ipaddress.IPv4Address("192.0.2.1"),
        description="next hop of RTBH routes; the routers route it to a discard interface",
    )
    rtbh_communities: tuple[str, ...] = Field(
        default=("65535:666", "no-export"), description="BLACKHOLE (RFC 7999), kept in the AS"
    )
    rtbh_max_addresses: int = Field(
        default=1, ge=1, le=256, description="largest RTBH prefix, in addresses (1: hosts only)"
    )
    default_expiry_minutes: float = Field(default=60.0, gt=0, le=7 * 24 * 60)
    auto_approve: tuple[str, ...] = Field(
        default=(),
        description="attack types whose mitigations a policy approves without an operator "
        "(e.g. udp-amplification); approved_by then names the policy",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300)


class NetworkConfig(_Model):
    """``[network]``: the ISP's own network, for the measures that protect it."""

    resolvers: tuple[IPNetwork, ...] = Field(
        default=(),
        description="the ISP's own DNS resolvers: never filtered as a destination, and their "
        "answers pass source-port reflection filters",
    )
    reflection: ReflectionConfig = ReflectionConfig()
    nft: NftConfig = NftConfig()
    customer_interfaces: tuple[CustomerInterface, ...] = Field(
        default=(),
        description="customer-facing interfaces and the addresses behind each (spoofing, BCP 38)",
    )
    bgp: BgpConfig = BgpConfig()
    c2_block_expiry_days: float = Field(
        default=7.0,
        gt=0,
        le=365,
        description="M7 IP-level C&C blocking: a list version not renewed by `act c2-block` "
        "within this long expires and its table is withdrawn (every action ends)",
    )
