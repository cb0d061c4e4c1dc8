"""`mamori install-units`: the systemd units and timers that run Mamori as a service."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer

from mamori.cli.common import STATE, err, fail
from mamori.config import DEFAULT_CONFIG_FILE

DEFAULT_CONFIG_PATH = Path("/etc/mamori/mamori.toml")


def _this_mamori() -> Path | None:
    """The ``mamori`` executable running now (a virtual environment's, a system one)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "mamori" and argv0.exists():
        return argv0.absolute()
    beside = Path(sys.executable).with_name("mamori")
    if beside.exists():
        return beside
    found = shutil.which("mamori")
    return Path(found) if found else None


def _config_file() -> Path | None:
    if STATE.config_file is not None:
        return STATE.config_file
    if "MAMORI_CONFIG" in os.environ:
        return Path(os.environ["MAMORI_CONFIG"])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


def install_units_cmd(
    prefix: Annotated[
        Path,
        typer.Option(
            "--prefix",
            help="root to write under: units go to PREFIX/etc/systemd/system (the default / "
            "installs them on this machine; a directory stages them for a package or image)",
        ),
    ] = Path("/"),
    mamori: Annotated[
        Path | None,
        typer.Option("--mamori", help="the mamori executable the units run [default: this one]"),
    ] = None,
    user: Annotated[
        str, typer.Option("--user", help="system user the units run as (created by sysusers)")
    ] = "mamori",
) -> None:
    """Write the systemd units and timers: one collector per listener group
    (mamori-collect@GROUP), the console (mamori-web), the resolver sync (--watch), and timers
    for detect c2, detect infected, notify --send, purge and the monthly transparency report on
    the schedules in [schedule]. Prints every file written and what to run next. Paths in the
    units come from the configuration in use: its file, its store. Run again after changing
    the configuration."""
    from mamori.units import Installation, install, render_units

    cfg = STATE.config()
    exe = mamori or _this_mamori()
    if exe is None:
        fail("cannot tell where the mamori executable is; give --mamori PATH", code=2)
    config_file = _config_file()
    if config_file is None:
        err.print(
            f"no configuration file in use: the units read {DEFAULT_CONFIG_PATH}; "
            "create it before starting them",
            highlight=False,
        )
        config_file = DEFAULT_CONFIG_PATH
    inst = Installation(
        mamori=PurePosixPath(exe.absolute()),
        config=PurePosixPath(config_file.absolute()),
        store=PurePosixPath(cfg.store.absolute()),
        user=user,
    )
    try:
        units = render_units(cfg, inst)
        written = install(units, prefix)
    except (OSError, ValueError) as exc:
        fail(f"cannot write the units under {prefix}: {exc}")
    for path in written:
        typer.echo(f"wrote {path}")  # one line per file, never wrapped: scripts read it
    groups = list(cfg.collector.listen_groups())
    timers = sorted(u.path.name for u in units if u.path.name.endswith(".timer"))
    enable = [
        *(f"mamori-collect@{g}.service" for g in groups),
        "mamori-web.service",
        "mamori-resolver-sync.service",
        *timers,
    ]
    root = "" if prefix.absolute() == Path("/") else " (on the machine they are installed on)"
    err.print(
        f"next{root}:\n"
        "  systemd-sysusers && systemd-tmpfiles --create\n"
        "  systemctl daemon-reload\n"
        f"  systemctl enable --now {' '.join(enable)}",
        highlight=False,
    )
    if not groups:
        err.print(
            "no listener group configured (collector.listen or collector.groups.NAME): no "
            "collector instance to enable",
            highlight=False,
            markup=False,
        )
