"""Read delivered mail from a local mailbox: a Maildir (``new/`` and ``cur/``) or a folder of
``.eml`` files, so the console's mailbox page works with whatever local delivery the ISP (or the
demo's SMTP sink) writes.

Envelope addresses are taken from the headers a delivery agent adds (``Return-Path``,
``Delivered-To``), falling back to ``From`` and ``To``/``Cc`` for mail saved without them.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from pathlib import Path

__all__ = ["Mail", "read_mailbox"]


@dataclass(frozen=True)
class Mail:
    path: Path
    received: datetime
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: str


def read_mailbox(directory: Path) -> list[Mail]:
    """Every message in ``directory`` (a Maildir or a folder of ``.eml`` files), oldest first."""
    if (directory / "new").is_dir() or (directory / "cur").is_dir():
        # Maildir file names are unique, not ordered: the delivery time is the file's mtime.
        files = [
            p
            for sub in ("new", "cur")
            if (directory / sub).is_dir()
            for p in (directory / sub).iterdir()
            if p.is_file() and not p.name.startswith(".")
        ]
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    else:
        files = sorted(directory.glob("*.eml"))
    return [_read(path) for path in files]


def _read(path: Path) -> Mail:
    # SMTP carries CRLF line ends; readers want the text as it was written.
    raw = path.read_bytes().replace(b"\r\n", b"\n")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(preferencelist=("plain", "html"))
    body = part.get_content() if part is not None else ""
    delivered = [str(v) for v in msg.get_all("Delivered-To", [])]
    if not delivered:
        delivered = [str(v) for v in (*msg.get_all("To", []), *msg.get_all("Cc", []))]
    recipients = tuple(addr for _, addr in getaddresses(delivered) if addr)
    sender = parseaddr(str(msg.get("Return-Path") or msg.get("From") or ""))[1]
    return Mail(
        path=path,
        received=datetime.fromtimestamp(path.stat().st_mtime, UTC),
        sender=sender,
        recipients=recipients,
        subject=str(msg.get("Subject", "")),
        body=str(body),
    )
