"""Fixtures of the act tests: reputation and allocation rows and a store wired to a real Unbound
(DNS); a real SMTP server (aiosmtpd) on 127.0.0.1 that records what it accepts, can refuse chosen
recipients permanently, and can be stopped and restarted on the same port (an outage) (alerts)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiosmtpd.controller import Controller

from mamori.act.resolver import prepare_resolver_files, unbound_snippet
from mamori.config import DnsConfig
from mamori.governance import Governance
from tests.conftest import free_port, make_config
from tests.unbound_harness import DOMAIN, Unbound, running_unbound

TS = pa.timestamp("ms", tz="UTC")
NOW = datetime.now(UTC)

# (indicator_type, domain, url, category, expires)
REPUTATION = [
    ("domain", f"cc1.{DOMAIN}", None, "c2", None),
    ("url", None, f"http://malware.{DOMAIN}/payload.exe", "malware-site", None),
    ("domain", f"phish.{DOMAIN}", None, "phishing", None),
    ("domain", f"benign.{DOMAIN}", None, "c2", NOW - timedelta(days=1)),  # expired
]

# client address -> subscriber
CLIENTS = {"127.0.0.2": "sub-in", "127.0.0.3": "sub-out", "127.0.0.4": "sub-m8-only"}


def reputation_table(
    rows: list[tuple[str, str | None, str | None, str, datetime | None]],
) -> pa.Table:
    return pa.table(
        {
            "loaded": pa.array([NOW] * len(rows), TS),
            "indicator_type": [r[0] for r in rows],
            "domain": pa.array([r[1] for r in rows], pa.string()),
            "url": pa.array([r[2] for r in rows], pa.string()),
            "category": [r[3] for r in rows],
            "expires": pa.array([r[4] for r in rows], TS),
            "source": ["test"] * len(rows),
        }
    )


def allocations_table(clients: dict[str, str]) -> pa.Table:
    n = len(clients)
    return pa.table(
        {
            "start": pa.array([NOW - timedelta(hours=1)] * n, TS),
            "end": pa.array([None] * n, TS),
            "addr": list(clients),
            "subscriber_id": list(clients.values()),
        }
    )


@pytest.fixture
def dns_gov(tmp_path: Path) -> Iterator[Governance]:
    cfg = make_config(
        tmp_path / "store",
        dns=DnsConfig(warning_host=f"warning.{DOMAIN}."),
    )
    g = Governance(cfg)
    g.write_registry("reputation", reputation_table(REPUTATION), "test", source="test")
    g.write_registry("allocations", allocations_table(CLIENTS), "test", source="csv")
    g.consent.set("sub-out", "M7", False, actor="test", channel="cli")
    g.consent.set("sub-out", "M8", False, actor="test", channel="cli")
    g.consent.set("sub-m8-only", "M7", False, actor="test", channel="cli")
    yield g
    g.close()


@pytest.fixture
def unbound(dns_gov: Governance, tmp_path: Path) -> Iterator[Unbound]:
    """Unbound loading the zones and client tags Mamori wrote, as an operator would set it up."""
    prepare_resolver_files(dns_gov, "test")
    with running_unbound(tmp_path / "unbound", unbound_snippet(dns_gov.config)) as ub:
        yield ub


@dataclass
class Recorder:
    messages: list[EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 OK"


class SmtpServer:
    def __init__(self) -> None:
        self.recorder = Recorder()
        self.port = free_port()
        self._ctl: Controller | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        return self.recorder.messages

    def start(self) -> None:
        self._ctl = Controller(self.recorder, hostname="127.0.0.1", port=self.port)
        self._ctl.start()

    def stop(self) -> None:
        if self._ctl is not None:
            self._ctl.stop()
            self._ctl = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    srv = SmtpServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
