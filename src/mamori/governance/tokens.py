"""Signed, expiring tokens that let a subscriber reach their own consent page without a password.

An alert e-mail (``act``) carries a link with a token; the console (``web``) accepts it. Both sides
use this module so the format and the key are the same. The key is ``web.secret_key`` from the
configuration, or — when unset — a random key generated once and kept in the store's state
directory (mode 0600), so tokens survive restarts of the console.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from itsdangerous import BadData, BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from mamori.config import MamoriConfig

__all__ = [
    "CONSENT_TOKEN_MAX_AGE_S",
    "TokenError",
    "consent_token",
    "secret_key",
    "verify_consent_token",
]

#: how long a consent link in an alert stays valid (30 days: alerts are read late)
CONSENT_TOKEN_MAX_AGE_S = 30 * 24 * 3600

_SALT_CONSENT = "mamori-consent-page"


class TokenError(ValueError):
    """The token is malformed, altered, or expired (the message says which)."""


def secret_key(config: MamoriConfig) -> str:
    if config.web.secret_key is not None:
        return config.web.secret_key.get_secret_value()
    path: Path = config.store / "_state" / "web" / "secret_key"
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting together must agree on one key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    return key


def _serializer(config: MamoriConfig) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(config), salt=_SALT_CONSENT)


def _canonical(token: str) -> bool:
    """Whether every part of the token is base64 as we would have written it.

    Base64 leaves the low bits of a part's last character unused, so without this check some
    one-character alterations of a link would still verify: harmless (the signed bytes are the
    same) but it makes "an altered link is refused" untrue, and a link is either ours or not.
    """
    try:
        return all(base64_encode(base64_decode(p)) == p.encode("ascii") for p in token.split("."))
    except (BadData, UnicodeEncodeError):
        return False


def consent_token(config: MamoriConfig, subscriber_id: str) -> str:
    """A token naming ``subscriber_id``, for the consent page link in an alert."""
    return str(_serializer(config).dumps({"s": subscriber_id}))


def verify_consent_token(
    config: MamoriConfig, token: str, max_age_s: int = CONSENT_TOKEN_MAX_AGE_S
) -> str:
    """The subscriber a token names; raises :class:`TokenError` if altered or expired."""
    if not _canonical(token):
        raise TokenError("the link is not valid (altered or not issued by this ISP)")
    try:
        data = _serializer(config).loads(token, max_age=max_age_s)
    except SignatureExpired:
        raise TokenError("the link has expired; ask the ISP for a new one") from None
    except BadSignature:
        raise TokenError("the link is not valid (altered or not issued by this ISP)") from None
    if not isinstance(data, dict) or not isinstance(data.get("s"), str):
        raise TokenError("the link is not valid (no subscriber)")
    return str(data["s"])
