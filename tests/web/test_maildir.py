"""The console's mailbox reader: any Maildir or folder of ``.eml`` files, not only the demo's."""

from __future__ import annotations

import mailbox
import os
from email.message import EmailMessage
from pathlib import Path

import pytest

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


def test_index_kept_with_the_maildir_parses_only_new_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mamori.web import maildir

    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    keys = [box.add(_message(f"m{i}", f"s{i}@home.example.jp")) for i in range(3)]
    assert [m.subject for m in read_mailbox(tmp_path / "Maildir")] == ["m0", "m1", "m2"]
    assert (tmp_path / "Maildir" / maildir.INDEX_NAME).is_file()
    # a restart: nothing in memory; the index answers, no message is parsed again
    parsed: list[Path] = []
    real = maildir._read

    def counting(path: Path) -> maildir.Mail:
        parsed.append(path)
        return real(path)

    monkeypatch.setattr(maildir, "_read", counting)
    maildir._LISTED.clear()
    listed = read_mailbox(tmp_path / "Maildir")
    assert len(listed) == 3 and parsed == []
    assert listed[1].body == "hello\n" and len(parsed) == 1  # a body is read when shown
    # a delivery and a deletion: only the new message is parsed
    parsed.clear()
    box.add(_message("m3", "s3@home.example.jp"))
    box.remove(keys[0])
    listed = read_mailbox(tmp_path / "Maildir")
    assert len(parsed) == 1 and parsed[0].parent.name == "new"  # the new message only
    assert sorted(listed.table.column("subject").to_pylist()) == ["m1", "m2", "m3"]
    maildir._LISTED.clear()
    parsed.clear()
    table = read_mailbox(tmp_path / "Maildir").table
    assert sorted(table.column("subject").to_pylist()) == ["m1", "m2", "m3"] and parsed == []


def test_mailbox_whose_index_cannot_be_written_is_indexed_in_memory(tmp_path: Path) -> None:
    from mamori.web import maildir

    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "1.eml").write_bytes(_message("one", "x@home.example.jp").as_bytes())
    # something else holds the index's name (as a folder the console may not write would)
    (tmp_path / "box" / maildir.INDEX_NAME).mkdir()
    assert [m.subject for m in read_mailbox(tmp_path / "box")] == ["one"]
    assert (tmp_path / "box" / maildir.INDEX_NAME).is_dir()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # cut short
        lambda b: b"\x00" * len(b),  # overwritten
        lambda b: b"",  # emptied
        lambda b: b"ARROW1" + os.urandom(4096),  # the magic, then garbage
    ],
    ids=["truncated", "zeroed", "empty", "garbage"],
)
def test_a_damaged_index_is_rebuilt_from_the_messages(tmp_path: Path, damage: object) -> None:
    from mamori.web import maildir

    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(3):
        box.add(_message(f"m{i}", f"s{i}@home.example.jp"))
    read_mailbox(tmp_path / "Maildir")
    side = tmp_path / "Maildir" / maildir.INDEX_NAME
    side.write_bytes(damage(side.read_bytes()))  # type: ignore[operator]
    maildir._LISTED.clear()
    assert [m.subject for m in read_mailbox(tmp_path / "Maildir")] == ["m0", "m1", "m2"]
    maildir._LISTED.clear()  # and the rebuilt index is whole again
    assert read_mailbox(tmp_path / "Maildir").table.num_rows == 3
