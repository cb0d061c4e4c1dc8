"""Time-based one-time passwords (RFC 6238, the codes authenticator apps show) as a second factor.

Six digits, 30-second steps, HMAC-SHA1: what every authenticator app expects from an
``otpauth://totp/`` URI. A code is accepted one step either side of now, for clock drift.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from urllib.parse import quote

__all__ = ["new_secret", "provisioning_uri", "totp_at", "totp_ok"]

STEP_S = 30
DIGITS = 6


def new_secret() -> str:
    """A random base32 secret (160 bits, the size RFC 4226 recommends)."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def _key(secret: str) -> bytes:
    s = secret.strip().replace(" ", "").upper()
    return base64.b32decode(s + "=" * (-len(s) % 8))


def totp_at(secret: str, t: float) -> str:
    counter = int(t // STEP_S)
    digest = hmac.new(_key(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**DIGITS:0{DIGITS}d}"


def totp_ok(secret: str, code: str, now: float | None = None) -> bool:
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return False
    t = time.time() if now is None else now
    return any(hmac.compare_digest(totp_at(secret, t + d * STEP_S), code) for d in (-1, 0, 1))


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (typed in, or as a QR code)."""
    label = quote(f"{issuer}:{account}")
    return f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer)}&digits={DIGITS}"
