"""Mitigation through BGP: FlowSpec (RFC 8955) and RTBH (RFC 7999) routes announced with ExaBGP.

An action of kind ``rtbh`` targets a prefix (``203.0.113.5/32``): announced with the BLACKHOLE
community (65535:666) and ``no-export`` towards ``[network.bgp] rtbh_next_hop``, which the routers
send to a discard interface. An action of kind ``flowspec`` targets a :class:`FlowRule` written as
text (``dst=203.0.113.5/32;proto=udp;sport=53,123;then=discard``), so the row says exactly what
is matched. Both go through the action life cycle (proposed → approved by an operator or a
configured policy → applied = announced → ended | expired = withdrawn); every step is an audited
write.

The back end talks to ExaBGP through the relay ExaBGP runs as its helper
(:mod:`mamori.act.exabgp_relay`): one command per line, answered ``done`` or ``error``. Without
``[network.bgp] api_socket`` it is the dry-run back end: the commands are appended to
``<store>/_state/bgp/dry-run.log`` and nothing is announced (the detail of each step says so).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mamori.act.base import Action, ActionKind
from mamori.config import MamoriConfig
from mamori.config_network import BgpConfig
from mamori.governance import LegalBasis

__all__ = [
    "BgpBackend",
    "BgpError",
    "DryRunTransport",
    "FlowRule",
    "RelayTransport",
    "bgp_action",
    "exabgp_config",
    "render_command",
]

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_TOKEN = re.compile(r"^[a-z-]+=[A-Za-z0-9.:/,_-]+$")


class BgpError(RuntimeError):
    """ExaBGP refused a command or could not be reached."""


class FlowRule(BaseModel):
    """What a FlowSpec rule matches and does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    destination: Net
    source: Net | None = None
    protocol: Literal["udp", "tcp", "icmp"] | None = None
    source_ports: tuple[int, ...] = ()
    destination_ports: tuple[int, ...] = ()
    then: str = Field(default="discard", pattern=r"^(discard|rate-limit:[0-9]+)$")

    @model_validator(mode="after")
    def _ports_need_a_transport(self) -> FlowRule:
        if (self.source_ports or self.destination_ports) and self.protocol not in ("udp", "tcp"):
            raise ValueError("ports need protocol udp or tcp")
        for p in (*self.source_ports, *self.destination_ports):
            if not 0 <= p < 65536:
                raise ValueError(f"port {p} out of range")
        return self

    def target(self) -> str:
        parts = [f"dst={self.destination}"]
        if self.source is not None:
            parts.append(f"src={self.source}")
        if self.protocol:
            parts.append(f"proto={self.protocol}")
        if self.source_ports:
            parts.append("sport=" + ",".join(str(p) for p in sorted(self.source_ports)))
        if self.destination_ports:
            parts.append("dport=" + ",".join(str(p) for p in sorted(self.destination_ports)))
        parts.append(f"then={self.then}")
        return ";".join(parts)

    @classmethod
    def parse(cls, text: str) -> FlowRule:
        """The rule a target names (the inverse of :meth:`target`)."""
        fields: dict[str, object] = {}
        names = {"dst": "destination", "src": "source", "proto": "protocol", "then": "then"}
        for token in text.split(";"):
            if not _TOKEN.match(token):
                raise ValueError(f"flowspec target {text!r}: bad part {token!r}")
            key, value = token.split("=", 1)
            if key in ("sport", "dport"):
                ports = tuple(int(p) for p in value.split(","))
                fields["source_ports" if key == "sport" else "destination_ports"] = ports
            elif key in names:
                fields[names[key]] = value
            else:
                raise ValueError(f"flowspec target {text!r}: unknown key {key!r}")
        return cls.model_validate(fields)

    def exabgp(self, verb: str) -> str:
        six = self.destination.version == 6
        match = [f"destination {self.destination}{'/0' if six else ''}"]
        if self.source is not None:
            match.append(f"source {self.source}{'/0' if six else ''}")
        if self.protocol:
            match.append(f"{'next-header' if six else 'protocol'} {self.protocol}")
        if self.source_ports:
            match.append("source-port [ " + " ".join(f"={p}" for p in self.source_ports) + " ]")
        if self.destination_ports:
            ports = " ".join(f"={p}" for p in self.destination_ports)
            match.append(f"destination-port [ {ports} ]")
        then = "discard" if self.then == "discard" else f"rate-limit {self.then.split(':')[1]}"
        return f"{verb} flow route {{ match {{ {'; '.join(match)}; }} then {{ {then}; }} }}"


def _rtbh_prefix(target: str, bgp: BgpConfig) -> Net:
    net = ipaddress.ip_network(target, strict=True)
    if net.num_addresses > bgp.rtbh_max_addresses:
        raise ValueError(
            f"RTBH of {net} would blackhole {net.num_addresses} addresses; at most "
            f"{bgp.rtbh_max_addresses} ([network.bgp] rtbh_max_addresses)"
        )
    return net


