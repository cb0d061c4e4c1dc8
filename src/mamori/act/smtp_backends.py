"""Back ends of the SMTP AUTH actions (M11, M12): where a refusal or a suspension takes effect.

* :class:`PostfixAccessMap` — a ``check_client_access hash:`` map of refused addresses; written,
  then ``postmap``: Postfix reads it at the next connection, no reload. With
  ``smtpd_delay_reject = no`` the client is refused at the greeting, before AUTH.
* :class:`NftSubmissionSet` — an nftables table with a set of refused addresses, dropped with a
  TCP reset on the submission ports. Each element carries a timeout, so the kernel ends a refusal
  by itself even if Mamori is not running at its expiry.
* :class:`DovecotDenyFile` — a passwd-file of suspended AUTH IDs for a Dovecot ``passdb`` with
  ``deny = yes``; Dovecot reads it at the next authentication (measured 0.6–1.4 s), no reload.

Each keeps the actions in force in a small JSON file beside what it writes (action id, target,
expiry) and rewrites the whole output from it, atomically: applying or withdrawing twice is
harmless, and an entry past its expiry is never written again even if the sweep is late.
:class:`SmtpRefusalBackend` sends refusals to the configured back ends
(``[mail] refusal_backends``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mamori.act.base import Action, ActionKind
from mamori.config import MamoriConfig

__all__ = [
    "BackendError",
    "DovecotDenyFile",
    "NftSubmissionSet",
    "PostfixAccessMap",
    "SmtpRefusalBackend",
    "SuspensionBackend",
    "mail_state_dir",
]


class BackendError(RuntimeError):
    """A back end could not put an action into effect (a command failed)."""


def mail_state_dir(config: MamoriConfig) -> Path:
    return config.store / "_state" / "mail"


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _run(cmd: Sequence[str], stdin: str | None = None) -> None:
    try:
        proc = subprocess.run(
            list(cmd), input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"{' '.join(cmd)}: {exc}") from None
    if proc.returncode != 0:
        raise BackendError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[:500]}")


class _Entries:
    """The actions a back end holds in force: action id → (target, expiry), kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        data: dict[str, dict[str, str]] = json.loads(self.path.read_text(encoding="utf-8"))
        return data

    def save(self, entries: dict[str, dict[str, str]]) -> None:
        _atomic_write(self.path, json.dumps(entries, indent=1, sort_keys=True) + "\n", 0o600)

    def add(self, actions: Sequence[Action]) -> dict[str, dict[str, str]]:
        entries = self.load()
        for a in actions:
            entries[a.action_id] = {"target": a.target, "expires": a.expires.isoformat()}
        self.save(entries)
        return entries

    def remove(self, actions: Sequence[Action]) -> dict[str, dict[str, str]]:
        entries = self.load()
        for a in actions:
            entries.pop(a.action_id, None)
        self.save(entries)
        return entries


def _in_force(
    entries: dict[str, dict[str, str]], now: datetime
) -> dict[str, tuple[datetime, list[str]]]:
    """target → (latest expiry, action ids) of the entries not yet expired."""
    out: dict[str, tuple[datetime, list[str]]] = {}
    for aid, e in sorted(entries.items()):
        exp = datetime.fromisoformat(e["expires"])
        if exp <= now:
            continue
        prev = out.get(e["target"])
        out[e["target"]] = (max(exp, prev[0]) if prev else exp, [*(prev[1] if prev else []), aid])
    return out


def _as_entries(actions: Sequence[Action]) -> dict[str, dict[str, str]]:
    return {a.action_id: {"target": a.target, "expires": a.expires.isoformat()} for a in actions}


class PostfixAccessMap:
    """Refused addresses in a Postfix ``check_client_access`` hash map."""

    kind = ActionKind.SMTP_AUTH_REFUSAL

    def __init__(self, config: MamoriConfig) -> None:
        mail = config.mail
        self.path = mail.postfix_access_map or mail_state_dir(config) / "client_access"
        self.postmap = tuple(mail.postmap_command)
        self.reject = mail.postfix_reject
        self._entries = _Entries(self.path.with_name(self.path.name + ".mamori.json"))

    def text(self, entries: dict[str, dict[str, str]], now: datetime | None = None) -> str:
        lines = [
            "# SMTP AUTH refusals (M12), written by `mamori act smtp`: changes here are",
            "# overwritten. main.cf: smtpd_client_restrictions = check_client_access hash:"
            + str(self.path),
        ]
        for target, (exp, ids) in sorted(_in_force(entries, now or datetime.now(UTC)).items()):
            lines.append(f"# {', '.join(ids)} until {exp.isoformat()}")
            lines.append(f"{target}\t{self.reject}")
        return "\n".join(lines) + "\n"

    def render(self, actions: Sequence[Action]) -> str:
        return self.text(_as_entries(actions))

    def _write(self, entries: dict[str, dict[str, str]]) -> None:
        _atomic_write(self.path, self.text(entries))
        if self.postmap:  # empty: the source file only (no Postfix here; the demo)
            _run([*self.postmap, f"hash:{self.path}"])

    def prepare(self) -> None:
        """An empty map (and its .db) where none is yet, so Postfix can start with it."""
        self._write(self._entries.load())

    def apply(self, actions: Sequence[Action]) -> None:
        self._write(self._entries.add(actions))

    def withdraw(self, actions: Sequence[Action]) -> None:
        self._write(self._entries.remove(actions))


