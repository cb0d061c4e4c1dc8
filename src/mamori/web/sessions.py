"""Server-side record of console sessions, so that signing out really ends one.

The session cookie is signed, but a signature alone cannot be taken back: a cookie copied before
sign-out would stay good until it expires. So each sign-in gets a random session id, the cookie
carries it, and this registry keeps a digest of every id that is still open (in the store's
``web`` state directory, mode 0600, shared by every worker process). A request counts as signed
in only while its id is here; signing out removes it, and changing a password or disabling an
account removes all of the account's ids.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SessionRegistry"]


def _digest(sid: str) -> str:
    # only digests are kept: reading the file does not give anyone a session
    return hashlib.sha256(sid.encode()).hexdigest()


class SessionRegistry:
    """Open sessions: digest of the id → account and expiry (epoch seconds)."""

    def __init__(self, directory: Path, max_age_s: float) -> None:
        self.path = directory / "sessions.json"
        self._lock = directory / ".sessions.lock"
        self.max_age_s = max_age_s

    def _load(self) -> dict[str, dict[str, str | float]]:
        try:
            raw: dict[str, dict[str, str | float]] = json.loads(
                self.path.read_text(encoding="utf-8")
            )
        except FileNotFoundError:
            return {}
        return raw

    @contextmanager
    def _editing(self) -> Iterator[dict[str, dict[str, str | float]]]:
        with self._lock.open("a") as lh:
            fcntl.flock(lh, fcntl.LOCK_EX)
            data = self._load()
            now = time.time()
            data = {k: v for k, v in data.items() if float(v["expires"]) > now}
            yield data
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.path)

    def start(self, account: str) -> str:
        """A new session id for ``account`` (goes into the signed cookie)."""
        sid = secrets.token_urlsafe(32)
        with self._editing() as data:
            data[_digest(sid)] = {"account": account, "expires": time.time() + self.max_age_s}
        return sid

    def valid(self, sid: object, account: str) -> bool:
        if not isinstance(sid, str) or not sid:
            return False
        entry = self._load().get(_digest(sid))
        return (
            entry is not None
            and entry.get("account") == account
            and float(entry["expires"]) > time.time()
        )

    def end(self, sid: object) -> None:
        if not isinstance(sid, str):
            return
        with self._editing() as data:
            data.pop(_digest(sid), None)

    def end_all(self, account: str) -> int:
        """End every session of ``account``; returns how many there were."""
        with self._editing() as data:
            gone = [k for k, v in data.items() if v.get("account") == account]
            for k in gone:
                del data[k]
        return len(gone)

    def count(self, account: str) -> int:
        now = time.time()
        return sum(
            1
            for v in self._load().values()
            if v.get("account") == account and float(v["expires"]) > now
        )
