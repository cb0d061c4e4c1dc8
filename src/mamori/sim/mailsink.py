"""The simulated subscribers' mailboxes: a real SMTP server (aiosmtpd) on 127.0.0.1.

The demo points Mamori's alert mailer at it, so alerts travel over SMTP exactly as they would to
the ISP's outbound relay; each accepted message is kept as an ``.eml`` file, with the envelope in
the headers a delivery agent adds (``Return-Path``, ``Delivered-To``), in a directory that the
console's mailbox page reads (:mod:`mamori.web.maildir`). Tests use it as their SMTP server too.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["MailSink"]


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
            f"Return-Path: <{envelope.mail_from}>\r\n"
            + "".join(f"Delivered-To: {rcpt}\r\n" for rcpt in envelope.rcpt_tos)
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

    def count(self) -> int:
        """Messages kept so far."""
        return sum(1 for _ in self.directory.glob("*.eml"))
