"""Publishing the signed audit head: RFC 5424 over TCP to a real listener on loopback, the file
sink, the transparency report's head, and the `mamori audit` commands end to end."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.governance import Governance
from mamori.governance.audit import AuditLog
from mamori.governance.audit_keys import generate_key, load_signer, read_heads
from mamori.governance.audit_publish import (
    PublishError,
    parse_sink,
    publish_head,
    syslog_message,
)
from mamori.report.transparency import build_report
from tests.conftest import make_config

runner = CliRunner()

# RFC 5424 §6: HEADER SP STRUCTURED-DATA [SP MSG]
RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) "
    rb"(?P<ts>-|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)) "
    rb"(?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) "
    rb"(?P<msgid>[!-~]{1,32}) (?P<sd>-|(?:\[[^\]]*\])+)(?: (?P<msg>.*))?$",
    re.DOTALL,
)


class Listener:
    """A syslog collector on loopback: records the bytes of each connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.received.append(data)

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def octet_counted_frames(data: bytes) -> list[bytes]:
    """RFC 6587 §3.4.1: MSG-LEN SP SYSLOG-MSG, repeated; anything else is a framing error."""
    frames = []
    while data:
        m = re.match(rb"^([1-9]\d*) ", data)
        assert m, f"not octet-counted: {data[:40]!r}"
        length = int(m.group(1))
        start = m.end()
        assert len(data) >= start + length, "frame shorter than its count"
        frames.append(data[start : start + length])
        data = data[start + length :]
    return frames


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[AuditLog, Path]:
    (tmp_path / "keys").mkdir()
    generate_key(tmp_path / "keys" / "audit.key")
    store = tmp_path / "store"
    log = AuditLog(
        store / "audit", signer=load_signer(tmp_path / "keys" / "audit.key", store=store)
    )
    for i in range(5):
        log.append(actor="t", event="access", detail={"i": i})
    return log, store


def test_syslog_head_over_tcp_is_rfc5424_octet_counted(
    keyed: tuple[AuditLog, Path], listener: Listener, tmp_path: Path
) -> None:
    log, store = keyed
    head = publish_head(log, [f"syslog://127.0.0.1:{listener.port}"], store=store)
    assert head.seq == 5 and head.sig
    for _ in range(500):  # the collector finishes recording once it has seen our close
        if listener.received:
            break
        threading.Event().wait(0.01)
    (data,) = listener.received
    (frame,) = octet_counted_frames(data)
    m = RFC5424.match(frame)
    assert m, frame
    assert int(m["pri"]) == 13 * 8 + 5  # log audit, notice
    assert m["version"] == b"1" and m["app"] == b"mamori" and m["msgid"] == b"audit-head"
    assert m["sd"] == b"-"
    assert json.loads(m["msg"]) == json.loads(head.to_json())
    # what a collector stores is one line per message; verify reads the head back from it
    saved = tmp_path / "collector.log"
    saved.write_bytes(b"Nov 30 12:00:00 other: something else\n" + frame + b"\n")
    assert [h for _, h in read_heads(saved)] == [head]
    log.append(actor="t", event="later")
    assert log.verify(read_heads(saved)).ok
    (store / "audit" / "published.jsonl").unlink()
    (store / "audit" / "audit.jsonl").write_bytes(b"")
    (store / "audit" / "HEAD").unlink()
    result = log.verify(read_heads(saved))
    assert not result.ok and "0 entries but entry 5 was published" in result.reason


def test_syslog_message_fields_are_clean() -> None:
    from mamori.governance.audit_keys import SignedHead

    msg = syslog_message(
        SignedHead(1, "a" * 64), hostname="bad host\n", now=datetime(2026, 11, 30, tzinfo=UTC)
    )
    m = RFC5424.match(msg)
    assert m and m["host"] == b"badhost" and m["ts"] == b"2026-11-30T00:00:00.000000Z"


def test_unreachable_syslog_is_an_error(keyed: tuple[AuditLog, Path]) -> None:
    log, store = keyed
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(PublishError, match=f"syslog://127.0.0.1:{port}"):
        publish_head(log, [f"syslog://127.0.0.1:{port}"], store=store, timeout=2)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("syslog://127.0.0.1:514", "syslog"),
        ("syslog://[::1]:6514", "syslog"),
        ("syslog://log.example.net:514", "syslog"),
        ("file:/mnt/audit/heads.jsonl", "file"),
        ("syslog://host", None),
        ("syslog://host:0", None),
        ("http://host:514", None),
        ("file:", None),
    ],
)
def test_parse_sink(text: str, kind: str | None) -> None:
    if kind is None:
        with pytest.raises(PublishError):
            parse_sink(text)
    else:
        assert parse_sink(text).kind == kind


