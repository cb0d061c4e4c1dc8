"""The subscriber's way in without an alert e-mail: a contract id and a one-time code sent to the
contact address on file (or the ISP's single sign-on, ``web.subscriber_sso_header``).

A code is six digits, good for ten minutes and three tries, and only in the browser session that
asked for it; only its digest is kept, in memory. Asking is limited per subscriber and per source
address, and the answer never says whether a contract id exists, so the page cannot be used to
find out who is a subscriber. The mail is in the subscriber's language, with the other one below.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from mamori.act.mailer import Mailer
from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.web.throttle import Window

__all__ = ["CODE_TTL_S", "CodeBook", "send_code"]

CODE_TTL_S = 600.0
MAX_TRIES = 3


@dataclass
class _Code:
    digest: str
    expires: float
    tries: int = 0


class CodeBook:
    """One-time codes by (browser session nonce, subscriber)."""

    def __init__(self) -> None:
        self._codes: dict[str, _Code] = {}
        self._lock = threading.Lock()
        # codes asked for: per subscriber (3 in 15 minutes) and per source (10 in 15 minutes)
        self.per_subscriber = Window(3, 900.0)
        self.per_source = Window(10, 900.0)

    @staticmethod
    def _key(nonce: str, subscriber_id: str) -> str:
        return hashlib.sha256(f"{nonce}\x1f{subscriber_id}".encode()).hexdigest()

    def issue(self, nonce: str, subscriber_id: str) -> str:
        code = f"{secrets.randbelow(10**6):06d}"
        with self._lock:
            now = time.monotonic()
            self._codes = {k: c for k, c in self._codes.items() if c.expires > now}
            self._codes[self._key(nonce, subscriber_id)] = _Code(
                hashlib.sha256(code.encode()).hexdigest(), now + CODE_TTL_S
            )
        return code

    def check(self, nonce: str, subscriber_id: str, code: str) -> bool:
        """Whether ``code`` is the one sent; a code is used once, and at most three tries."""
        key = self._key(nonce, subscriber_id)
        with self._lock:
            entry = self._codes.get(key)
            if entry is None or entry.expires <= time.monotonic():
                self._codes.pop(key, None)
                return False
            entry.tries += 1
            good = hmac.compare_digest(
                entry.digest, hashlib.sha256(code.strip().encode()).hexdigest()
            )
            if good or entry.tries >= MAX_TRIES:
                del self._codes[key]
            return good


_TEXT = {
    "ja": (
        "ご契約の通信の安全対策の設定ページに入るための確認コードです。",
        "確認コード: {code}（10分間有効）",
        "お心当たりのない場合は、このメールを破棄してください。設定は変わりません。",
    ),
    "en": (
        "Here is the code to open the security settings of your contract.",
        "Code: {code} (valid for 10 minutes)",
        "If you did not ask for it, ignore this mail: nothing has changed.",
    ),
}


def _body(code: str, language: str) -> str:
    first = language if language in _TEXT else "ja"
    parts = []
    for lang in (first, "en" if first == "ja" else "ja"):
        parts.append("\n".join(line.format(code=code) for line in _TEXT[lang]))
    return "\n\n----\n\n".join(parts) + "\n"


def send_code(config: MamoriConfig, address: str, language: str | None, code: str) -> str:
    """Mail ``code`` to ``address``; returns the delivery state (sent, failed, bounced)."""
    msg = EmailMessage()
    msg["From"] = config.smtp.sender
    msg["To"] = address
    msg["Subject"] = f"確認コード / Your code — {config.isp_name}"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=config.smtp.sender.rsplit("@", 1)[-1])
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(_body(code, language or "ja"))
    with Mailer(config.smtp, timeout_s=config.alerts.smtp_timeout_s) as mailer:
        return mailer.send(msg).state


def request_code(
    gov: Governance, book: CodeBook, nonce: str, subscriber_id: str, source: str
) -> str:
    """Send a code if the contract id is known and the limits allow; returns what happened
    (``sent``, ``unknown``, ``limited``, ``failed``) for the audit log — never for the page."""
    if book.per_subscriber.full(subscriber_id) or book.per_source.full(source):
        gov.audit.append(
            actor="web:public",
            event="consent-code",
            detail={"subscriber": subscriber_id, "state": "limited"},
        )
        return "limited"
    book.per_subscriber.add(subscriber_id)
    book.per_source.add(source)
    contact = gov.consent.contact(subscriber_id, actor="web:public")
    if contact is None:
        return "unknown"
    address, language = contact
    state = send_code(gov.config, address, language, book.issue(nonce, subscriber_id))
    gov.audit.append(
        actor="web:public",
        event="consent-code",
        detail={"subscriber": subscriber_id, "state": state, "channel": "web"},
    )
    return state
