"""Accounts: argon2 hashes kept privately in the store; the CLI creates the first admin."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.governance import Governance
from mamori.governance.roles import Role
from mamori.web.auth import AccountError, Accounts

runner = CliRunner()


def test_add_verify_and_storage(gov: Governance) -> None:
    accounts = Accounts(gov)
    password = accounts.add("alice", "analyst")
    assert len(password) >= 16
    acc = accounts.verify("alice", password)
    assert acc is not None and acc.role is Role.ANALYST and acc.actor == "web:alice"
    assert accounts.verify("alice", password + "x") is None
    assert accounts.verify("nobody", password) is None
    raw = accounts.path.read_text()
    assert password not in raw
    assert json.loads(raw)["alice"]["password_hash"].startswith("$argon2id$")
    assert accounts.path.stat().st_mode & 0o077 == 0
    assert accounts.path.parent == gov.state_dir("web")


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("Bad Name", "analyst", None, "account name"),
        ("bob", "root", None, "unknown role"),
        ("bob", "auditor", "short", "at least 12"),
        ("alice", "auditor", None, "already exists"),
    ],
)
def test_refused_accounts(
    gov: Governance, name: str, role: str, password: str | None, message: str
) -> None:
    accounts = Accounts(gov)
    accounts.add("alice", "analyst")
    with pytest.raises(AccountError, match=message):
        accounts.add(name, role, password)


def test_cli_first_admin_and_list(gov: Governance) -> None:
    store = ["--store", str(gov.config.store)]
    res = runner.invoke(app, [*store, "web", "user", "add", "root-admin", "--role", "admin"])
    assert res.exit_code == 0, res.output
    m = re.search(r"password: (\S+)", res.output)
    assert m
    assert Accounts(gov).verify("root-admin", m.group(1)) is not None
    res = runner.invoke(app, [*store, "web", "user", "list"])
    assert res.exit_code == 0 and "root-admin" in res.output and "admin" in res.output
    assert m.group(1) not in res.output
    res = runner.invoke(app, [*store, "web", "user", "add", "x", "--role", "king"])
    assert res.exit_code == 2 and "unknown role" in res.output
    assert any(e.event == "account" for e in gov.audit.entries())
