"""The nftables back end: actions of kind ``nftables`` on a Linux router (a BNG, a border box).

Each purpose has a table of its own (``inet <prefix>_reflection`` for M10's standing filter,
``inet <prefix>_c2`` for M7's C&C blocking), so applying one never touches another, nor the
operator's own tables. A table is replaced in one transaction (``table T`` / ``delete table T`` /
``table T {…}`` in one ``nft -f``): the router never runs without the filter while it is
replaced. The table's comment names the action that put it there; a withdrawal removes the
table only while that is still so (a newer action's table is left alone).
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from mamori.act.base import Action, ActionKind
from mamori.act.reflection import ReflectionPlan, basis_text, reflection_plan
from mamori.config import MamoriConfig
from mamori.config_network import NftConfig

__all__ = [
    "TABLES",
    "NftBackend",
    "NftError",
    "NftRuleset",
    "elements",
    "render_reflection",
    "run_nft",
    "table_for",
    "table_owner",
]

log = logging.getLogger(__name__)
_COMMENT = re.compile(r'^\s*comment "mamori ([^"]+)"', re.MULTILINE)


# target prefix of an action -> the table (after [network.nft] table_prefix) that puts it in force
TABLES = {"reflection:": "reflection", "c2-ip:": "c2"}


def table_for(nft: NftConfig, target: str) -> str | None:
    for prefix, suffix in TABLES.items():
        if target.startswith(prefix):
            return f"{nft.table_prefix}_{suffix}"
    return None


class NftError(RuntimeError):
    """nft refused a ruleset or could not be run; the message has its output."""


class NftRuleset(BaseModel):
    """What applying one action loads: a whole table."""

    model_config = ConfigDict(frozen=True)

    action_id: str
    family: str
    table: str
    text: str


def _q(text: str) -> str:
    """An nft string: no quotes or backslashes inside (a comment must not end early)."""
    return '"' + text.replace('"', "'").replace("\\", "/")[:127] + '"'


def elements(values: Iterable[str], indent: str = "\t\t") -> str:
    """``elements = { … }`` for a set, one element per line; empty when there are none (nft
    refuses an empty element list)."""
    vals = list(values)
    if not vals:
        return ""
    sep = f",\n{indent}\t"
    return f"{indent}elements = {{\n{indent}\t{sep.join(vals)}\n{indent}}}\n"


def _set(name: str, typ: str, values: Sequence[str], *, interval: bool = True) -> str:
    flags = "\t\tflags interval\n\t\tauto-merge\n" if interval else ""
    return f"\tset {name} {{\n\t\ttype {typ}\n{flags}{elements(values)}\t}}\n"


def render_reflection(plan: ReflectionPlan, nft: NftConfig, action_id: str) -> NftRuleset:
    """The standing reflection filter as one nft table."""
    table = f"{nft.table_prefix}_reflection"
    srcmode = plan.match == "source-port"
    out = [
        f"# Mamori standing reflection filter, action {action_id}\n",
        f"# {basis_text(plan)}\n",
        f"table inet {table}\ndelete table inet {table}\n",
        f"table inet {table} {{\n\tcomment {_q('mamori ' + action_id)}\n",
        _set("dynamic4", "ipv4_addr", plan.v4),
        _set("dynamic6", "ipv6_addr", plan.v6),
    ]
    if srcmode:
        out.append(_set("resolvers4", "ipv4_addr", plan.resolvers4))
        out.append(_set("resolvers6", "ipv6_addr", plan.resolvers6))
    out.append(
        f"\tchain filter {{\n\t\ttype filter hook {nft.hook} priority {nft.priority}; "
        "policy accept;\n"
    )
    iif = ""
    if nft.upstream_interfaces:
        iif = "iifname { " + ", ".join(_q(i) for i in nft.upstream_interfaces) + " } "
    port = "sport" if srcmode else "dport"
    for name, p in plan.protocols:
        comment = _q(f"{name}: {p.reason}")
        for fam, v in (("ip", "4"), ("ip6", "6")):
            src = f"{fam} saddr != @resolvers{v} " if srcmode else ""
            out.append(
                f"\t\t{iif}{src}{fam} daddr @dynamic{v} {p.transport} {port} {p.port} "
                f"counter drop comment {comment}\n"
            )
    out.append("\t}\n}\n")
    return NftRuleset(action_id=action_id, family="inet", table=table, text="".join(out))


def run_nft(command: Sequence[str], args: Sequence[str], stdin: str | None = None) -> str:
    try:
        r = subprocess.run(
            [*command, *args], input=stdin, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftError(f"{' '.join(command)}: {exc}") from None
    if r.returncode != 0:
        raise NftError(f"{' '.join([*command, *args])} failed: {r.stderr.strip()[:2000]}")
    return r.stdout


def table_owner(command: Sequence[str], family: str, table: str) -> str | None:
    """The action whose table is in force (its comment), or None when there is no such table."""
    try:
        text = run_nft(command, ["list", "table", family, table])
    except NftError as exc:
        if "No such file or directory" in str(exc):
            return None
        raise
    m = _COMMENT.search(text)
    return m.group(1) if m else None


class NftBackend:
    """Puts ``nftables`` actions into effect with ``[network.nft] command``."""

    kind = ActionKind.NFTABLES

    def __init__(self, config: MamoriConfig, *, command: Sequence[str] | None = None) -> None:
        self.config = config
        self.nft = config.network.nft
        self.command = tuple(command or self.nft.command)

    def handles(self, action: Action) -> bool:
        """Whether this back end puts ``action`` in force (today: the standing reflection
        filters); other nftables actions, such as a single C&C block proposed in the console, are
        recorded only and carried out by the operator."""
        return table_for(self.nft, action.target) is not None

    def render(self, actions: Sequence[Action]) -> list[NftRuleset]:
        out = []
        plan: ReflectionPlan | None = None
        for a in actions:
            if not a.target.startswith("reflection:"):
                raise ValueError(f"nftables back end: no rendering for target {a.target!r}")
            plan = plan or reflection_plan(self.config)
            out.append(render_reflection(plan, self.nft, a.action_id))
        return out

    def apply(self, actions: Sequence[Action]) -> None:
        for r in self.render(actions):
            run_nft(self.command, ["-f", "-"], r.text)

    def withdraw(self, actions: Sequence[Action]) -> None:
        for a in actions:
            table = table_for(self.nft, a.target)
            if table is None:
                # not one this back end applies (a row from before it existed): nothing of it
                # is in force here to take away
                log.warning("nftables: %s (%s) was not applied by Mamori", a.action_id, a.target)
                continue
            if table_owner(self.command, "inet", table) == a.action_id:
                run_nft(self.command, ["delete", "table", "inet", table])
