"""A store with a little of everything the console shows, and one account per role."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.governance.roles import Role
from mamori.schemas import ACTIONS, FINDINGS, NOTIFICATIONS
from mamori.web.app import create_app
from mamori.web.auth import Accounts
from tests.conftest import make_config

T0 = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
PERIOD = "2026-11"
PASSWORD = "correct horse battery staple"
C2_IP = "203.0.113.50"
INFECTED_IP = "10.0.1.2"
ACCOUNTS = {r: f"{r.value.replace('-', '')}1" for r in Role}
# every address the store holds: none may appear on an auditor's page
ADDRESSES = (C2_IP, INFECTED_IP, "198.51.100.7", "192.0.2.9", "192.0.2.1", "192.0.2.2")
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def _t(rows: list[dict[str, object]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(
        [{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema
    )


def populate(gov: Governance) -> None:
    actor = "test:populate"
    gov.write(
        "M2",
        "findings",
        _t(
            [
                {
                    "detected": T0,
                    "finding_id": "f-c2-1",
                    "kind": "c2",
                    "method": "correlation",
                    "ip": C2_IP,
                    "port": 443,
                    "protocol": "tcp",
                    "score": 0.97,
                    "first_seen": T0 - timedelta(hours=5),
                    "last_seen": T0,
                    "measure": "M2",
                    "evidence": json.dumps({"converging_hosts": 12, "beacon_period_s": 60}),
                }
            ],
            FINDINGS.arrow,
        ),
        actor,
    )
    gov.write(
        "M4",
        "findings",
        _t(
            [
                {
                    "detected": T0,
                    "finding_id": "f-inf-1",
                    "kind": "infected",
                    "method": "reputation",
                    "ip": INFECTED_IP,
                    "port": 51234,
                    "protocol": "tcp",
                    "score": 0.9,
                    "measure": "M4",
                    "evidence": json.dumps({"indicator": f"{C2_IP}:443", "matches": 3}),
                }
            ],
            FINDINGS.arrow,
        ),
        actor,
    )
    actions = [
        {
            "created": T0,
            "action_id": "act-rpz-1",
            "kind": "rpz",
            "target": "cc.bad.example",
            "measure": "M7",
            "legal_basis": "consent",
            "state": "proposed",
            "expires": datetime(2099, 1, 1, tzinfo=UTC),
            "subscribers_affected": 40,
            "finding_id": "f-c2-1",
        },
        {
            "created": T0,
            "action_id": "act-acl-1",
            "kind": "nftables",
            "target": f"{C2_IP}/32",
            "measure": "M13",
            "legal_basis": "self-defence",
            "state": "applied",
            "start": T0,
            "expires": datetime(2099, 1, 1, tzinfo=UTC),
            "subscribers_affected": 3,
            "approved_by": "web:analyst1",
        },
        {
            "created": T0,
            "action_id": "act-refl-1",
            "kind": "flowspec",
            "target": "198.51.100.7/32",
            "measure": "M10",
            "legal_basis": "justified-act",
            "state": "applied",
            "start": T0,
            "expires": T0 + timedelta(hours=2),
            "subscribers_affected": 0,
        },
    ]
    for a in actions:
        gov.write(
            str(a["measure"]), "actions", _t([a], ACTIONS.arrow), actor, basis=str(a["legal_basis"])
        )
    gov.write(
        "M5",
        "notifications",
        _t(
            [
                {
                    "created": T0,
                    "notification_id": "n-1",
                    "subscriber_id": "sub-0001",
                    "measure": "M5",
                    "legal_basis": "consent",
                    "case_id": "case-77",
                    "state": "sent",
                    "sent": T0 + timedelta(minutes=1),
                },
                {
                    "created": T0,
                    "notification_id": "n-2",
                    "subscriber_id": "sub-0002",
                    "measure": "M5",
                    "legal_basis": "consent",
                    "case_id": "case-77",
                    "state": "sent",
                    "sent": T0 + timedelta(minutes=2),
                },
                {
                    "created": T0,
                    "notification_id": "n-3",
                    "subscriber_id": "sub-0002",
                    "measure": "M5",
                    "legal_basis": "consent",
                    "case_id": "case-78",
                    "state": "sent",
                    "sent": T0 + timedelta(minutes=3),
                },
            ],
            NOTIFICATIONS.arrow,
        ),
        actor,
    )
    gov.write(
        "M6",
        "notifications",
        _t(
            [
                {
                    "created": T0,
                    "notification_id": "n-4",
                    "subscriber_id": "sub-0003",
                    "measure": "M6",
                    "legal_basis": "emergency",
                    "case_id": "takedown-1",
                    "state": "failed",
                }
            ],
            NOTIFICATIONS.arrow,
        ),
        actor,
    )
    flows = []
    for i in range(24):
        flows.append(
            {
                "time_start": T0 + timedelta(minutes=20 * i),
                "time_end": T0 + timedelta(minutes=20 * i + 1),
                "src_addr": INFECTED_IP,
                "dst_addr": C2_IP if i % 2 else "192.0.2.9",
                "src_port": 40000 + i,
                "dst_port": 443 if i % 3 else 53,
                "protocol": 6 if i % 3 else 17,
                "packets": 10,
                "bytes": 1000 + i,
                "exporter": "192.0.2.1" if i % 2 else "192.0.2.2",
                "sampling_rate": 100,
            }
        )
    gov.write("M1", "flows", pa.Table.from_pylist(flows), actor)
    # one refusal in the log: M3 may not read flows
    with contextlib.suppress(PermissionError):
        gov.open("M3", "flows", ["src_addr"], actor)


@pytest.fixture(scope="module")
def web_config(tmp_path_factory: pytest.TempPathFactory) -> MamoriConfig:
    base = tmp_path_factory.mktemp("web")
    cfg = make_config(base / "store")
    return cfg.model_copy(
        update={"web": cfg.web.model_copy(update={"mailbox_dir": base / "mailbox"})}
    )


@pytest.fixture(scope="module")
def web_gov(web_config: MamoriConfig) -> Iterator[Governance]:
    g = Governance(web_config)
    populate(g)
    accounts = Accounts(g)
    for role, name in ACCOUNTS.items():
        accounts.add(name, role, PASSWORD)
    yield g
    g.close()


@pytest.fixture(scope="module")
def app(web_gov: Governance):  # type: ignore[no-untyped-def]
    return create_app(web_gov)


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "page has no CSRF token"
    return m.group(1)


def login(client: httpx.Client, name: str, password: str = PASSWORD) -> None:
    page = client.get("/login")
    r = client.post(
        "/login",
        data={"name": name, "password": password, "csrf": csrf_of(page.text), "next": "/console"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def artifacts_dir() -> Path:
    d = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def base_url(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from tests.web.server import running

    with running(app) as url:
        yield url
