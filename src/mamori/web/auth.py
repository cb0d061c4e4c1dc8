"""Console accounts, sessions, CSRF tokens and the per-route role check.

Accounts live in ``accounts.json`` in the store's ``web`` state directory, with argon2 password
hashes. A session is a signed cookie (Starlette's ``SessionMiddleware``, itsdangerous) naming the
account, a session id and the CSRF token; the id must still be open in the server's registry
(:mod:`mamori.web.sessions`), so signing out or changing the password ends a session for good, and
the account is looked up again on every request, so disabling it ends its sessions at once. Every
POST form carries the session's CSRF token.

Every route depends on a :class:`Need` naming the :class:`~mamori.governance.roles.View` it
serves; ``Need`` lets the request in or answers 303 (to the login page) or 403, and the test suite
walks all routes to check that each one declares it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import FormData

from mamori.governance import Governance
from mamori.governance.roles import VIEWS, Role, View
from mamori.web.sessions import SessionRegistry

__all__ = [
    "Account",
    "AccountError",
    "Accounts",
    "CsrfFailed",
    "Forbidden",
    "LoginRequired",
    "Need",
    "Viewer",
    "csrf_form",
    "csrf_token",
]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_hasher = PasswordHasher()
# Verified against when the account does not exist, so a wrong name costs as long as a wrong
# password and does not reveal which names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """An account that cannot be created (bad name, unknown role, already exists)."""


class Account(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=NAME_RE.pattern)
    role: Role
    password_hash: str
    created: datetime
    disabled: bool = False
    last_login: datetime | None = None
    # wrong passwords since the last sign-in, and until when the account is locked by them
    failures: int = 0
    locked_until: datetime | None = None
    password_changed: datetime | None = None
    # base32 secret of the second factor (TOTP, RFC 6238); None: password only
    totp_secret: str | None = None
    language: str | None = Field(default=None, pattern=r"^(ja|en)$")

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    @property
    def actor(self) -> str:
        """How the audit log names this account."""
        return f"web:{self.name}"


class Accounts:
    """The console's accounts, kept in the store (never in the code or the configuration)."""

    def __init__(self, gov: Governance) -> None:
        self._dir = gov.state_dir("web")
        self.path = self._dir / "accounts.json"

    def _load(self) -> dict[str, Account]:
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        return {name: Account.model_validate(body) for name, body in raw.items()}

    def _save(self, accounts: dict[str, Account]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(
                {n: a.model_dump(mode="json") for n, a in sorted(accounts.items())}, fh, indent=1
            )
        os.replace(tmp, self.path)

    def add(self, name: str, role: Role | str, password: str | None = None) -> str:
        """Create an account; returns its password (generated when not given)."""
        if not NAME_RE.match(name):
            raise AccountError(
                f"account name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-'"
            )
        try:
            role = Role(role)
        except ValueError:
            raise AccountError(
                f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}"
            ) from None
        password = password or secrets.token_urlsafe(15)
        if len(password) < 12:
            raise AccountError("a password needs at least 12 characters")
        lock = self._dir / ".accounts.lock"
        with lock.open("a") as lh:
            fcntl.flock(lh, fcntl.LOCK_EX)
            accounts = self._load()
            if name in accounts:
                raise AccountError(f"account {name!r} already exists")
            accounts[name] = Account(
                name=name, role=role, password_hash=_hasher.hash(password), created=_now()
            )
            self._save(accounts)
        return password

    def list(self) -> list[Account]:
        return sorted(self._load().values(), key=lambda a: a.name)

    def get(self, name: str) -> Account | None:
        """The account, unless it does not exist or is disabled."""
        acc = self._load().get(name)
        return acc if acc is not None and not acc.disabled else None

    def find(self, name: str) -> Account | None:
        """The account even when disabled (for administration)."""
        return self._load().get(name)

    def verify(self, name: str, password: str) -> Account | None:
        acc = self.get(name)
        try:
            _hasher.verify(acc.password_hash if acc else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return acc

    def update(self, name: str, **changes: Any) -> Account:
        """Change fields of an account (under the lock); raises AccountError if it is gone."""
        lock = self._dir / ".accounts.lock"
        with lock.open("a") as lh:
            fcntl.flock(lh, fcntl.LOCK_EX)
            accounts = self._load()
            acc = accounts.get(name)
            if acc is None:
                raise AccountError(f"no account {name!r}")
            # validated again: a change cannot store what an account may not hold
            new = Account.model_validate({**acc.model_dump(), **changes})
            accounts[name] = new
            self._save(accounts)
        return new

    def set_password(self, name: str, password: str | None = None) -> str:
        """A new password (generated when not given); returns it. Clears a lock."""
        password = password or secrets.token_urlsafe(15)
        if len(password) < 12:
            raise AccountError("a password needs at least 12 characters")
        self.update(
            name,
            password_hash=_hasher.hash(password),
            password_changed=_now(),
            failures=0,
            locked_until=None,
        )
        return password

    def failed(self, name: str, lock_after: int, lock_minutes: float) -> Account | None:
        """Count a wrong password for an existing account; lock it after ``lock_after`` in a
        row. Returns the account as it is now (None: no such account)."""
        acc = self.find(name)
        if acc is None:
            return None
        failures = acc.failures + 1
        locked = acc.locked_until
        if failures >= lock_after:
            locked = _now() + timedelta(minutes=lock_minutes)
            failures = 0
        return self.update(name, failures=failures, locked_until=locked)

    def signed_in(self, name: str) -> Account:
        return self.update(name, failures=0, locked_until=None, last_login=_now())


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------ CSRF


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (also for visitors without an account)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


class CsrfFailed(Exception):
    """A POST without the session's CSRF token."""


async def csrf_form(request: Request) -> FormData:
    """The POSTed form, once its ``csrf`` field has been checked against the session."""
    form = await request.form()
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str):
        raise CsrfFailed
    if not secrets.compare_digest(sent.encode(), expected.encode()):
        raise CsrfFailed
    return form