def test_transparency_report_carries_the_signed_head(tmp_path: Path) -> None:
    generate_key(tmp_path / "audit.key")
    config = make_config(tmp_path / "store")
    config = config.model_copy(
        update={"audit": config.audit.model_copy(update={"signing_key": tmp_path / "audit.key"})}
    )
    gov = Governance(config)
    try:
        for state in ("out", "in"):
            gov.consent.set("sub-1", "M4", state == "in", actor="t", channel="web")
        report = build_report(gov, datetime.now(UTC).strftime("%Y-%m"), actor="t")
        head = report.audit_head
        assert head is not None and head.sig and head.seq >= 2
        assert head.hash == next(e.hash for e in gov.audit.entries() if e.seq == head.seq)
        assert not any("not signed" in n for n in report.notes)
        saved = tmp_path / "report.json"
        saved.write_text(report.model_dump_json(indent=1))
        assert gov.audit.verify(read_heads(saved)).ok
        # a month that ended before the first entry: the head of nothing
        assert build_report(gov, "2020-01", actor="t").audit_head.seq == 0  # type: ignore[union-attr]
        # the report pins the log: cut it after the report, and the report says so
        lines = gov.audit.path.read_bytes().splitlines(keepends=True)
        gov.audit.path.write_bytes(b"".join(lines[:1]))
        result = gov.audit.verify(read_heads(saved))
        assert not result.ok and "was published" in result.reason
    finally:
        gov.close()


def test_unsigned_report_head_says_so(gov: Governance) -> None:
    gov.audit.append(actor="t", event="x")
    report = build_report(gov, datetime.now(UTC).strftime("%Y-%m"), actor="t")
    assert report.audit_head is not None and report.audit_head.sig is None
    assert any("not signed" in n for n in report.notes)


def test_cli_keygen_publish_verify(tmp_path: Path) -> None:
    store = tmp_path / "store"
    sink = tmp_path / "other-mount" / "heads.jsonl"
    sink.parent.mkdir()
    key = tmp_path / "keys" / "audit.key"
    key.parent.mkdir()
    conf = tmp_path / "mamori.toml"
    conf.write_text(f'store = "{store}"\n')
    base = ["--config", str(conf)]

    r = runner.invoke(app, [*base, "audit", "keygen", "--out", str(store / "audit.key")])
    assert r.exit_code == 2 and "inside the store" in r.output
    r = runner.invoke(app, [*base, "audit", "keygen", "--out", str(key)])
    assert r.exit_code == 0, r.output
    public = r.stdout.strip()
    assert public.startswith("ed25519:") and key.stat().st_mode & 0o777 == 0o600
    conf.write_text(
        f'store = "{store}"\n[audit]\nsigning_key = "{key}"\npublic_key = "{public}"\n'
        f'publish_to = ["file:{sink}"]\n'
    )
    for sub in ("a", "b", "c"):
        r = runner.invoke(app, [*base, "consent", "set", "-s", sub, "-m", "M7", "--state", "out"])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*base, "audit", "publish"])
    assert r.exit_code == 0, r.output
    assert "published the head of entry 3" in r.output
    r = runner.invoke(app, [*base, "audit", "verify"])
    assert r.exit_code == 0 and "HEAD signed" in r.output and "published head" in r.output

    # (b) of the issue through the command line: both files gone, the sink remembers
    (store / "audit" / "audit.jsonl").unlink()
    (store / "audit" / "HEAD").unlink()
    r = runner.invoke(app, [*base, "audit", "verify"])
    assert r.exit_code == 1 and "0 entries but entry 3 was published" in r.output
    r = runner.invoke(app, [*base, "audit", "publish"])
    assert r.exit_code == 1 and "does not verify" in r.output

    r = runner.invoke(app, [*base, "audit", "verify", "--published", str(tmp_path / "none")])
    assert r.exit_code == 2 and "cannot read published heads" in r.output


def test_cli_key_inside_store_via_store_flag_is_refused(tmp_path: Path) -> None:
    # --store overrides the file after validation; the key is checked again when opened
    store = tmp_path / "store"
    store.mkdir()
    generate_key(store / "audit.key")
    conf = tmp_path / "mamori.toml"
    conf.write_text(f'[audit]\nsigning_key = "{store}/audit.key"\n')
    r = runner.invoke(app, ["--config", str(conf), "--store", str(store), "audit", "verify"])
    assert r.exit_code == 2 and "inside the store" in r.output
