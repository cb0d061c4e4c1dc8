"""The audit log against the store's own owner (issue 15, item 5).

The three attacks of the issue passed the old ``verify`` (the chain and an unsigned HEAD only):
(a) cut the last 10 entries and rewrite HEAD; (b) delete both files; (c) delete an entry and
recompute the chain. Each is now caught by a signed HEAD, by a head published outside the store,
or by both. The attacks use only the standard library: they are what an owner without the audit
key can do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mamori.config import ConfigError, load_config
from mamori.governance.audit import AuditLog
from mamori.governance.audit_keys import (
    AuditKeyError,
    HeadVerifier,
    SignedHead,
    generate_key,
    load_signer,
    read_heads,
)
from mamori.governance.audit_publish import PublishError, publish_head

ENTRIES = 25
PUBLISHED_AT = 20  # a head was published when the log had this many entries


# --------------------------------------------------------------------------- the attacks


def _lines(audit: Path) -> list[bytes]:
    return (audit / "audit.jsonl").read_bytes().splitlines(keepends=True)


def _forge_head(audit: Path, seq: int, digest: str) -> None:
    # what the old append wrote: no signature
    (audit / "HEAD").write_text(json.dumps({"seq": seq, "hash": digest}) + "\n")


def cut_last_10(audit: Path) -> None:
    lines = _lines(audit)[:-10]
    (audit / "audit.jsonl").write_bytes(b"".join(lines))
    last = json.loads(lines[-1])
    _forge_head(audit, last["seq"], last["hash"])


def cut_last_10_keep_signature(audit: Path) -> None:
    """(a), HEAD's signature fields left as they were: they sign another entry."""
    old = json.loads((audit / "HEAD").read_text())
    cut_last_10(audit)
    new = json.loads((audit / "HEAD").read_text())
    (audit / "HEAD").write_text(json.dumps({**old, "seq": new["seq"], "hash": new["hash"]}))


def cut_last_10_replay_head(audit: Path) -> None:
    """(a) done by an owner who saved the validly signed HEAD of entry 15 back then."""
    saved = (audit / "HEAD.at15").read_text()
    (audit / "audit.jsonl").write_bytes(b"".join(_lines(audit)[:-10]))
    (audit / "HEAD").write_text(saved)


def delete_both_files(audit: Path) -> None:
    (audit / "audit.jsonl").unlink()
    (audit / "HEAD").unlink()


def delete_audit_directory(audit: Path) -> None:
    shutil.rmtree(audit)


