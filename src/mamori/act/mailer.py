"""Alert delivery over SMTP (``smtp`` in the configuration), with the outcome of each message.

One connection per batch. The outcome is what the abuse desk needs to act on:

* ``sent`` — the server accepted the message;
* ``bounced`` — a permanent refusal (5xx) of the recipient or the message: retrying cannot help;
* ``failed`` — anything temporary (4xx, connection refused or lost, time-out): the alert stays in
  the queue and is retried later.

Each message carries a ``Message-ID`` derived from its notification id, so that if the process dies
between the server's acceptance and the state being recorded, a resent copy can be recognised as the
same alert by the receiving side.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType

from mamori.config import SmtpConfig

__all__ = ["Delivery", "Mailer"]


@dataclass(frozen=True)
class Delivery:
    state: str  # sent | failed | bounced | suppressed (not attempted: no address, no events)
    error: str | None = None

    @property
    def server_down(self) -> bool:
        """The server could not be reached: the rest of the batch would fail the same way."""
        return self.state == "failed" and (self.error or "").startswith("connection:")


class Mailer:
    def __init__(self, smtp: SmtpConfig, timeout_s: float = 30.0) -> None:
        self._cfg = smtp
        self._timeout = timeout_s
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        if self._conn is None:
            conn = smtplib.SMTP(self._cfg.host, self._cfg.port, timeout=self._timeout)
            try:
                if self._cfg.starttls:
                    conn.starttls(context=ssl.create_default_context())
                if self._cfg.username:
                    pw = self._cfg.password.get_secret_value() if self._cfg.password else ""
                    conn.login(self._cfg.username, pw)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def send(self, msg: EmailMessage) -> Delivery:
        try:
            conn = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            return Delivery("failed", f"connection: {exc}")
        try:
            conn.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            text = "; ".join(
                f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in exc.recipients.items()
            )
            permanent = all(c >= 500 for c in codes)
            return Delivery("bounced" if permanent else "failed", f"recipient refused: {text}")
        except smtplib.SMTPSenderRefused as exc:
            return Delivery("failed", f"sender refused: {exc.smtp_code} {exc.smtp_error!r}")
        except smtplib.SMTPResponseException as exc:
            err = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            if exc.smtp_code >= 500:
                return Delivery("bounced", f"refused: {exc.smtp_code} {err}")
            self._drop()
            return Delivery("failed", f"temporary: {exc.smtp_code} {err}")
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            return Delivery("failed", f"connection: {exc}")
        return Delivery("sent")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
            finally:
                self._drop()

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
