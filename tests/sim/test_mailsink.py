"""The demo's SMTP sink: a real aiosmtpd server that keeps each accepted message as a file."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

import pytest

from mamori.sim.mailsink import MailSink
from mamori.web.maildir import read_mailbox


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("Plain ASCII", "hello\n"),
        ("【注意喚起】感染のおそれ", "お使いの機器がマルウェアに感染しているおそれがあります。\n"),
    ],
)
def test_messages_arrive_and_are_readable(tmp_path: Path, subject: str, body: str) -> None:
    with MailSink(tmp_path / "box") as sink:
        msg = EmailMessage()
        msg["From"] = "abuse@isp.example.net"
        msg["To"] = "sub-1@home.example.jp"
        msg["Subject"] = subject
        msg.set_content(body)
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            smtp.send_message(msg)
        assert sink.count() == 1
    # the console's mailbox reader reads what the sink keeps
    mails = read_mailbox(tmp_path / "box")
    assert len(mails) == 1
    assert mails[0].subject == subject
    assert mails[0].body == body
    assert mails[0].recipients == ("sub-1@home.example.jp",)
    assert mails[0].sender == "abuse@isp.example.net"
    # a restarted sink keeps numbering after what is there
    with (
        MailSink(tmp_path / "box") as sink,
        smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp,
    ):
        smtp.sendmail("a@b.c", ["d@e.f"], b"Subject: second\r\n\r\nx\r\n")
    assert [m.subject for m in read_mailbox(tmp_path / "box")] == [subject, "second"]