class NftSubmissionSet:
    """Refused addresses in an nftables set, rejected on the submission ports."""

    kind = ActionKind.SMTP_AUTH_REFUSAL

    def __init__(self, config: MamoriConfig) -> None:
        mail = config.mail
        self.nft = tuple(mail.nft_command)
        self.table = mail.nft_table
        self.ports = tuple(mail.submission_ports)
        self._entries = _Entries(mail_state_dir(config) / f"nft-{self.table}.mamori.json")

    def script(self, entries: dict[str, dict[str, str]], now: datetime | None = None) -> str:
        at = now or datetime.now(UTC)
        v4: list[str] = []
        v6: list[str] = []
        for target, (exp, _) in sorted(_in_force(entries, at).items()):
            secs = max(1, int((exp - at).total_seconds()))
            addr = ipaddress.ip_address(target)
            (v4 if addr.version == 4 else v6).append(f"{addr.compressed} timeout {secs}s")
        ports = ", ".join(str(p) for p in self.ports)

        def elements(items: list[str]) -> str:
            return f" elements = {{ {', '.join(items)} }};" if items else ""

        t = self.table
        # declaring the table first makes "delete" safe when it does not exist yet; the whole
        # script is one transaction, so the set is never seen half-built
        return (
            f"table inet {t} {{}}\n"
            f"delete table inet {t}\n"
            f"table inet {t} {{\n"
            f"  set refused4 {{ type ipv4_addr; flags timeout;{elements(v4)} }}\n"
            f"  set refused6 {{ type ipv6_addr; flags timeout;{elements(v6)} }}\n"
            f"  chain input {{\n"
            f"    type filter hook input priority filter - 10; policy accept;\n"
            f"    tcp dport {{ {ports} }} ip saddr @refused4 counter reject with tcp reset\n"
            f"    tcp dport {{ {ports} }} ip6 saddr @refused6 counter reject with tcp reset\n"
            f"  }}\n"
            f"}}\n"
        )

    def render(self, actions: Sequence[Action]) -> str:
        return self.script(_as_entries(actions))

    def _load(self, entries: dict[str, dict[str, str]]) -> None:
        _run([*self.nft, "-f", "-"], stdin=self.script(entries))

    def prepare(self) -> None:
        self._load(self._entries.load())

    def apply(self, actions: Sequence[Action]) -> None:
        self._load(self._entries.add(actions))

    def withdraw(self, actions: Sequence[Action]) -> None:
        self._load(self._entries.remove(actions))


class SmtpRefusalBackend:
    """``smtp-auth-refusal`` actions, sent to each configured back end (``[mail]
    refusal_backends``): the Postfix map, the nftables set, or both."""

    kind = ActionKind.SMTP_AUTH_REFUSAL

    def __init__(self, config: MamoriConfig) -> None:
        makers: dict[str, Any] = {"postfix": PostfixAccessMap, "nftables": NftSubmissionSet}
        self.parts = {name: makers[name](config) for name in config.mail.refusal_backends}

    def render(self, actions: Sequence[Action]) -> dict[str, str]:
        return {name: part.render(actions) for name, part in self.parts.items()}

    def prepare(self) -> None:
        for part in self.parts.values():
            part.prepare()

    def apply(self, actions: Sequence[Action]) -> None:
        for part in self.parts.values():
            part.apply(actions)

    def withdraw(self, actions: Sequence[Action]) -> None:
        for part in self.parts.values():
            part.withdraw(actions)


class DovecotDenyFile:
    """Suspended AUTH IDs in a passwd-file that a Dovecot ``passdb`` with ``deny = yes`` reads."""

    kind = ActionKind.ACCOUNT_SUSPENSION

    def __init__(self, config: MamoriConfig) -> None:
        self.path = config.mail.dovecot_deny_file or mail_state_dir(config) / "dovecot-deny"
        self._entries = _Entries(self.path.with_name(self.path.name + ".mamori.json"))

    def text(self, entries: dict[str, dict[str, str]], now: datetime | None = None) -> str:
        # passwd-file: "user" alone is a valid line; Dovecot reads no comments, so none are kept
        users = sorted(_in_force(entries, now or datetime.now(UTC)))
        return "".join(f"{u}\n" for u in users)

    def render(self, actions: Sequence[Action]) -> str:
        return self.text(_as_entries(actions))

    def _write(self, entries: dict[str, dict[str, str]]) -> None:
        _atomic_write(self.path, self.text(entries))

    def prepare(self) -> None:
        """An empty file where none is yet: Dovecot fails every login if its passdb is missing."""
        self._write(self._entries.load())

    def apply(self, actions: Sequence[Action]) -> None:
        self._write(self._entries.add(actions))

    def withdraw(self, actions: Sequence[Action]) -> None:
        self._write(self._entries.remove(actions))


SuspensionBackend = DovecotDenyFile
