"""The simulated subscribers' mailboxes: a real SMTP server (aiosmtpd) on 127.0.0.1.

The demo points Mamori's alert mailer at it, so alerts travel over SMTP exactly as they would to
the ISP's outbound relay; each accepted message is kept as an ``.eml`` file in a directory that the
console's demo mailbox page lists. Tests use it as their SMTP server too.
"""

from __future__ import annotations

import email
import email.policy
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["Mail", "MailSink", "read_mailbox"]


@dataclass(frozen=True)
class Mail:
    path: Path
    received: datetime
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: str


class _Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._seq = len(list(directory.glob("*.eml")))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        header = (
            f"X-Mamori-Sink-From: {envelope.mail_from}\r\n"
            f"X-Mamori-Sink-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        with self._lock:
            self._seq += 1
            final = self.directory / f"{self._seq:06d}.eml"
        tmp = final.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(header + raw)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(final)
        return "250 Message accepted for delivery"


class MailSink:
    """``with MailSink(dir) as sink:`` — an SMTP server on ``sink.host``:``sink.port``."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self._want_port = port
        self.port = port
        self._controller: Controller | None = None

    def start(self) -> MailSink:
        if self._want_port == 0:
            import socket

            with socket.socket() as s:
                s.bind((self.host, 0))
                self._want_port = s.getsockname()[1]
        self.port = self._want_port
        self._controller = Controller(_Store(self.directory), hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def mails(self) -> list[Mail]:
        return read_mailbox(self.directory)


def read_mailbox(directory: Path) -> list[Mail]:
    """Every message the sink accepted, oldest first."""
    mails: list[Mail] = []
    for path in sorted(directory.glob("*.eml")):
        # SMTP carries CRLF line ends; readers want the text as it was written.
        raw = path.read_bytes().replace(b"\r\n", b"\n")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        part = msg.get_body(preferencelist=("plain", "html"))
        body = part.get_content() if part is not None else ""
        rcpts = tuple(r.strip() for r in str(msg.get("X-Mamori-Sink-To", "")).split(",") if r)
        mails.append(
            Mail(
                path=path,
                received=datetime.fromtimestamp(path.stat().st_mtime, UTC),
                sender=str(msg.get("X-Mamori-Sink-From", "")),
                recipients=rcpts,
                subject=str(msg.get("Subject", "")),
                body=str(body),
            )
        )
    return mails
