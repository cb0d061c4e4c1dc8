"""What every ``mamori`` command shares: the consoles, the global --store/--config options and
the state they open, the "not built yet" placeholder (exit status 69) and error exits."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from mamori.config import ConfigError, MamoriConfig, load_config
from mamori.governance import Governance
from mamori.governance.audit_keys import AuditKeyError

err = Console(stderr=True, soft_wrap=True)
out = Console()

EX_UNAVAILABLE = 69


def _hoist_global_options(argv: list[str]) -> list[str]:
    """Move --store/--config given after the sub-command to the front, where typer reads them."""
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in ("--store", "--config") and i + 1 < len(argv):
            hoisted += [tok, argv[i + 1]]
            i += 2
            continue
        if tok.startswith(("--store=", "--config=")):
            hoisted.append(tok)
        else:
            rest.append(tok)
        i += 1
    return hoisted + rest


class RootGroup(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _hoist_global_options(args))


@dataclass
class State:
    store: Path | None = None
    config_file: Path | None = None
    _config: MamoriConfig | None = None
    _gov: Governance | None = field(default=None, repr=False)

    def reset(self, store: Path | None, config_file: Path | None) -> None:
        """Start an invocation afresh (the command modules hold this one object, so it is
        reset in place rather than replaced)."""
        self.store, self.config_file = store, config_file
        self._config, self._gov = None, None

    def config(self) -> MamoriConfig:
        if self._config is None:
            try:
                self._config = load_config(self.config_file, {"store": self.store})
            except ConfigError as exc:
                fail(str(exc), code=2)
        return self._config

    def close(self) -> None:
        if self._gov is not None:
            self._gov.close()
            self._gov = None

    def gov(self) -> Governance:
        if self._gov is None:
            try:
                self._gov = Governance(self.config())
            except AuditKeyError as exc:
                fail(str(exc), code=2)
        return self._gov


STATE = State()


def global_options(
    ctx: typer.Context,
    store: Annotated[
        Path | None,
        typer.Option("--store", envvar="MAMORI_STORE", help="store directory", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="MAMORI_CONFIG", help="configuration file (TOML)"),
    ] = None,
) -> None:
    """The root callback: --store and --config, for whichever command runs."""
    STATE.reset(store, config)
    ctx.call_on_close(STATE.close)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def actor_name() -> str:
    return os.environ.get("MAMORI_ACTOR") or f"cli:{getpass.getuser()}"


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"cannot read time {value!r}; use ISO 8601, e.g. 2026-11-23T09:00:00Z", code=2)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _arrives(issue: int | None) -> str:
    return f"issue #{issue}" if issue else "a later issue"


def not_built(what: str, issue: int | None) -> NoReturn:
    err.print(
        f"mamori {what}: not built yet — this stage arrives with {_arrives(issue)}. "
        "Nothing was done.",
        highlight=False,
    )
    raise typer.Exit(EX_UNAVAILABLE)


# (parent group, name, full command, help, issue that builds it)
Pending = tuple[typer.Typer, str, str, str, int | None]


def register_pending(entries: list[Pending]) -> None:
    """Add placeholder commands for stages not built yet: they take any arguments, say so and
    exit with EX_UNAVAILABLE, so scripts can tell "not yet" from a failure."""
    for parent, name, full, help_text, issue in entries:

        def make(issue: int | None, full: str) -> Any:
            def cmd(
                args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
            ) -> None:
                not_built(full, issue)

            return cmd

        parent.command(
            name,
            help=f"{help_text} [not built yet: {_arrives(issue)}]",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(make(issue, full))