# ------------------------------------------------------------------------------ roles


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class Forbidden(Exception):
    def __init__(self, view: View, role: Role) -> None:
        self.view = view
        self.role = role


@dataclass(frozen=True)
class Viewer:
    """Who is asking (``account`` is None on public pages for visitors) and for which view."""

    account: Account | None
    view: View

    @property
    def actor(self) -> str:
        return self.account.actor if self.account else "web:public"

    @property
    def role(self) -> Role | None:
        return self.account.role if self.account else None


def current_account(request: Request) -> Account | None:
    """The signed-in account: its session must still be open on the server (see
    :mod:`mamori.web.sessions`) and the account neither disabled nor locked."""
    name = request.session.get("user")
    if not isinstance(name, str):
        return None
    sessions: SessionRegistry = request.app.state.sessions
    if not sessions.valid(request.session.get("sid"), name):
        # signed out, password changed, or expired: the cookie names a session that is over
        request.session.pop("user", None)
        request.session.pop("sid", None)
        return None
    accounts: Accounts = request.app.state.accounts
    return accounts.get(name)


class Need:
    """Route dependency: the view a route serves. Lets in the roles the view allows."""

    def __init__(self, view: str) -> None:
        self.view = VIEWS[view]

    async def __call__(self, request: Request) -> Viewer:
        account = current_account(request)
        if self.view.public:
            return Viewer(account, self.view)
        if account is None:
            raise LoginRequired(request.url.path)
        if not self.view.allows(account.role):
            gov: Governance = request.app.state.gov
            gov.audit.append(
                actor=account.actor,
                event="refused",
                detail={"mode": "console", "view": self.view.name, "role": account.role.value},
            )
            raise Forbidden(self.view, account.role)
        return Viewer(account, self.view)

    def __repr__(self) -> str:
        return f"Need({self.view.name!r})"


def safe_next(value: Any) -> str:
    """A local path to return to after login (never another site)."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//"):
        return value
    return "/console"
