"""SMTP delivery outcomes against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

from email.message import EmailMessage

from mamori.act.mailer import Mailer
from mamori.config import SmtpConfig
from tests.act.conftest import SmtpServer


def _msg(to: str) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "abuse-desk@isp.example.net"
    m["To"] = to
    m["Subject"] = "テスト"
    m.set_content("本文 body", charset="utf-8")
    return m


def test_sent_bounced_and_down(smtp_server: SmtpServer) -> None:
    smtp_server.recorder.refuse.add("gone@example.jp")
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_server.port)
    with Mailer(cfg, timeout_s=5) as m:
        assert m.send(_msg("a@example.jp")).state == "sent"
        bounced = m.send(_msg("gone@example.jp"))
        assert bounced.state == "bounced" and "550" in (bounced.error or "")
        assert m.send(_msg("b@example.jp")).state == "sent"
    assert [x["To"] for x in smtp_server.messages] == ["a@example.jp", "b@example.jp"]
    assert smtp_server.messages[0].get_content().strip() == "本文 body"
    smtp_server.stop()
    with Mailer(cfg, timeout_s=5) as m:
        d = m.send(_msg("c@example.jp"))
    assert d.state == "failed" and d.server_down
