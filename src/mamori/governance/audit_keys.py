"""The audit role's Ed25519 key and the signed heads it vouches for.

A signed head says "entry ``seq`` of the audit log has hash ``hash``", signed by the audit role's
key. Because each entry hashes the one before it, that one statement fixes every entry up to
``seq``: cutting, deleting or recomputing any of them changes the hash at ``seq`` or removes it.
The store's owner can rewrite the log and ``HEAD`` but cannot sign, so a rewritten ``HEAD`` fails
its signature, and a head published outside the store (``audit_publish``) outlives the log.

The private key lives outside the store (mode 0600, refused when others may read it or when it lies
inside the store); verification needs only the public key, written ``ed25519:<base64 of the 32
raw bytes>``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "AuditKeyError",
    "HeadSigner",
    "HeadVerifier",
    "SignedHead",
    "generate_key",
    "inside",
    "load_public_keys",
    "load_signer",
    "read_heads",
]

_PREFIX = "ed25519:"
# Domain separation: a signature over a head can never be replayed as a signature over anything
# else this key might one day sign.
_CONTEXT = b"mamori-audit-head/1\n"


class AuditKeyError(ValueError):
    """The audit key is missing, unreadable, unsafe (inside the store, readable by others) or
    malformed."""


def inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or lies under it, symbolic links followed."""
    p, d = path.expanduser().resolve(), directory.expanduser().resolve()
    return p == d or d in p.parents


def _encode_public(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _PREFIX + base64.b64encode(raw).decode()


def _decode_public(text: str) -> Ed25519PublicKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise AuditKeyError("the PEM public key is not an Ed25519 key")
        return key
    if not text.startswith(_PREFIX):
        raise AuditKeyError(f"public key {text[:20]!r}…: expected ed25519:<base64> or a PEM key")
    try:
        raw = base64.b64decode(text[len(_PREFIX) :], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise AuditKeyError(f"public key {text!r} is not 32 bytes of base64") from None


@dataclass(frozen=True)
class SignedHead:
    """Entry ``seq`` of the log has ``hash``; signed at ``ts`` by ``key`` (``sig`` empty: unsigned)."""

    seq: int
    hash: str
    ts: str = ""
    key: str = ""
    sig: str = ""

    def message(self) -> bytes:
        body = {"seq": self.seq, "hash": self.hash, "ts": self.ts, "key": self.key}
        return _CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> str:
        """One line, canonical: what HEAD holds and what is published."""
        body: dict[str, Any] = {"seq": self.seq, "hash": self.hash}
        if self.sig:
            body |= {"ts": self.ts, "key": self.key, "sig": self.sig}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any]) -> SignedHead:
        seq, digest = obj["seq"], obj["hash"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"seq {seq!r} is not a sequence number")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"hash {digest!r} is not a SHA-256 hex digest")
        extra = {k: obj.get(k) or "" for k in ("ts", "key", "sig")}
        if not all(isinstance(v, str) for v in extra.values()):
            raise ValueError("ts, key and sig must be strings")
        return cls(seq=seq, hash=digest, **extra)


class HeadSigner:
    """Signs heads with the audit role's private key (about 0.1 ms each: cheap at every append)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = _encode_public(key.public_key())

    def sign(self, seq: int, digest: str, ts: str) -> SignedHead:
        unsigned = SignedHead(seq=seq, hash=digest, ts=ts, key=self.public_key)
        sig = base64.b64encode(self._key.sign(unsigned.message())).decode()
        return SignedHead(seq=seq, hash=digest, ts=ts, key=self.public_key, sig=sig)


class HeadVerifier:
    """Checks heads against the configured public keys (several during a key rotation)."""

    def __init__(self, public_keys: Iterable[str]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for text in public_keys:
            key = _decode_public(text)
            self._keys[_encode_public(key)] = key

    def __bool__(self) -> bool:
        return bool(self._keys)

    def problem(self, head: SignedHead) -> str | None:
        """Why ``head`` is not validly signed by a configured key; ``None`` when it is."""
        if not head.sig:
            return "not signed"
        key = self._keys.get(head.key)
        if key is None:
            return f"signed by a key that is not configured ({head.key[:20]}…)"
        try:
            key.verify(base64.b64decode(head.sig, validate=True), head.message())
        except (InvalidSignature, binascii.Error, ValueError):
            return "signature does not match (forged or altered)"
        return None


def generate_key(path: Path, *, store: Path | None = None) -> str:
    """Write a new private key to ``path`` (mode 0600, never over an existing file) and its public
    key beside it in ``path.pub``; return the public key."""
    if store is not None and inside(path, store):
        raise AuditKeyError(
            f"{path} is inside the store {store}: whoever owns the store could then sign; "
            "keep the audit key outside it"
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditKeyError(f"{path} exists; not overwriting a key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = _encode_public(key.public_key())
    pub_path = path.with_name(path.name + ".pub")
    pub_path.write_text(public + "\n", encoding="utf-8")
    return public


def load_signer(path: Path, *, store: Path) -> HeadSigner:
    if inside(path, store):
        raise AuditKeyError(
            f"audit signing key {path} is inside the store {store}; keep it outside the store"
        )
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        pem = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"cannot read the audit signing key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise AuditKeyError(
            f"audit signing key {path} may be read by others (mode {mode:04o}); chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise AuditKeyError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 key")
    return HeadSigner(key)


def load_public_keys(values: Iterable[str]) -> list[str]:
    """Each value is a key (``ed25519:…`` or PEM) or the path of a file holding one."""
    keys = []
    for value in values:
        text = value.strip()
        if not text.startswith((_PREFIX, "-----BEGIN")):
            try:
                text = Path(text).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise AuditKeyError(
                    f"audit public key {value!r}: neither ed25519:<base64> nor a readable file "
                    f"({exc.strerror})"
                ) from None
        keys.append(_encode_public(_decode_public(text)))
    return keys


def read_heads(path: Path) -> list[tuple[str, SignedHead]]:
    """The heads a file holds, each with where it was found (``path:line``).

    Reads the file sink (one JSON head per line), a syslog server's file (the head is the JSON at
    the end of each of our lines; other lines are skipped), or a transparency report in JSON
    (its ``audit_head``, when it has one).
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        try:
            if "audit_head" in whole:  # a transparency report
                head = whole["audit_head"]
                return [(f"{path} (audit_head)", SignedHead.from_mapping(head))] if head else []
            return [(str(path), SignedHead.from_mapping(whole))]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a head or a transparency report ({exc})") from None
    found = []
    for n, line in enumerate(text.splitlines(), start=1):
        start = line.find("{")
        if start < 0:
            continue
        try:
            obj = json.loads(line[start:])
        except ValueError:
            if '"hash"' in line:
                raise ValueError(f"{path}:{n}: a head that cannot be read") from None
            continue
        if isinstance(obj, dict) and "seq" in obj and "hash" in obj:
            try:
                found.append((f"{path}:{n}", SignedHead.from_mapping(obj)))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: {exc}") from None
    return found
