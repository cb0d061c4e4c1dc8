"""Ingress filtering (BCP 38) for the customer-facing interfaces ``[network.customer_interfaces]``
names: strict uRPF (the route back to the source must leave by the interface the packet came in
on) and an ACL of the addresses behind each interface, for nftables, Junos and IOS-XR.

Both, because each misses what the other catches: uRPF follows the routing table (a customer
announcing a new prefix needs no change here) but lets through a source routed to the same
interface by a broader route; the ACL is exact but must follow the address plan — which is why it
is rendered from it, like the spoofing findings (``detect spoofing``) are computed from it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mamori.act.nft import elements
from mamori.act.routers import junos_comment, wrap
from mamori.config import MamoriConfig
from mamori.config_network import CustomerInterface
from mamori.detect.spoofing import Net, allowed_prefixes

__all__ = ["iosxr_antispoof", "junos_antispoof", "nft_antispoof"]

HEAD = (
    "BCP 38 ingress filtering of customer-facing interfaces (M13 justified act: drop spoofed "
    "packets): strict uRPF and an ACL of the addresses behind each interface, from the address "
    "plan."
)


# a DHCP client's source before it has an address (a Linux BNG's subscriber interfaces)
_DHCP_DISCOVER = "0.0.0.0"  # noqa: S104 - a source address, not a bind


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def _split(nets: Sequence[Net]) -> tuple[list[str], list[str]]:
    return [str(n) for n in nets if n.version == 4], [str(n) for n in nets if n.version == 6]


def _interfaces(config: MamoriConfig) -> list[tuple[CustomerInterface, list[str], list[str]]]:
    ifaces = config.network.customer_interfaces
    if not ifaces:
        raise ValueError("no [[network.customer_interfaces]]: nothing to filter")
    return [(i, *_split(allowed_prefixes(config, i))) for i in ifaces]


def nft_antispoof(config: MamoriConfig, action_id: str) -> str:
    """One table: per interface, strict uRPF (``fib``) and its allowed sources; a Linux BNG's
    subscriber interfaces also let DHCP's 0.0.0.0 and IPv6 link-local sources through."""
    nft = config.network.nft
    table = f"{nft.table_prefix}_antispoof"
    out = [
        f"# Mamori anti-spoofing, action {action_id}\n# {HEAD}\n",
        f"table inet {table}\ndelete table inet {table}\n",
        f'table inet {table} {{\n\tcomment "mamori {action_id}"\n',
    ]
    rules = []
    for k, (iface, v4, v6) in enumerate(_interfaces(config)):
        out.append(
            f"\tset allowed{k}_4 {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n"
            f"{elements([_DHCP_DISCOVER, *v4])}\t}}\n"
            f"\tset allowed{k}_6 {{\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\tauto-merge\n"
            f"{elements(['::', 'fe80::/10', *v6])}\t}}\n"
        )
        iif = f'iifname "{iface.name}"'
        rules += [
            f'\t\t{iif} ip saddr != @allowed{k}_4 counter drop comment "acl {iface.name}"\n',
            f'\t\t{iif} ip6 saddr != @allowed{k}_6 counter drop comment "acl {iface.name}"\n',
            f"\t\t{iif} ip saddr != 0.0.0.0 fib saddr . iif oif missing counter drop "
            f'comment "urpf {iface.name}"\n',
            f"\t\t{iif} ip6 saddr != fe80::/10 fib saddr . iif oif missing counter drop "
            f'comment "urpf {iface.name}"\n',
        ]
    out.append("\tchain ingress {\n\t\ttype filter hook prerouting priority -150; policy accept;\n")
    out += rules
    out.append("\t}\n}\n")
    return "".join(out)


def _junos_if(name: str) -> tuple[str, str]:
    ifd, _, unit = name.partition(".")
    return ifd, unit or "0"


def junos_antispoof(config: MamoriConfig, action_id: str) -> str:
    prefix = config.network.nft.table_prefix
    ifaces = _interfaces(config)
    out = [junos_comment([f"Mamori anti-spoofing, action {action_id}.", *wrap(HEAD)])]
    out.append("policy-options {\n")
    for iface, v4, v6 in ifaces:
        for v, nets in (("v4", v4), ("v6", v6)):
            if nets:
                body = "".join(f"        {n};\n" for n in nets)
                out.append(
                    f"    replace:\n    prefix-list {prefix}-antispoof-{_slug(iface.name)}-{v} "
                    f"{{\n{body}    }}\n"
                )
    out.append("}\nfirewall {\n")
    for fam, v, idx in (("inet", "v4", 1), ("inet6", "v6", 2)):
        blocks = []
        for iface, v4, v6 in ifaces:
            s = _slug(iface.name)
            if not (v4 if idx == 1 else v6):
                continue
            allowed = (
                "                from {\n                    source-prefix-list {\n"
                f"                        {prefix}-antispoof-{s}-{v};\n"
                "                    }\n                }\n"
            )
            blocks.append(
                f"        replace:\n        filter {prefix}-antispoof-{s}-{v} {{\n"
                f"            term allowed {{\n{allowed}"
                "                then accept;\n            }\n"
                "            term spoofed {\n                then {\n"
                f"                    count {prefix}-spoofed-{s}-{v};\n"
                "                    discard;\n                }\n            }\n        }\n"
            )
        if blocks:
            out.append(f"    family {fam} {{\n{''.join(blocks)}    }}\n")
    out.append("}\ninterfaces {\n")
    for iface, v4, v6 in ifaces:
        ifd, unit = _junos_if(iface.name)
        s = _slug(iface.name)
        fams = []
        for fam, v, nets in (("inet", "v4", v4), ("inet6", "v6", v6)):
            if nets:
                fams.append(
                    f"            family {fam} {{\n                rpf-check;\n"
                    f"                filter {{\n                    input "
                    f"{prefix}-antispoof-{s}-{v};\n                }}\n            }}\n"
                )
        out.append(f"    {ifd} {{\n        unit {unit} {{\n{''.join(fams)}        }}\n    }}\n")
    out.append("}\n")
    return "".join(out)


def iosxr_antispoof(config: MamoriConfig, action_id: str) -> str:
    prefix = config.network.nft.table_prefix
    ifaces = _interfaces(config)
    out = [f"! Mamori anti-spoofing, action {action_id}.\n"]
    out += [f"! {line}\n" for line in wrap(HEAD)]
    for iface, v4, v6 in ifaces:
        s = _slug(iface.name)
        for fam, v, nets in (("ipv4", "v4", v4), ("ipv6", "v6", v6)):
            if not nets:
                continue
            group = f"{prefix}-antispoof-{s}-{v}"
            out.append(
                f"no object-group network {fam} {group}\nobject-group network {fam} {group}\n"
            )
            out.append("".join(f" {n}\n" for n in nets) + "!\n")
            out.append(
                f"no {fam} access-list {group}\n{fam} access-list {group}\n"
                f" 10 remark sources behind {iface.name}\n"
                f" 20 permit {fam} net-group {group} any\n"
                f" 30 deny {fam} any any\n!\n"
            )
        out.append(f"interface {iface.name}\n")
        for fam, v, nets in (("ipv4", "v4", v4), ("ipv6", "v6", v6)):
            if nets:
                out.append(
                    f" {fam} verify unicast source reachable-via rx\n"
                    f" {fam} access-group {prefix}-antispoof-{s}-{v} ingress\n"
                )
        out.append("!\n")
    return "".join(out)