def render_command(action: Action, bgp: BgpConfig, verb: str) -> str:
    """The ExaBGP API command that announces (``verb="announce"``) or withdraws an action."""
    if action.kind is ActionKind.RTBH:
        net = _rtbh_prefix(action.target, bgp)
        communities = " ".join(bgp.rtbh_communities)
        return f"{verb} route {net} next-hop {bgp.rtbh_next_hop} community [ {communities} ]"
    if action.kind is ActionKind.FLOWSPEC:
        return FlowRule.parse(action.target).exabgp(verb)
    raise ValueError(f"the BGP back end does not act on {action.kind} actions")


Transport = Callable[[str], str]


class RelayTransport:
    """Sends a command to ExaBGP through its relay's socket and returns the answer."""

    def __init__(self, path: Path, timeout_s: float = 10.0) -> None:
        self.path, self.timeout_s = path, timeout_s

    def __call__(self, command: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout_s)
                s.connect(str(self.path))
                s.sendall(command.encode() + b"\n")
                answer = b""
                while not answer.endswith(b"\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
        except OSError as exc:
            raise BgpError(f"ExaBGP relay at {self.path}: {exc}") from None
        return answer.decode().strip()


class DryRunTransport:
    """Writes each command to a log instead of announcing it."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def __call__(self, command: str) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"{datetime.now(UTC).isoformat()} {command}\n")
        return "done"


class BgpBackend:
    """Puts ``flowspec`` or ``rtbh`` actions into effect through ExaBGP (or the dry run)."""

    def __init__(
        self, config: MamoriConfig, kind: ActionKind, *, transport: Transport | None = None
    ) -> None:
        if kind not in (ActionKind.FLOWSPEC, ActionKind.RTBH):
            raise ValueError(f"no BGP back end for {kind}")
        self.kind = kind
        self.bgp = config.network.bgp
        self.dry_run = transport is None and self.bgp.api_socket is None
        if transport is not None:
            self.transport: Transport = transport
        elif self.bgp.api_socket is not None:
            self.transport = RelayTransport(self.bgp.api_socket, self.bgp.timeout_s)
        else:
            self.transport = DryRunTransport(config.store / "_state" / "bgp" / "dry-run.log")

    def render(self, actions: Sequence[Action]) -> list[str]:
        return [render_command(a, self.bgp, "announce") for a in actions]

    def _send(self, commands: Sequence[str]) -> None:
        for c in commands:
            answer = self.transport(c)
            if answer != "done":
                raise BgpError(f"ExaBGP answered {answer!r} to: {c}")

    def apply(self, actions: Sequence[Action]) -> None:
        self._send(self.render(actions))

    def withdraw(self, actions: Sequence[Action]) -> None:
        self._send([render_command(a, self.bgp, "withdraw") for a in actions])


def bgp_action(
    kind: ActionKind,
    target: str,
    *,
    measure: str = "M13",
    basis: LegalBasis = LegalBasis.SELF_DEFENCE,
    justification: str | None = None,
    finding_id: str | None = None,
    now: datetime | None = None,
    expires_in: timedelta,
) -> Action:
    """A new FlowSpec or RTBH action (validated: the target parses, the prefix is small)."""
    at = now or datetime.now(UTC)
    if kind is ActionKind.FLOWSPEC:
        target = FlowRule.parse(target).target()  # canonical form
    elif kind is ActionKind.RTBH:
        target = str(ipaddress.ip_network(target, strict=True))
    else:
        raise ValueError(f"not a BGP action kind: {kind}")
    stamp = f"{at.astimezone(UTC):%Y%m%dT%H%M%S%f}"
    return Action(
        action_id=f"{kind.value}-{stamp}-{hashlib.sha256(target.encode()).hexdigest()[:8]}",
        kind=kind,
        target=target,
        measure=measure,
        legal_basis=basis,
        justification=justification,
        created=at,
        expires=at + expires_in,
        finding_id=finding_id,
    )


def exabgp_config(
    *,
    socket_path: Path,
    python: str,
    local_address: str,
    local_as: int,
    peer_address: str,
    peer_as: int,
    router_id: str | None = None,
) -> str:
    """An ``exabgp.conf`` that runs the relay and speaks FlowSpec and unicast (RTBH) to a peer."""
    return (
        "process mamori {\n"
        f"    run {python} -m mamori.act.exabgp_relay {socket_path};\n"
        "    encoder text;\n}\n"
        f"neighbor {peer_address} {{\n"
        f"    router-id {router_id or local_address};\n"
        f"    local-address {local_address};\n"
        f"    local-as {local_as};\n"
        f"    peer-as {peer_as};\n"
        "    family {\n        ipv4 unicast;\n        ipv4 flow;\n"
        "        ipv6 unicast;\n        ipv6 flow;\n    }\n"
        "    api {\n        processes [ mamori ];\n    }\n}\n"
    )
