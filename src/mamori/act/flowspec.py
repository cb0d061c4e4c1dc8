"""BGP FlowSpec (RFC 8955) rules as ExaBGP 4 API commands.

One rule per destination prefix: FlowSpec matches a prefix, a protocol and lists of ports, and
every router that accepts the rule drops what it matches on all its interfaces unless told
otherwise — so the header says to install it on edge interfaces only (a FlowSpec rule cannot
exempt a source, e.g. the ISP's own resolvers).
"""

from __future__ import annotations

from mamori.act.reflection import ReflectionPlan, basis_text

__all__ = ["flowspec_reflection"]


def flowspec_reflection(plan: ReflectionPlan, action_id: str, *, verb: str = "announce") -> str:
    """``announce flow route { match {…} then { discard; } }`` per dynamic prefix and transport;
    ``verb="withdraw"`` for the lines that take them back."""
    src = plan.match == "source-port"
    kw = "source-port" if src else "destination-port"
    by_transport: dict[str, list[int]] = {}
    for _, p in plan.protocols:
        by_transport.setdefault(p.transport, []).append(p.port)
    head = [
        f"# Mamori standing reflection filter, action {action_id}: ExaBGP 4 API commands.",
        f"# {basis_text(plan)}",
        "# Install on edge interfaces only (Junos: routing-options flow interface-group ... "
        "exclude; IOS-XR: flowspec local-install per interface): a FlowSpec rule cannot "
        "exempt a source"
        + (", and the ISP's resolvers' answers would be dropped inside" if src else "")
        + ".",
    ]
    lines = [*head]
    for transport, ports in sorted(by_transport.items()):
        plist = " ".join(f"={p}" for p in sorted(ports))
        for prefixes, proto in ((plan.v4, "protocol"), (plan.v6, "next-header")):
            six = proto == "next-header"
            for net in prefixes:
                dest = f"{net}/0" if six else net  # ExaBGP's IPv6 form: prefix/offset
                lines.append(
                    f"{verb} flow route {{ match {{ destination {dest}; {proto} {transport}; "
                    f"{kw} [ {plist} ]; }} then {{ discard; }} }}"
                )
    return "\n".join(lines) + "\n"
