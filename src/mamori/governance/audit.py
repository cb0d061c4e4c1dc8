"""Append-only, hash-chained audit log.

One JSON object per line in ``<store>/audit/audit.jsonl``, written in a canonical form (sorted keys,
no spaces). Each entry carries ``prev_hash``, the hash of the entry before it (64 zeros for the
first), and ``hash``, the SHA-256 of its own canonical form without ``hash``. ``HEAD`` beside the log
holds the sequence number and hash of the last entry, so cutting entries off the end is detected too.
Changing any byte, deleting, inserting or swapping lines breaks the chain at the first entry touched.

The chain alone protects against everyone but the store's owner, who can cut the log and rewrite
``HEAD``, delete both files, or delete an entry and recompute every hash after it. Against the owner:

* with ``[audit] signing_key`` (the audit role's Ed25519 key, kept outside the store) every append
  signs ``HEAD`` (about 0.1 ms, next to the entry's fsync of milliseconds), so a rewritten ``HEAD``
  fails its signature. A signed ``HEAD`` saved earlier can still be put back after cutting the
  entries written since; only a head kept outside the store shows that;
* ``mamori audit publish`` (``audit_publish``) sends a signed head to a sink the owner cannot
  rewrite (syslog over TCP, a file on another mount), and the transparency report carries the
  signed head of its month. :meth:`AuditLog.verify` checks the log against those heads: a log with
  fewer entries than a published head, or another hash at its ``seq``, was tampered with; an
  empty or missing log is an error once anything was published.

The log is never purged: it is what lets an auditor check that purges happened. Its details hold
counts and reasons, never communications data.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mamori.governance.audit_keys import (
    HeadSigner,
    HeadVerifier,
    SignedHead,
    load_public_keys,
    load_signer,
    read_heads,
)

if TYPE_CHECKING:
    from mamori.config import MamoriConfig

__all__ = ["GENESIS", "AuditEntry", "AuditLog", "Verification"]

GENESIS = "0" * 64
_FIELDS = (
    "seq",
    "ts",
    "actor",
    "event",
    "measure",
    "legal_basis",
    "dataset",
    "columns",
    "case_id",
    "detail",
    "prev_hash",
)


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    event: str
    measure: str | None
    legal_basis: str | None
    dataset: str | None
    columns: str | None
    case_id: str | None
    detail: str | None
    prev_hash: str
    hash: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AuditEntry:
        return cls(**{k: obj[k] for k in (*_FIELDS, "hash")})


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    broken_at: int | None = None  # line number (1-based) of the first bad entry
    reason: str = ""
    head_signed: bool = False  # HEAD carries a valid signature of a configured key
    published: int = 0  # signed published heads the log agrees with
    last_published: int = 0  # the highest seq among them
    notes: tuple[str, ...] = ()
    head_hash: str = GENESIS  # hash of the last entry, when ok

    def __str__(self) -> str:
        if not self.ok:
            where = f" at entry {self.broken_at}" if self.broken_at is not None else ""
            return f"audit log BROKEN{where}: {self.reason}"
        parts = [f"audit log intact: {self.entries} entries, hash chain verified"]
        if self.head_signed:
            parts.append("HEAD signed by the audit key")
        if self.published:
            parts.append(
                f"agrees with {self.published} signed published head(s), the last at entry "
                f"{self.last_published}"
            )
        return "; ".join([*parts, *self.notes])


class AuditLog:
    """The log in ``directory``.

    ``signer``: signs ``HEAD`` at every append (and the heads published). ``verifier``: the public
    keys ``HEAD`` and published heads must be signed with; defaults to the signer's own.
    ``published_files``: files outside the store holding published heads (the file sinks), read by
    :meth:`verify` besides ``published.jsonl`` in ``directory``, a copy kept by ``publish``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        signer: HeadSigner | None = None,
        verifier: HeadVerifier | None = None,
        published_files: Sequence[Path] = (),
    ) -> None:
        self.dir = directory
        self.path = directory / "audit.jsonl"
        self.head_path = directory / "HEAD"
        self.lock_path = directory / ".lock"
        self.published_path = directory / "published.jsonl"
        self.signer = signer
        if verifier is None or not verifier:
            verifier = HeadVerifier([signer.public_key] if signer else [])
        self.verifier = verifier
        self.published_files = tuple(published_files)

    @classmethod
    def for_config(cls, config: MamoriConfig) -> AuditLog:
        """The store's log with the keys and file sinks of ``[audit]``; raises
        :class:`~mamori.governance.audit_keys.AuditKeyError` for a key that cannot be used."""
        audit = config.audit
        signer = load_signer(audit.signing_key, store=config.store) if audit.signing_key else None
        keys = load_public_keys(audit.public_keys())
        if signer is not None and not keys:
            keys = [signer.public_key]
        return cls(
            config.store / "audit",
            signer=signer,
            verifier=HeadVerifier(keys),
            published_files=audit.file_sinks(),
        )

    def _tail(self) -> tuple[int, str]:
        """(seq, hash) of the last entry in the file, read from its end: backwards to the newline
        before it, then that line once (an attribution entry listing a million subscriber ids is
        10 MB; gathering it chunk by chunk in front of a growing buffer took a second)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with self.path.open("rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            while end > 0:  # the newline(s) ending the last entry
                fh.seek(end - 1)
                if fh.read(1) != b"\n":
                    break
                end -= 1
            if end == 0:
                return 0, GENESIS
            pos = start = end
            while pos > 0:
                step = min(1 << 16, pos)
                pos -= step
                fh.seek(pos)
                cut = fh.read(step).rfind(b"\n")
                if cut >= 0:
                    start = pos + cut + 1
                    break
            else:
                start = 0
            fh.seek(start)
            last = json.loads(fh.read(end - start))
            return int(last["seq"]), str(last["hash"])

    def append(
        self,
        *,
        actor: str,
        event: str,
        measure: str | None = None,
        legal_basis: str | None = None,
        dataset: str | None = None,
        columns: Sequence[str] = (),
        case_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            seq, prev = self._tail()
            body: dict[str, Any] = {
                "seq": seq + 1,
                "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
                "actor": actor,
                "event": event,
                "measure": measure,
                "legal_basis": legal_basis,
                "dataset": dataset,
                "columns": ",".join(columns) if columns else None,
                "case_id": case_id,
                "detail": json.dumps(detail, sort_keys=True, default=str) if detail else None,
                "prev_hash": prev,
            }
            body["hash"] = _digest(body)
            head = (
                self.signer.sign(body["seq"], body["hash"], body["ts"])
                if self.signer
                else SignedHead(body["seq"], body["hash"])
            )
            self._write_entry(_canonical(body) + b"\n", head)
        return AuditEntry.from_json(body)

    def _write_entry(self, line: bytes, head: SignedHead) -> None:
        """Append one entry and move HEAD to it, both or neither: a write cut short (a full disk)
        would otherwise leave half a line that the next entry is glued to, or a HEAD behind the
        log, and the chain would read as tampered with."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        tmp = self.head_path.with_suffix(".tmp")
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                tmp.write_text(head.to_json() + "\n")
                os.replace(tmp, self.head_path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                tmp.unlink(missing_ok=True)
                raise
        finally:
            os.close(fd)

    def head_before(self, when: datetime) -> tuple[int, str]:
        """(seq, hash) of the last entry written before ``when`` ((0, GENESIS) if none)."""
        seq, digest = 0, GENESIS
        for e in self.entries():
            ts = datetime.fromisoformat(e.ts)
            if (ts if ts.tzinfo else ts.replace(tzinfo=UTC)) >= when:
                break
            seq, digest = e.seq, e.hash
        return seq, digest

    def sign_head(self, seq: int, digest: str) -> SignedHead:
        """A head signed now by the audit key (unsigned without one)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return self.signer.sign(seq, digest, now) if self.signer else SignedHead(seq, digest)

    def keep_published(self, head: SignedHead) -> None:
        """Keep a copy of a head sent outside in the store: verify compares against it too, which
        catches a careless cut even when the outside copies are not at hand."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.published_path.open("a", encoding="utf-8") as fh:
            fh.write(head.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _published_heads(
        self, given: Sequence[tuple[str, SignedHead]]
    ) -> tuple[list[tuple[str, SignedHead]], list[str], str | None]:
        """The signed heads to compare against, notes, and the first problem found among them.

        Heads from outside the store (``given``, the file sinks) must all be validly signed: one
        that is not was forged or altered. Copies kept in the store count only when signed; a
        bad signature there is reported too.
        """
        outside = list(given)
        for path in self.published_files:
            if path.exists():
                outside += read_heads(path)
        kept = read_heads(self.published_path) if self.published_path.exists() else []
        notes: list[str] = []
        if not self.verifier:
            if outside:
                return [], notes, "published heads cannot be checked: no [audit] public_key"
            if kept:
                notes.append("published heads kept in the store not checked (no public key)")
            return [], notes, None
        heads: list[tuple[str, SignedHead]] = []
        seen: set[SignedHead] = set()  # the store's copy of a head also in a sink counts once
        for where, head in outside:
            problem = self.verifier.problem(head)
            if problem:
                return [], notes, f"published head of entry {head.seq} ({where}): {problem}"
            if head not in seen:
                seen.add(head)
                heads.append((where, head))
        for where, head in kept:
            if not head.sig or head in seen:
                continue
            problem = self.verifier.problem(head)
            if problem:
                return [], notes, f"head of entry {head.seq} kept in {where}: {problem}"
            seen.add(head)
            heads.append((where, head))
        return heads, notes, None

    def entries(self) -> Iterator[AuditEntry]:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for line in fh:
                yield AuditEntry.from_json(json.loads(line))

    def verify(self, published: Sequence[tuple[str, SignedHead]] = ()) -> Verification:
        """Check the chain, ``HEAD`` (and its signature when a public key is configured) and the
        log against every published head: ``published`` (``(where, head)`` pairs, e.g. from
        :func:`~mamori.governance.audit_keys.read_heads`), the file sinks and the copies kept."""
        try:
            heads, notes, problem = self._published_heads(published)
        except (OSError, ValueError) as exc:
            return Verification(False, 0, None, f"published heads unreadable: {exc}")
        if problem:
            return Verification(False, 0, None, problem)
        wanted = {h.seq for _, h in heads if h.seq > 0}
        at: dict[int, str] = {}
        prev = GENESIS
        count = 0
        if self.path.exists():
            with self.path.open("rb") as fh:
                for count, raw in enumerate(fh, start=1):
                    line = raw[:-1] if raw.endswith(b"\n") else raw
                    try:
                        obj = json.loads(line)
                        body = {k: obj[k] for k in _FIELDS}
                        claimed = obj["hash"]
                    except (ValueError, KeyError, TypeError):
                        return Verification(False, count - 1, count, "not a well-formed entry")
                    if not raw.endswith(b"\n"):
                        return Verification(False, count - 1, count, "entry is cut short")
                    if set(obj) != {*_FIELDS, "hash"}:
                        return Verification(False, count - 1, count, "unexpected fields")
                    if obj["seq"] != count:
                        return Verification(
                            False,
                            count - 1,
                            count,
                            f"sequence number {obj['seq']} where {count} was expected "
                            "(entries deleted, inserted or reordered)",
                        )
                    if obj["prev_hash"] != prev:
                        return Verification(
                            False,
                            count - 1,
                            count,
                            "prev_hash does not match the previous entry (chain broken)",
                        )
                    if _digest(body) != claimed or _canonical(obj) != line:
                        return Verification(False, count - 1, count, "entry content was altered")
                    prev = claimed
                    if count in wanted:
                        at[count] = claimed
        for where, pub in sorted(heads, key=lambda wh: wh[1].seq):
            if pub.seq == 0:
                continue
            if pub.seq > count:
                return Verification(
                    False,
                    count,
                    count + 1,
                    f"the log has {count} entries but entry {pub.seq} was published "
                    f"({where}, signed {pub.ts}): entries removed",
                )
            if at[pub.seq] != pub.hash:
                return Verification(
                    False,
                    count,
                    pub.seq,
                    f"entry {pub.seq} is not the one published ({where}, signed {pub.ts}): an "
                    f"entry at or before it was deleted, inserted or altered and the chain "
                    "recomputed",
                )
        head = SignedHead(0, GENESIS)
        if self.head_path.exists():
            try:
                head = SignedHead.from_mapping(json.loads(self.head_path.read_text()))
            except (ValueError, KeyError, TypeError):
                return Verification(False, count, count + 1, "HEAD file is unreadable")
        elif count:
            return Verification(False, count, count + 1, "HEAD file is missing")
        head_seq, head_hash = head.seq, head.hash
        if head_seq != count or head_hash != prev:
            return Verification(
                False,
                count,
                min(head_seq, count) + 1 if head_seq > count else count,
                f"log ends at entry {count} but HEAD records entry {head_seq} "
                "(entries cut off the end, or HEAD altered)",
            )
        signed = False
        if self.verifier and (count or self.head_path.exists()):
            problem = self.verifier.problem(head)
            if problem:
                return Verification(
                    False,
                    count,
                    count,
                    f"HEAD (entry {head_seq}) {problem}: HEAD was rewritten without the audit "
                    "key"
                    + (
                        " (or written before [audit] signing_key was set: the next audited "
                        "action signs it)"
                        if not head.sig
                        else ""
                    ),
                )
            signed = True
        elif head.sig:
            notes.append("HEAD signature not checked (no [audit] public_key)")
        if not heads and not count:
            notes.append("nothing published to compare an empty log with")
        return Verification(
            True,
            count,
            head_signed=signed,
            published=len(heads),
            last_published=max((h.seq for _, h in heads), default=0),
            notes=tuple(notes),
            head_hash=prev,
        )
