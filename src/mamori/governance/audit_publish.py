"""Publishing the audit log's signed head outside the store.

A head sent to a sink the store's owner cannot rewrite outlives any later cut, deletion or
recomputation of the log: :meth:`AuditLog.verify` compares the log against it. Two sinks:

* ``syslog://HOST:PORT``: one RFC 5424 message over TCP, framed by octet counting (RFC 6587
  §3.4.1: ``LENGTH SP SYSLOG-MSG``, no trailing newline), facility 13 (log audit), severity 5
  (notice), APP-NAME ``mamori``, MSGID ``audit-head``, no structured data, and the head as one line
  of JSON for its MSG. A collector such as rsyslog writes it to its own append-only store; the JSON
  at the end of each of those lines is what ``mamori audit verify --published FILE`` reads back;
* ``file:PATH``: one JSON line appended (and fsynced) to a file on another mount; verify reads the
  configured file sinks itself.

Run it periodically (a systemd timer or cron job as the audit role, e.g. hourly): entries after the
last published head are protected by the signed ``HEAD`` only.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mamori.governance.audit import AuditLog
from mamori.governance.audit_keys import SignedHead, inside

__all__ = ["PublishError", "Sink", "parse_sink", "publish_head", "syslog_message"]

FACILITY_LOG_AUDIT = 13
SEVERITY_NOTICE = 5
_SYSLOG = re.compile(
    r"^syslog://(\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:/\[\]]+)):(?P<port>\d+)$"
)


class PublishError(Exception):
    """The head could not be published (no key, a broken log, a sink that refused it)."""


@dataclass(frozen=True)
class Sink:
    kind: str  # "syslog" or "file"
    host: str = ""
    port: int = 0
    path: Path | None = None

    def __str__(self) -> str:
        return f"file:{self.path}" if self.kind == "file" else f"syslog://{self.host}:{self.port}"


def parse_sink(text: str) -> Sink:
    if text.startswith("file:") and len(text) > len("file:"):
        return Sink("file", path=Path(text[len("file:") :]).expanduser())
    m = _SYSLOG.match(text)
    if m and 0 < int(m.group("port")) < 65536:
        return Sink("syslog", host=m.group("v6") or m.group("host"), port=int(m.group("port")))
    raise PublishError(f"sink {text!r}: expected syslog://HOST:PORT or file:PATH")


def _header_field(text: str, limit: int) -> str:
    # RFC 5424 header fields are printable US-ASCII without spaces; "-" is the nil value.
    cleaned = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def syslog_message(
    head: SignedHead, *, hostname: str | None = None, now: datetime | None = None
) -> bytes:
    """The RFC 5424 SYSLOG-MSG carrying ``head`` (without the octet-count frame)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pri = FACILITY_LOG_AUDIT * 8 + SEVERITY_NOTICE
    host = _header_field(hostname if hostname is not None else socket.gethostname(), 255)
    header = f"<{pri}>1 {stamp} {host} mamori {os.getpid()} audit-head -"
    return f"{header} {head.to_json()}".encode("ascii")


def _send_syslog(sink: Sink, head: SignedHead, timeout: float) -> None:
    msg = syslog_message(head)
    frame = str(len(msg)).encode() + b" " + msg
    try:
        with socket.create_connection((sink.host, sink.port), timeout=timeout) as conn:
            conn.sendall(frame)
            # Half-close, then give the collector a moment to close its side: once it has, it
            # has read the whole frame. One that keeps the connection open is not an error.
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(min(timeout, 2.0))
            with contextlib.suppress(TimeoutError):
                while conn.recv(4096):
                    pass
    except OSError as exc:
        raise PublishError(f"{sink}: {exc.strerror or exc}") from None


def _append_file(sink: Sink, head: SignedHead, store: Path) -> None:
    assert sink.path is not None
    if inside(sink.path, store):
        raise PublishError(f"{sink} is inside the store {store}; publish to another mount")
    try:
        fd = os.open(sink.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(head.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise PublishError(f"{sink}: {exc.strerror or exc}") from None


def publish_head(
    log: AuditLog, sinks: Sequence[str | Sink], *, store: Path, timeout: float = 10.0
) -> SignedHead:
    """Verify the log, sign its head now and send it to every sink; keep a copy in the store.

    Refused without a signing key (an unsigned head proves nothing) and for a log that does not
    verify (publishing would vouch for the tampering). Raises :class:`PublishError` naming the
    first sink that failed; the sinks before it have the head.
    """
    if log.signer is None:
        raise PublishError("no [audit] signing_key: an unsigned head proves nothing")
    parsed = [s if isinstance(s, Sink) else parse_sink(s) for s in sinks]
    if not parsed:
        raise PublishError("no sink: give --to or set [audit] publish_to")
    result = log.verify()
    if not result.ok:
        raise PublishError(f"not publishing a log that does not verify: {result}")
    head = log.sign_head(result.entries, result.head_hash)
    for sink in parsed:
        if sink.kind == "file":
            _append_file(sink, head, store)
        else:
            _send_syslog(sink, head, timeout)
    log.keep_published(head)
    return head
