"""The command line, split into one module per group, still offers every command with its help:
walk the assembled tree and ask each command and group for --help."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from mamori.cli import app

runner = CliRunner()


def _walk(cmd: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    found = [(path, cmd)]
    for name in getattr(cmd, "commands", {}):
        found += _walk(cmd.commands[name], [*path, name])
    return found


TREE = _walk(typer.main.get_command(app), [])
PATHS = [path for path, _ in TREE]


def test_tree_has_every_group_in_order() -> None:
    # `mamori --help` lists single commands first, then groups, in this order.
    assert [p[0] for p in PATHS if len(p) == 1] == [
        "purge",
        "simulate",
        "serve",
        "attribute",
        "demo",
        "status",
        "review",
        "install-units",
        "config",
        "consent",
        "audit",
        "collect",
        "eval",
        "ingest",
        "detect",
        "share",
        "report",
        "web",
        "act",
        "notify",
    ]
    assert len(PATHS) > 50  # the sub-commands were found too


@pytest.mark.parametrize(
    ("path", "cmd"), TREE, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_command_has_help(path: list[str], cmd: Any) -> None:
    assert (cmd.help or cmd.short_help or "").strip(), f"mamori {' '.join(path)} has no help"
    for flag in ("--help", "-h"):
        result = runner.invoke(app, [*path, flag], prog_name="mamori")
        assert result.exit_code == 0, result.output
        assert f"Usage: mamori {' '.join(path)}".rstrip() in result.output
        if path:
            assert cmd.help.split()[0] in result.output


@pytest.mark.parametrize("module", ["mamori", "mamori.cli"])
def test_module_runs_the_command_line(module: str) -> None:
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, check=False)
    assert r.returncode == 0, r.stderr
    assert b"Usage: mamori" in r.stdout and b"notify" in r.stdout