def _recompute(audit: Path, drop: int) -> None:
    entries = [json.loads(x) for x in _lines(audit)]
    del entries[drop - 1]
    prev = "0" * 64
    out = []
    for seq, e in enumerate(entries, start=1):
        body = {k: v for k, v in e.items() if k != "hash"} | {"seq": seq, "prev_hash": prev}
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        body["hash"] = prev = hashlib.sha256(canon.encode()).hexdigest()
        out.append(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    (audit / "audit.jsonl").write_text("\n".join(out) + "\n")
    _forge_head(audit, len(entries), prev)


def delete_entry_5_recompute(audit: Path) -> None:
    _recompute(audit, 5)


def delete_entry_22_recompute(audit: Path) -> None:
    """(c) after the last published head: only the signed HEAD can tell."""
    _recompute(audit, 22)


# --------------------------------------------------------------------------- the store


@dataclass
class Setup:
    store: Path
    key: Path
    sink: Path  # a file "on another mount": outside the store

    @property
    def audit(self) -> Path:
        return self.store / "audit"

    def log(self, *, sign: bool = True, published: bool = True) -> AuditLog:
        signer = load_signer(self.key, store=self.store) if sign else None
        return AuditLog(
            self.audit,
            signer=signer,
            verifier=HeadVerifier([Path(f"{self.key}.pub").read_text()]),
            published_files=(self.sink,) if published else (),
        )


def _append(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(actor=f"analyst:{i}", event="access", measure="M4", detail={"n": i})


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    (tmp_path / "keys").mkdir()
    (tmp_path / "elsewhere").mkdir()
    s = Setup(tmp_path / "store", tmp_path / "keys" / "audit.key", tmp_path / "elsewhere" / "h")
    generate_key(s.key, store=s.store)
    log = s.log()
    _append(log, 15)
    shutil.copy(s.audit / "HEAD", s.audit / "HEAD.at15")
    _append(log, PUBLISHED_AT - 15)
    publish_head(log, [f"file:{s.sink}"], store=s.store)
    _append(log, ENTRIES - PUBLISHED_AT)
    assert log.verify().ok
    return s


# (attack, what catches it, words of the reason)
CASES: list[tuple[Callable[[Path], None], str, str]] = [
    (cut_last_10, "signed HEAD", "HEAD (entry 15) not signed"),
    (cut_last_10_keep_signature, "signed HEAD", "signature does not match"),
    (cut_last_10, "published head", "the log has 15 entries but entry 20 was published"),
    (cut_last_10_replay_head, "published head", "the log has 15 entries but entry 20"),
    (delete_both_files, "published head", "the log has 0 entries but entry 20 was published"),
    (delete_audit_directory, "published head", "the log has 0 entries but entry 20"),
    (delete_entry_5_recompute, "signed HEAD", "HEAD (entry 24) not signed"),
    (delete_entry_5_recompute, "published head", "entry 20 is not the one published"),
    (delete_entry_22_recompute, "signed HEAD", "HEAD (entry 24) not signed"),
]


@pytest.mark.parametrize(
    ("attack", "defence", "reason"), CASES, ids=[f"{a.__name__}-{d}" for a, d, _ in CASES]
)
def test_tampering_by_the_owner_is_detected(
    setup: Setup, attack: Callable[[Path], None], defence: str, reason: str
) -> None:
    attack(setup.audit)
    # each defence on its own: the signed HEAD without the published heads, and the other way
    log = setup.log(published=defence == "published head")
    log.published_path.unlink(missing_ok=True)  # the copy kept in the store: tested below
    result = log.verify()
    assert not result.ok, result
    assert reason in result.reason, result.reason
    assert "BROKEN" in str(result)


def test_copy_kept_in_the_store_catches_a_careless_cut(setup: Setup) -> None:
    cut_last_10_replay_head(setup.audit)
    result = setup.log(published=False).verify()
    assert not result.ok and "entry 20 was published" in result.reason
    assert "published.jsonl" in result.reason


def test_valid_log_with_published_heads_verifies(setup: Setup, tmp_path: Path) -> None:
    log = setup.log()
    publish_head(log, [f"file:{setup.sink}"], store=setup.store)  # a second head, at 25
    _append(log, 3)
    result = log.verify()
    assert result.ok, result
    assert result.head_signed and result.entries == ENTRIES + 3
    assert result.last_published == ENTRIES
    assert "HEAD signed" in str(result) and "signed published head(s)" in str(result)
    # the same heads given explicitly (a saved list) agree too
    saved = tmp_path / "saved.txt"
    saved.write_text("unrelated syslog line\n" + setup.sink.read_text())
    assert setup.log(published=False).verify(read_heads(saved)).ok


def test_forged_head_signature_is_detected(setup: Setup, tmp_path: Path) -> None:
    head = json.loads((setup.audit / "HEAD").read_text())
    # signed, but by the owner's own key
    generate_key(tmp_path / "mine.key")
    mine = load_signer(tmp_path / "mine.key", store=setup.store)
    (setup.audit / "HEAD").write_text(mine.sign(head["seq"], head["hash"], head["ts"]).to_json())
    result = setup.log().verify()
    assert not result.ok and "signed by a key that is not configured" in result.reason
    # the right key's name, a made-up signature
    sig = bytearray(head["sig"].encode())
    sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
    (setup.audit / "HEAD").write_text(json.dumps({**head, "sig": sig.decode()}))
    result = setup.log().verify()
    assert not result.ok and "signature does not match" in result.reason


def test_forged_published_head_is_detected(setup: Setup) -> None:
    entries = [json.loads(x) for x in _lines(setup.audit)]
    unsigned = SignedHead(3, entries[2]["hash"])
    with setup.sink.open("a") as fh:
        fh.write(unsigned.to_json() + "\n")
    result = setup.log().verify()
    assert not result.ok and "published head of entry 3" in result.reason
    assert "not signed" in result.reason


def test_unsigned_copy_in_the_store_is_ignored_a_bad_one_reported(setup: Setup) -> None:
    log = setup.log(published=False)
    log.keep_published(SignedHead(ENTRIES + 5, "f" * 64))  # unsigned: anyone could write it
    assert log.verify().ok
    head = json.loads(log.published_path.read_text().splitlines()[0])
    log.keep_published(SignedHead.from_mapping({**head, "seq": ENTRIES + 5}))
    result = log.verify()
    assert not result.ok and "signature does not match" in result.reason


def test_heads_without_a_public_key_are_not_trusted(setup: Setup) -> None:
    log = AuditLog(setup.audit, published_files=(setup.sink,))
    result = log.verify()
    assert not result.ok and "no [audit] public_key" in result.reason


def test_publishing_needs_the_key_and_an_intact_log(setup: Setup) -> None:
    with pytest.raises(PublishError, match="no \\[audit\\] signing_key"):
        publish_head(setup.log(sign=False), [f"file:{setup.sink}"], store=setup.store)
    with pytest.raises(PublishError, match="inside the store"):
        publish_head(setup.log(), [f"file:{setup.store}/heads"], store=setup.store)
    before = setup.sink.read_text()
    cut_last_10(setup.audit)
    with pytest.raises(PublishError, match="does not verify"):
        publish_head(setup.log(), [f"file:{setup.sink}"], store=setup.store)
    assert setup.sink.read_text() == before  # nothing vouched for the cut log


def test_key_inside_the_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "keys").mkdir(parents=True)
    with pytest.raises(AuditKeyError, match="inside the store"):
        generate_key(store / "keys" / "audit.key", store=store)
    assert not (store / "keys" / "audit.key").exists()
    generate_key(tmp_path / "audit.key")
    shutil.copy(tmp_path / "audit.key", store / "audit.key")
    with pytest.raises(AuditKeyError, match="inside the store"):
        load_signer(store / "audit.key", store=store)
    # through a symbolic link from outside, too
    (tmp_path / "link.key").symlink_to(store / "audit.key")
    with pytest.raises(AuditKeyError, match="inside the store"):
        load_signer(tmp_path / "link.key", store=store)
    conf = tmp_path / "mamori.toml"
    conf.write_text(f'store = "{store}"\n[audit]\nsigning_key = "{store}/audit.key"\n')
    with pytest.raises(ConfigError, match="inside the store"):
        load_config(conf)
    conf.write_text(f'store = "{store}"\n[audit]\npublish_to = ["file:{store}/audit/h"]\n')
    with pytest.raises(ConfigError, match="inside the store"):
        load_config(conf)


def test_key_file_is_private(tmp_path: Path) -> None:
    public = generate_key(tmp_path / "audit.key")
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "audit.key.pub").read_text().strip() == public
    assert public.startswith("ed25519:")
    with pytest.raises(AuditKeyError, match="exists"):
        generate_key(tmp_path / "audit.key")
    (tmp_path / "audit.key").chmod(0o640)
    with pytest.raises(AuditKeyError, match="chmod 600"):
        load_signer(tmp_path / "audit.key", store=tmp_path / "store")


def test_empty_log_is_fine_until_something_is_published(tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    signer = load_signer(tmp_path / "k", store=tmp_path / "s")
    log = AuditLog(tmp_path / "s" / "audit", signer=signer)
    result = log.verify()
    assert result.ok and "nothing published" in str(result)
    publish_head(log, [f"file:{tmp_path / 'h'}"], store=tmp_path / "s")  # the head of 0 entries
    assert AuditLog(tmp_path / "s" / "audit", signer=signer).verify().ok
