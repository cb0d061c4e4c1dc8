"""The console's mailbox reader: any Maildir or folder of ``.eml`` files, not only the demo's."""

from __future__ import annotations

import mailbox
import os
from email.message import EmailMessage
from pathlib import Path

from mamori.web.maildir import read_mailbox


def _message(subject: str, to: str, body: str = "hello\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Abuse desk <abuse@isp.example.net>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def test_maildir_is_read_oldest_first_from_new_and_cur(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    first = box.add(_message("first", "a@home.example.jp"))
    second = box.add(mailbox.MaildirMessage(_message("second", "b@home.example.jp")))
    # a message the user has read moves to cur/; it is still in the mailbox
    seen = box.get_message(first)
    seen.set_subdir("cur")
    box[first] = seen
    # Maildir names carry no order: the delivery time (mtime) does
    for key, t in ((first, 1_700_000_000), (second, 1_700_000_100)):
        (path,) = (tmp_path / "Maildir").glob(f"*/{key}*")
        os.utime(path, (t, t))
    mails = read_mailbox(tmp_path / "Maildir")
    assert [m.subject for m in mails] == ["first", "second"]
    assert mails[0].recipients == ("a@home.example.jp",)
    assert mails[0].sender == "abuse@isp.example.net"
    assert mails[1].body == "hello\n"


def test_eml_folder_prefers_the_delivery_headers(tmp_path: Path) -> None:
    msg = _message("delivered", "Someone <listed@home.example.jp>", "本文\n")
    msg["Return-Path"] = "<bounce@isp.example.net>"
    msg["Delivered-To"] = "s1@home.example.jp"
    msg["Delivered-To"] = "s2@home.example.jp"
    (tmp_path / "2.eml").write_bytes(msg.as_bytes())
    (tmp_path / "1.eml").write_bytes(_message("saved", "x@home.example.jp").as_bytes())
    (tmp_path / "notes.txt").write_text("not mail")
    mails = read_mailbox(tmp_path)
    assert [m.subject for m in mails] == ["saved", "delivered"]
    assert mails[0].recipients == ("x@home.example.jp",)
    assert mails[1].recipients == ("s1@home.example.jp", "s2@home.example.jp")
    assert mails[1].sender == "bounce@isp.example.net"
    assert mails[1].body == "本文\n"
