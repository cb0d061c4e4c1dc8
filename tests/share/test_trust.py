"""Trust groups, peers and keys: stored hashed, checked afresh, revocable."""

from __future__ import annotations

import stat

import pytest

from mamori.governance import Governance
from mamori.share.trust import Peer, TrustError, TrustStore


def test_key_shown_once_stored_hashed(gov: Governance) -> None:
    t = TrustStore.of(gov)
    t.set_group("isac", read=["c2"], write=["submissions"])
    key = t.add_peer("jpcert", "isac")
    assert key.startswith("mamori_")
    assert key not in t.path.read_text()
    assert "$argon2id$" in t.path.read_text()
    assert t.authenticate(key) == Peer(
        "jpcert", "isac", frozenset({"c2"}), frozenset({"submissions"})
    )
    assert t.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert "key_hash" not in t.peers()["jpcert"]


def test_revocation_and_reissue(gov: Governance) -> None:
    t = TrustStore.of(gov)
    t.set_group("g", read=["c2"], write=[])
    key = t.add_peer("p", "g")
    with pytest.raises(TrustError, match="exists"):
        t.add_peer("p", "g")
    t.revoke_peer("p")
    assert t.authenticate(key) is None
    new = t.add_peer("p", "g")
    assert t.authenticate(new) is not None and t.authenticate(key) is None


def test_group_rights_change_applies_at_once(gov: Governance) -> None:
    t = TrustStore.of(gov)
    t.set_group("g", read=["c2"], write=[])
    key = t.add_peer("p", "g")
    t.set_group("g", read=[], write=[])
    peer = t.authenticate(key)
    assert peer is not None and peer.read == frozenset()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.set_group("g", read=["nope"], write=[]), "unknown collection"),
        (lambda t: t.set_group("g", read=[], write=["c2"]), "nobody may write the c2"),
        (lambda t: t.set_group("bad name", read=[], write=[]), "bad group name"),
        (lambda t: t.add_peer("p", "missing"), "no trust group"),
        (lambda t: t.revoke_peer("ghost"), "no peer"),
        (lambda t: t.remote("ghost"), "no remote peer"),
        (lambda t: t.set_remote("r", "ftp://x", "k"), "must start with http"),
    ],
)
def test_refusals(gov: Governance, call: object, message: str) -> None:
    t = TrustStore.of(gov)
    with pytest.raises(TrustError, match=message):
        call(t)  # type: ignore[operator]


def test_remote_keys_file_is_private(gov: Governance) -> None:
    t = TrustStore.of(gov)
    t.set_remote("isp-a", "http://127.0.0.1:1/api/collections/x", "secret")
    assert stat.S_IMODE(t.remotes_path.stat().st_mode) == 0o600
    r = t.remote("isp-a")
    assert r.url.endswith("/") and r.added_after is None
    t.advance("isp-a", "2026-11-01T00:00:00.000000Z")
    assert t.remote("isp-a").added_after == "2026-11-01T00:00:00.000000Z"
