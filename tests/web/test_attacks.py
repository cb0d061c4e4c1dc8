"""Attacks and mitigations on one true time axis (issue 16 §7, issue 18 §4): DDoS findings, the
rules that answered them and the packets to each attacked prefix, read through governance."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pyarrow as pa
import pytest

from mamori.act import base as act
from mamori.act.base import ActionKind
from mamori.act.bgp import bgp_action
from mamori.governance import Governance
from mamori.governance.roles import Role
from mamori.schemas import FINDINGS
from mamori.web import data
from mamori.web.app import create_app
from mamori.web.auth import Accounts
from tests.conftest import make_config
from tests.web.conftest import ACCOUNTS, PASSWORD, _t, login
from tests.web.server import running

T0 = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
VICTIM = "198.51.100.10"
NEIGHBOUR = "198.51.100.20"  # same /24, not attacked: its traffic is not the victim's
CARPET = "203.0.113.0/24"


def _flow(t: datetime, dst: str, packets: int) -> dict[str, object]:
    return {
        "time_start": t,
        "time_end": t + timedelta(seconds=30),
        "src_addr": "192.0.2.77",
        "dst_addr": dst,
        "src_port": 123,
        "dst_port": 80,
        "protocol": 17,
        "packets": packets,
        "bytes": packets * 500,
        "exporter": "192.0.2.1",
        "sampling_rate": 1000,
    }


def _finding(fid: str, ip: str, start: datetime, detected: datetime) -> dict[str, object]:
    return {
        "detected": detected,
        "finding_id": fid,
        "kind": "ddos",
        "method": "udp-flood",
        "ip": ip,
        "score": 0.9,
        "first_seen": start,
        "last_seen": detected,
        "measure": "M13",
        "evidence": json.dumps({"pps": 50000}),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Governance, str]]:
    gov = Governance(make_config(tmp_path_factory.mktemp("attacks") / "store"))
    flows = []
    for minute in range(60):  # an hour of background to both, a flood on the victim 09:20-09:30
        t = T0 + timedelta(minutes=minute)
        flows.append(_flow(t, NEIGHBOUR, 2))
        flows.append(_flow(t, VICTIM, 400 if 20 <= minute < 30 else 1))
        flows.append(_flow(t, "203.0.113.7", 3 if 40 <= minute < 45 else 0))
    gov.write("M1", "flows", pa.Table.from_pylist(flows), "test")
    gov.write(
        "M13",
        "findings",
        _t(
            [
                _finding("ddos-1", VICTIM, T0 + timedelta(minutes=20), T0 + timedelta(minutes=21)),
                _finding("ddos-2", CARPET, T0 + timedelta(minutes=40), T0 + timedelta(minutes=41)),
            ],
            FINDINGS.arrow,
        ),
        "test",
    )
    rtbh = bgp_action(
        ActionKind.RTBH,
        f"{VICTIM}/32",
        finding_id="ddos-1",
        now=T0 + timedelta(minutes=22),
        expires_in=timedelta(days=3650),
    )
    [p] = act.propose(gov, [rtbh], "web:analyst1", now=T0 + timedelta(minutes=22))
    [a] = act.approve(gov, [p], "web:operator1", now=T0 + timedelta(minutes=23))
    [a] = act.apply(gov, [a], "web:operator1", now=T0 + timedelta(minutes=24))
    act.end(gov, [a], "web:operator1", now=T0 + timedelta(minutes=35))
    accounts = Accounts(gov)
    for role, name in ACCOUNTS.items():
        accounts.add(name, role, PASSWORD)
    with running(create_app(gov)) as url:
        yield url, gov, rtbh.action_id
    gov.close()


def test_packets_per_prefix_on_a_true_time_axis(store: tuple[str, Governance, str]) -> None:
    _, gov, action_id = store
    t = data.attacks(gov, "test", since=T0, until=T0 + timedelta(hours=1), buckets=60)
    assert t.step == timedelta(minutes=1)
    series = dict(t.series)
    assert set(series) == {f"{VICTIM}/32", CARPET}
    victim = dict(series[f"{VICTIM}/32"])
    # scaled by the sampling rate; the neighbour's packets are not the victim's
    assert victim[T0 + timedelta(minutes=25)] == 400 * 1000
    assert victim[T0 + timedelta(minutes=5)] == 1 * 1000
    assert sum(victim.values()) == (10 * 400 + 50 * 1) * 1000
    carpet = dict(series[CARPET])
    assert sum(carpet.values()) == 5 * 3 * 1000
    assert [f["finding_id"] for f in t.findings] == ["ddos-2", "ddos-1"]
    [rule] = t.rules
    assert (rule["action_id"], rule["status"]) == (action_id, "ended")
    # the flows were read under M13 (the measure that may read addresses), audited
    flow_reads = [e for e in gov.audit.entries() if e.event == "access" and e.dataset == "flows"]
    assert flow_reads[-1].measure == "M13" and flow_reads[-1].seq == t.grant_seq


def test_a_range_without_attacks_reads_no_flows(store: tuple[str, Governance, str]) -> None:
    _, gov, _ = store
    before = sum(1 for e in gov.audit.entries() if e.dataset == "flows")
    t = data.attacks(gov, "test", since=T0 - timedelta(days=2), until=T0 - timedelta(days=1))
    assert (t.findings, t.series, t.grant_seq) == ([], [], None)
    assert sum(1 for e in gov.audit.entries() if e.dataset == "flows") == before


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.OPERATOR, 200), (Role.ANALYST, 200), (Role.ABUSE_DESK, 403), (Role.AUDITOR, 403)],
)
def test_who_sees_the_attacks_page(
    store: tuple[str, Governance, str], role: Role, status: int
) -> None:
    url, _, action_id = store
    with httpx.Client(base_url=url, timeout=30) as c:
        login(c, ACCOUNTS[role])
        # 18:00–19:00 in Tokyo is 09:00–10:00 UTC
        r = c.get("/attacks", params={"since": "2026-11-10 18:00", "until": "2026-11-10 19:00"})
    assert r.status_code == status
    if status != 200:
        return
    page = r.text
    victim = page.split(f'data-prefix="{VICTIM}/32"')[1].split("</svg>")[0]
    carpet = page.split(f'data-prefix="{CARPET}"')[1].split("</svg>")[0]
    # the rule's time in force is drawn on its own prefix's chart only
    assert re.search(r'class="band rule"><title>rtbh 198\.51\.100\.10/32 \(ended\)', victim)
    assert "rtbh" not in carpet
    assert 'class="band attack"' in victim and 'class="band attack"' in carpet
    assert "JST" in victim  # the axis is in the ISP's zone, named
    assert f'data-action="{action_id}" data-status="ended"' in page
    assert ('href="/findings/ddos-1"' in page) == (role is Role.ANALYST)
