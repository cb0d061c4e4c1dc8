"""Consent-page tokens: round trip, altered, expired, key kept across restarts."""

from __future__ import annotations

import time

import pytest

from mamori.config import MamoriConfig
from mamori.governance.tokens import TokenError, consent_token, secret_key, verify_consent_token


def test_round_trip(config: MamoriConfig) -> None:
    tok = consent_token(config, "sub-0042")
    assert verify_consent_token(config, tok) == "sub-0042"


@pytest.mark.parametrize("ch", ["A", "B", "w", "_"])
def test_altered_token_refused(config: MamoriConfig, ch: str) -> None:
    # Every position, including each part's last character, whose low bits base64 leaves unused
    # (CI once saw an 'A'->'B' change there verify).
    tok = consent_token(config, "sub-0042")
    for pos in range(len(tok)):
        if tok[pos] in (ch, "."):
            continue
        bad = tok[:pos] + ch + tok[pos + 1 :]
        with pytest.raises(TokenError, match="not valid"):
            verify_consent_token(config, bad)


def test_expired_token_refused(config: MamoriConfig) -> None:
    tok = consent_token(config, "sub-0042")
    time.sleep(1.1)
    with pytest.raises(TokenError, match="expired"):
        verify_consent_token(config, tok, max_age_s=0)


def test_key_generated_once_and_private(config: MamoriConfig) -> None:
    k1 = secret_key(config)
    assert secret_key(config) == k1
    path = config.store / "_state" / "web" / "secret_key"
    assert path.stat().st_mode & 0o077 == 0
    other = config.model_copy(update={"store": config.store.parent / "other"})
    with pytest.raises(TokenError):
        verify_consent_token(other, consent_token(config, "sub-1"))
