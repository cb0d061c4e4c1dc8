"""What every ``mamori`` command shares: the consoles, the global --store/--config options and
the state they open, the "not built yet" placeholder (exit status 69) and error exits."""

from __future__ import annotations

import functools
import getpass
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from mamori.config import ConfigError, IPNetwork, MamoriConfig, load_config
from mamori.governance import Governance
from mamori.governance.audit_keys import AuditKeyError
from mamori.logs import setup_logging
from mamori.runs import RunRecord, StageRun, record_run, stage_run


class LogFormatChoice(StrEnum):
    text = "text"
    json = "json"


err = Console(stderr=True, soft_wrap=True)
out = Console()

EX_UNAVAILABLE = 69


_GLOBAL_OPTIONS = ("--store", "--config", "--log-format", "--log-level")


def _hoist_global_options(argv: list[str]) -> list[str]:
    """Move the global options given after the sub-command to the front, where typer reads
    them."""
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in _GLOBAL_OPTIONS and i + 1 < len(argv):
            hoisted += [tok, argv[i + 1]]
            i += 2
            continue
        if tok.startswith(tuple(f"{o}=" for o in _GLOBAL_OPTIONS)):
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
    # as given on the command line: what child processes (collect --decoders) are started with
    log_format: str | None = None
    log_level: str | None = None
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

    def pools(self) -> list[IPNetwork] | None:
        """The subscriber pools once the configuration is read (None before: the log then
        hides every address)."""
        return self._config.pools() if self._config is not None else None

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
    log_format: Annotated[
        LogFormatChoice | None,
        typer.Option(
            "--log-format",
            envvar="MAMORI_LOG_FORMAT",
            help="log lines to stderr as text or JSON lines (what the systemd units use); "
            "subscriber addresses are never logged at info level [default: warnings only, "
            "as plain text]",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level", envvar="MAMORI_LOG_LEVEL", help="debug, info, warning or error"
        ),
    ] = None,
) -> None:
    """The root callback: --store, --config and logging, for whichever command runs."""
    STATE.reset(store, config)
    STATE.log_format = log_format.value if log_format is not None else None
    STATE.log_level = log_level
    ctx.call_on_close(STATE.close)
    if log_format is not None or log_level is not None:
        level = (log_level or "info").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            fail(f"--log-level {log_level!r}: expected debug, info, warning or error", code=2)
        setup_logging((log_format or LogFormatChoice.text).value, level, STATE.pools)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def actor_name() -> str:
    return os.environ.get("MAMORI_ACTOR") or f"cli:{getpass.getuser()}"


_RELATIVE = re.compile(r"^-(\d{1,5})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str | None) -> datetime | None:
    """ISO 8601, or a time relative to now: ``-15m``, ``-24h``, ``-7d`` (what the timers pass)."""
    if value is None:
        return None
    rel = _RELATIVE.match(value.strip())
    if rel:
        return datetime.now(UTC) - timedelta(**{_UNITS[rel[2]]: int(rel[1])})
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"cannot read time {value!r}; use ISO 8601, e.g. 2026-11-23T09:00:00Z", code=2)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------ stage runs

F = TypeVar("F", bound=Callable[..., Any])
_CURRENT: list[StageRun] = []


def records_run(stage: str, *, unless: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Record the command's run as ``stage``'s last run (mamori.runs), except when one of the
    ``unless`` flags is set (a dry run is not a run) or a sub-command was invoked instead."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = kwargs.get("ctx")
            if any(kwargs.get(flag) for flag in unless) or (
                isinstance(ctx, typer.Context) and ctx.invoked_subcommand
            ):
                return fn(*args, **kwargs)
            with stage_run(STATE.gov().state_dir("runs"), stage) as run:
                _CURRENT.append(run)
                try:
                    return fn(*args, **kwargs)
                finally:
                    _CURRENT.pop()

        return wrapper  # type: ignore[return-value]

    return decorate


def run_count(**counts: int) -> None:
    """Counts for the run being recorded (findings, alerts sent, rows deleted): no addresses."""
    if _CURRENT:
        _CURRENT[-1].count(**counts)


def note_run(stage: str, seconds: float, counts: dict[str, int], *, ok: bool = True) -> None:
    """Record one pass of a long-running stage (each resolver sync) as its last run."""
    started = datetime.now(UTC) - timedelta(seconds=seconds)
    record_run(
        STATE.gov().state_dir("runs"),
        RunRecord(
            stage=stage,
            started=started.isoformat(),
            seconds=round(seconds, 3),
            outcome="ok" if ok else "failed",
            exit_code=0 if ok else 1,
            counts=counts,
        ),
    )


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
