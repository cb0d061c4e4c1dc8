"""Filters as Junos and IOS-XR configuration text, for the routers Mamori does not drive itself.

The operator loads the text (Junos ``load replace``; IOS-XR ``load`` + ``commit replace`` of the
named objects, or by their configuration tooling) and applies the filter on the edge interfaces
the header names. Each object is replaced whole, so re-rendering after an address-plan change
leaves nothing of the old plan behind. The header carries the action, the legal basis and the
reason of every term, so whoever reads the router's configuration can trace it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mamori.act.reflection import ReflectionPlan, basis_text

__all__ = ["iosxr_reflection", "junos_comment", "junos_reflection", "wrap"]

_STEP = 10


def wrap(text: str, width: int = 96) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    if cur:
        lines.append(cur)
    return lines


def junos_comment(lines: Iterable[str]) -> str:
    body = "".join(f" * {line.replace('*/', '* /')}\n" for line in lines)
    return f"/*\n{body} */\n"


def _junos_prefix_list(name: str, prefixes: Sequence[str]) -> str:
    body = "".join(f"        {p};\n" for p in prefixes)
    return f"    replace:\n    prefix-list {name} {{\n{body}    }}\n"


def junos_reflection(plan: ReflectionPlan, action_id: str, prefix: str = "mamori") -> str:
    """``policy-options`` prefix lists and one ``firewall`` filter per address family."""
    src = plan.match == "source-port"
    port_kw = "source-port" if src else "destination-port"
    families = [
        ("inet", "v4", plan.v4, plan.resolvers4, "protocol"),
        ("inet6", "v6", plan.v6, plan.resolvers6, "next-header"),
    ]
    families = [f for f in families if f[2]]
    head = [f"Mamori standing reflection filter, action {action_id}.", *wrap(basis_text(plan))]
    head += ["Apply inbound on the edge (transit, peering) interfaces, e.g.:"]
    head += [
        f"  set interfaces IF unit 0 family {fam} filter input {prefix}-reflection-{v}"
        for fam, v, *_ in families
    ]
    out = [junos_comment(head), "policy-options {\n"]
    for _, v, prefixes, resolvers, _kw in families:
        out.append(_junos_prefix_list(f"{prefix}-dynamic-{v}", prefixes))
        if src and resolvers:
            out.append(_junos_prefix_list(f"{prefix}-resolvers-{v}", resolvers))
    out.append("}\nfirewall {\n")
    for fam, v, _, resolvers, proto_kw in families:
        out.append(
            f"    family {fam} {{\n        replace:\n        filter {prefix}-reflection-{v} {{\n"
        )
        for name, p in plan.protocols:
            exempt = ""
            if src and resolvers:
                exempt = (
                    "                    source-prefix-list {\n"
                    f"                        {prefix}-resolvers-{v} except;\n"
                    "                    }\n"
                )
            out.append(
                f"            /* {p.reason.replace('*/', '* /')} */\n"
                f"            term {name} {{\n"
                "                from {\n"
                "                    destination-prefix-list {\n"
                f"                        {prefix}-dynamic-{v};\n"
                "                    }\n"
                f"{exempt}"
                f"                    {proto_kw} {p.transport};\n"
                f"                    {port_kw} {p.port};\n"
                "                }\n"
                "                then {\n"
                f"                    count {prefix}-reflection-{name}-{v};\n"
                "                    discard;\n"
                "                }\n"
                "            }\n"
            )
        # a Junos filter discards what no term accepts: everything else passes
        out.append(
            "            term pass {\n                then accept;\n            }\n"
            "        }\n    }\n"
        )
    out.append("}\n")
    return "".join(out)


def iosxr_reflection(plan: ReflectionPlan, action_id: str, prefix: str = "mamori") -> str:
    """Network object groups and one ACL per address family (IOS-XR syntax)."""
    src = plan.match == "source-port"
    families = [
        ("ipv4", "v4", plan.v4, plan.resolvers4),
        ("ipv6", "v6", plan.v6, plan.resolvers6),
    ]
    families = [f for f in families if f[2]]
    head = [f"Mamori standing reflection filter, action {action_id}.", *wrap(basis_text(plan))]
    head += ["Apply inbound on the edge (transit, peering) interfaces, e.g.:"]
    head += [
        f"  interface IF {fam} access-group {prefix}-reflection-{v} ingress"
        for fam, v, *_ in families
    ]
    out = ["".join(f"! {line}\n" for line in head)]
    for fam, v, prefixes, resolvers in families:
        groups = [(f"{prefix}-dynamic-{v}", prefixes)]
        if src and resolvers:
            groups.append((f"{prefix}-resolvers-{v}", resolvers))
        for name, nets in groups:
            out.append(f"no object-group network {fam} {name}\nobject-group network {fam} {name}\n")
            out.append("".join(f" {n}\n" for n in nets))
            out.append("!\n")
        acl = f"{prefix}-reflection-{v}"
        out.append(f"no {fam} access-list {acl}\n{fam} access-list {acl}\n")
        seq = 0
        dyn = f"net-group {prefix}-dynamic-{v}"
        for name, p in plan.protocols:
            seq += _STEP
            out.append(f" {seq} remark {name}: {p.reason}\n")
            if src:
                if resolvers:
                    seq += _STEP
                    res = f"net-group {prefix}-resolvers-{v}"
                    out.append(f" {seq} permit {p.transport} {res} eq {p.port} {dyn}\n")
                seq += _STEP
                out.append(f" {seq} deny {p.transport} any eq {p.port} {dyn}\n")
            else:
                seq += _STEP
                out.append(f" {seq} deny {p.transport} any {dyn} eq {p.port}\n")
        seq += _STEP
        out.append(f" {seq} permit {fam} any any\n!\n")
    return "".join(out)
