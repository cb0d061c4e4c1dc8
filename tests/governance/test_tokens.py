"""Consent-page tokens: round trip, altered, expired, key kept across restarts."""

from __future__ import annotations

import time

import pytest

from mamori.config import MamoriConfig
from mamori.governance.tokens import TokenError, consent_token, secret_key, verify_consent_token


def test_round_trip(config: MamoriConfig) -> None:
    tok = consent_token(config, "sub-0042")
    assert verify_consent_token(config, tok) == "sub-0042"


@pytest.mark.parametrize("pos", [0, 5, -1, -8])
def test_altered_token_refused(config: MamoriConfig, pos: int) -> None:
    tok = consent_token(config, "sub-0042")
    ch = "A" if tok[pos] != "A" else "B"
    bad = tok[:pos] + ch + (tok[pos + 1 :] if pos != -1 else "")
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
