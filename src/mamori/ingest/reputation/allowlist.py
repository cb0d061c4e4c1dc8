"""The operator's allowlist as people grow it: addresses an analyst marked as a false positive.

``reputation.allow_prefixes`` in the configuration is the allowlist an operator writes; this file,
``<store>/_state/reputation/allow.json``, holds what analysts add from the console ("false
positive"), with who, when and which finding. Both are applied the same way wherever a list is
read (:func:`mamori.ingest.reputation.current_reputation_grant`): an allowlisted address is never
matched against subscribers' traffic, blocked or redirected. Each addition is audited
(``allowlist``).

Retention (:func:`prune_allowlist`, run by ``mamori purge``): after ``retention.findings`` days an
entry keeps its prefix and date only — who marked it and which finding (gone by then too) are
removed. The prefix stays: dropping it would bring the false positive back."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mamori.config import IPNetwork
from mamori.governance import Governance

__all__ = ["add_to_allowlist", "people_allowlist", "prune_allowlist"]


def _path(gov: Governance) -> tuple[Path, Path]:
    d = gov.state_dir("reputation")
    return d / "allow.json", d / ".allow.lock"


def _entries(path: Path) -> list[dict[str, str]]:
    try:
        entries: list[dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    return entries


def people_allowlist(gov: Governance) -> tuple[IPNetwork, ...]:
    path, _ = _path(gov)
    return tuple(ipaddress.ip_network(e["prefix"]) for e in _entries(path))


def add_to_allowlist(gov: Governance, address: str, actor: str, *, finding_id: str) -> IPNetwork:
    """Allowlist one address (a host prefix); returns it."""
    addr = ipaddress.ip_address(address)
    prefix = ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")
    path, lock = _path(gov)
    with lock.open("a") as lh:
        fcntl.flock(lh, fcntl.LOCK_EX)
        entries = _entries(path)
        if all(e["prefix"] != str(prefix) for e in entries):
            entries.append(
                {
                    "prefix": str(prefix),
                    "actor": actor,
                    "finding": finding_id,
                    "added": datetime.now(UTC).isoformat(),
                }
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(entries, indent=1), encoding="utf-8")
            os.replace(tmp, path)
    gov.audit.append(
        actor=actor,
        event="allowlist",
        dataset="reputation",
        detail={"finding": finding_id, "reason": "false positive"},
    )
    return prefix


def prune_allowlist(
    gov: Governance, actor: str, *, now: datetime | None = None, dry_run: bool = False
) -> int:
    """Strip who and which finding from entries older than ``retention.findings`` days; returns
    how many (audited as a purge of the allowlist)."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=gov.config.retention.findings)
    path, lock = _path(gov)
    with lock.open("a") as lh:
        fcntl.flock(lh, fcntl.LOCK_EX)
        entries = _entries(path)
        old = [
            e
            for e in entries
            if datetime.fromisoformat(e["added"]) < cutoff and ("actor" in e or "finding" in e)
        ]
        if old and not dry_run:
            kept = [
                {"prefix": e["prefix"], "added": e["added"]} if e in old else e for e in entries
            ]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(kept, indent=1), encoding="utf-8")
            os.replace(tmp, path)
    gov.audit.append(
        actor=actor,
        event="purge" if not dry_run else "purge-dry-run",
        detail={"store": "allowlist", "entries_stripped": len(old), "cutoff": cutoff.isoformat()},
    )
    return len(old)
