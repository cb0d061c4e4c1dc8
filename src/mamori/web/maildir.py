"""Read delivered mail from a local mailbox: a Maildir (``new/`` and ``cur/``) or a folder of
``.eml`` files, so the console's mailbox page works with whatever local delivery the ISP (or the
demo's SMTP sink) writes.

Envelope addresses are taken from the headers a delivery agent adds (``Return-Path``,
``Delivered-To``), falling back to ``From`` and ``To``/``Cc`` for mail saved without them.

What the list needs of each message (sender, recipients, subject, case) is kept in a small index
next to the messages (``.mamori-index.arrow``, an Arrow IPC file in the mailbox's folder, where
mail clients look for nothing), so a start does not parse a hundred thousand files: only the files the index does
not name yet are parsed. Maildir file names are unique and a message's file is never rewritten
(a move to ``cur/`` gives it a new name), so a name the index knows is the message it indexed.
Bodies are read from the file when a page shows them. A mailbox folder the console may not write
to is indexed in memory only.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import overload

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Mail", "MailList", "read_mailbox"]


@dataclass(frozen=True)
class Mail:
    path: Path
    received: datetime
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    # the case and alert an alert mail is about (``X-Mamori-Case``, ``Message-ID``)
    case_id: str | None = None
    message_id: str | None = None


INDEX_NAME = ".mamori-index.arrow"
INDEX_SCHEMA = pa.schema(
    [
        ("name", pa.string()),  # relative to the mailbox folder: new/…, cur/… or ….eml
        ("received", pa.timestamp("us", "UTC")),
        ("sender", pa.string()),
        ("recipients", pa.string()),  # one per line
        ("subject", pa.string()),
        ("case_id", pa.string()),
        ("message_id", pa.string()),
    ]
)


class MailList(Sequence[Mail]):
    """The messages of a mailbox, oldest first, as the index table; a :class:`Mail` (with its
    body, read from its file) is made only for the messages asked for."""

    def __init__(self, directory: Path, table: pa.Table) -> None:
        self.directory = directory
        self.table = table

    def __len__(self) -> int:
        return int(self.table.num_rows)

    @overload
    def __getitem__(self, i: int) -> Mail: ...
    @overload
    def __getitem__(self, i: slice) -> list[Mail]: ...
    def __getitem__(self, i: int | slice) -> Mail | list[Mail]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = self.table.slice(i if i >= 0 else len(self) + i, 1).to_pylist()[0]
        path = self.directory / row["name"]
        try:
            body = _read(path).body
        except OSError:  # moved or deleted since it was listed
            body = ""
        return Mail(
            path=path,
            received=row["received"],
            sender=row["sender"] or "",
            recipients=tuple(r for r in (row["recipients"] or "").split("\n") if r),
            subject=row["subject"] or "",
            body=body,
            case_id=row["case_id"],
            message_id=row["message_id"],
        )

    def __iter__(self) -> Iterator[Mail]:
        return (self[i] for i in range(len(self)))

    def for_case(self, case_id: str) -> list[Mail]:
        """The messages about one case (read, bodies included, only for those)."""
        hits = pc.indices_nonzero(
            pc.fill_null(pc.equal(self.table.column("case_id"), case_id), False)
        )
        return [self[int(i)] for i in hits.to_pylist()]


_LISTED: dict[Path, tuple[tuple[int, ...], MailList]] = {}


def _stamp(directory: Path) -> tuple[int, ...]:
    # a delivery, a move or a deletion changes a folder's modification time
    return tuple(
        p.stat().st_mtime_ns
        for p in (directory, directory / "new", directory / "cur")
        if p.is_dir()
    )


def read_mailbox(directory: Path) -> MailList:
    """Every message in ``directory`` (a Maildir or a folder of ``.eml`` files), oldest first.
    The same object is returned while the folders are unchanged, so callers can keep what they
    derive."""
    stamp = _stamp(directory)
    hit = _LISTED.get(directory)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    table, saved = _index(directory)
    # writing the index changed the folder's own time: stamp it as it is now
    mails = MailList(directory, table)
    _LISTED[directory] = (_stamp(directory) if saved else stamp, mails)
    return mails


def _names(directory: Path) -> list[str]:
    if (directory / "new").is_dir() or (directory / "cur").is_dir():
        return [
            f"{sub}/{e.name}"
            for sub in ("new", "cur")
            if (directory / sub).is_dir()
            for e in os.scandir(directory / sub)
            if not e.name.startswith(".") and e.is_file()
        ]
    return [e.name for e in os.scandir(directory) if e.name.endswith(".eml") and e.is_file()]


def _index(directory: Path) -> tuple[pa.Table, bool]:
    """The index, brought up to date (and whether it was written): its rows for the files still
    there and the files it does not name yet, parsed."""
    side = directory / INDEX_NAME
    old = INDEX_SCHEMA.empty_table()
    with contextlib.suppress(OSError, pa.ArrowException):
        # an Arrow IPC file, not Parquet: the storage formats stay behind governance, and
        # this is a cache of the mailbox the console reads anyway, not the store
        with pa.memory_map(str(side)) as src:
            t = pa.ipc.open_file(src).read_all()
        if t.schema.remove_metadata() == INDEX_SCHEMA:
            old = t.replace_schema_metadata(None)
    names = _names(directory)
    present = pa.array(names, pa.string())
    keep = old.filter(pc.is_in(old.column("name"), value_set=present))
    if keep.num_rows == old.num_rows == len(names):
        return old, False
    known = set(keep.column("name").to_pylist())
    new = [r for r in (_row(directory, n) for n in names if n not in known) if r is not None]
    added = pa.Table.from_pylist(new, schema=INDEX_SCHEMA)
    # Maildir names carry no order (the delivery time is the file's mtime); .eml files are
    # named in the order they were saved
    maildir = (directory / "new").is_dir() or (directory / "cur").is_dir()
    order = [("received", "ascending")] if maildir else []
    t = pa.concat_tables([keep, added]).sort_by([*order, ("name", "ascending")])
    t = t.combine_chunks()
    return t, _save(side, t)


def _save(side: Path, t: pa.Table) -> bool:
    tmp = side.with_name(side.name + ".tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t)
        os.replace(tmp, side)
        return True
    except OSError:
        return False  # a mailbox the console may only read: indexed in memory only
    finally:
        tmp.unlink(missing_ok=True)


def _row(directory: Path, name: str) -> dict[str, object] | None:
    try:
        m = _read(directory / name)
    except OSError:  # gone between the listing and the read
        return None
    return {
        "name": name,
        "received": m.received,
        "sender": m.sender,
        "recipients": "\n".join(m.recipients),
        "subject": m.subject,
        "case_id": m.case_id,
        "message_id": m.message_id,
    }


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
        case_id=str(msg["X-Mamori-Case"]) if msg.get("X-Mamori-Case") else None,
        message_id=str(msg["Message-ID"]).strip("<>") if msg.get("Message-ID") else None,
    )
