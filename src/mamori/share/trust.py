"""Who we share with: trust groups, peers (with their API keys) and remote TAXII servers we poll.

Kept in ``gov.state_dir("share")``:

- ``trust.json`` — groups (which collections they may read and write) and peers (their group, the
  Argon2 hash of their API key, when it was created and revoked). A key is shown once, on creation,
  and never stored in clear. The file is read afresh for every check, so a revocation applies to
  the very next request.
- ``remotes.json`` (mode 0600) — the TAXII servers of other ISPs we poll and the keys they gave us,
  which must be sent in clear, plus the ``added_after`` position reached with each.

Changes are made under a file lock and written atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mamori.governance import Governance

__all__ = ["COLLECTIONS", "Peer", "Remote", "TrustError", "TrustStore"]

# The collections this ISP's TAXII server offers: its own C&C list, and a drop box peers with
# write rights may post their indicators to.
COLLECTIONS = {
    "c2": "C&C servers seen from this ISP's network (aggregated endpoints; TLP as marked)",
    "submissions": "Indicators posted by trusted peers",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY = re.compile(r"^mamori_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
# Keys are 256-bit random tokens, so a slow hash is not what protects them (no dictionary to
# try); light parameters keep each request's check at milliseconds instead of ~0.5 s of CPU and
# 64 MiB — which an unauthenticated caller could otherwise make the server spend at will.
_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


class TrustError(ValueError):
    """A change to the trust configuration that cannot be made (named, with why)."""


@dataclass(frozen=True)
class Peer:
    name: str
    group: str
    read: frozenset[str]
    write: frozenset[str]


@dataclass(frozen=True)
class Remote:
    name: str
    url: str  # the collection's URL: …/api/collections/<id>/
    key: str
    added_after: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise TrustError(
            f"bad {kind} name {name!r}: 1–64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )


class TrustStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "trust.json"
        self.remotes_path = directory / "remotes.json"
        self._lock = directory / "trust.lock"

    @classmethod
    def of(cls, gov: Governance) -> TrustStore:
        return cls(gov.state_dir("share"))

    # ------------------------------------------------------------------ files

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        return data

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, path)

    def _trust(self) -> dict[str, Any]:
        data = self._read(self.path)
        data.setdefault("groups", {})
        data.setdefault("peers", {})
        return data

    # ------------------------------------------------------------------ groups

    def set_group(self, name: str, read: list[str], write: list[str]) -> None:
        """Create or replace trust group ``name`` with the collections it may read and write."""
        _check_name("group", name)
        unknown = sorted(set(read + write) - set(COLLECTIONS))
        if unknown:
            raise TrustError(f"unknown collection(s) {unknown}; there are {sorted(COLLECTIONS)}")
        if "c2" in write:
            raise TrustError("nobody may write the c2 collection: it is this ISP's own list")
        with self._locked():
            data = self._trust()
            data["groups"][name] = {"read": sorted(set(read)), "write": sorted(set(write))}
            self._write(self.path, data)

    def groups(self) -> dict[str, dict[str, list[str]]]:
        groups: dict[str, dict[str, list[str]]] = self._trust()["groups"]
        return groups

    # ------------------------------------------------------------------ peers

    def add_peer(self, name: str, group: str) -> str:
        """Register peer ``name`` in ``group``; returns its API key (shown once, stored hashed)."""
        _check_name("peer", name)
        with self._locked():
            data = self._trust()
            if group not in data["groups"]:
                raise TrustError(f"no trust group {group!r}; create it first (share peers groups)")
            old = data["peers"].get(name)
            if old and not old.get("revoked"):
                raise TrustError(f"peer {name!r} exists; revoke it first to issue a new key")
            key_id = secrets.token_hex(6)
            key = f"mamori_{key_id}_{secrets.token_urlsafe(32)}"
            data["peers"][name] = {
                "group": group,
                "key_id": key_id,
                "key_hash": _HASHER.hash(key),
                "created": _now(),
                "revoked": None,
            }
            self._write(self.path, data)
        return key

    def revoke_peer(self, name: str) -> None:
        with self._locked():
            data = self._trust()
            peer = data["peers"].get(name)
            if peer is None:
                raise TrustError(f"no peer {name!r}")
            peer["revoked"] = peer.get("revoked") or _now()
            self._write(self.path, data)

    def peers(self) -> dict[str, dict[str, Any]]:
        """Peers as stored, without their key hashes."""
        return {
            n: {k: v for k, v in p.items() if k != "key_hash"}
            for n, p in self._trust()["peers"].items()
        }

    def authenticate(self, key: str) -> Peer | None:
        """The peer holding ``key``, if it is valid and not revoked. Reads the file every time."""
        m = _KEY.match(key)
        if not m:
            return None
        data = self._trust()
        for name, p in data["peers"].items():
            if p.get("key_id") != m.group(1) or p.get("revoked"):
                continue
            try:
                _HASHER.verify(p["key_hash"], key)
            except (VerificationError, InvalidHashError):
                return None
            g = data["groups"].get(p["group"], {})
            return Peer(
                name, p["group"], frozenset(g.get("read", [])), frozenset(g.get("write", []))
            )
        return None

    # ------------------------------------------------------------------ remotes

    def set_remote(self, name: str, url: str, key: str) -> None:
        """Record a peer's TAXII collection (its URL) and the API key it gave us."""
        _check_name("peer", name)
        if not url.startswith(("http://", "https://")):
            raise TrustError(f"remote URL {url!r} must start with http:// or https://")
        with self._locked():
            data = self._read(self.remotes_path)
            data[name] = {
                "url": url if url.endswith("/") else url + "/",
                "key": key,
                "added_after": None,
            }
            self._write(self.remotes_path, data)

    def remote(self, name: str) -> Remote:
        r = self._read(self.remotes_path).get(name)
        if r is None:
            raise TrustError(f"no remote peer {name!r}; add it with `share peers remote`")
        return Remote(name, r["url"], r["key"], r.get("added_after"))

    def remotes(self) -> list[Remote]:
        return [
            Remote(n, r["url"], r["key"], r.get("added_after"))
            for n, r in sorted(self._read(self.remotes_path).items())
        ]

    def advance(self, name: str, added_after: str) -> None:
        """Remember how far polling ``name`` has got (its server's ``date_added`` clock)."""
        with self._locked():
            data = self._read(self.remotes_path)
            if name in data:
                data[name]["added_after"] = added_after
                self._write(self.remotes_path, data)
