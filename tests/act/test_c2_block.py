"""IP-level C&C blocking (M7): which endpoints and which subscribers' addresses go into the
router's sets, the table it renders, and rpz-ip triggers in the C&C zone (with a real Unbound)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.zone
import pyarrow as pa
import pytest

from mamori.act.c2_block import (
    c2_endpoints,
    consenting_addresses,
    render_c2_table,
    render_subscribers,
)
from mamori.act.rpz import generate_rpz, policy_ips, rpz_ip_owner
from mamori.config import ReputationConfig
from mamori.config_network import NftConfig
from mamori.governance import Governance
from tests.act.conftest import allocations_table
from tests.conftest import make_config
from tests.unbound_harness import DOMAIN, running_unbound

TS = pa.timestamp("ms", tz="UTC")
NOW = datetime.now(UTC)


def rep_rows(rows: list[tuple[str, str | None, int | None, str | None, str]]) -> pa.Table:
    """(indicator_type, ip, port, protocol, category) rows as a reputation load."""
    n = len(rows)
    return pa.table(
        {
            "loaded": pa.array([NOW] * n, TS),
            "indicator_type": [r[0] for r in rows],
            "ip": pa.array([r[1] for r in rows], pa.string()),
            "port": pa.array([r[2] for r in rows], pa.uint16()),
            "protocol": pa.array([r[3] for r in rows], pa.string()),
            "category": [r[4] for r in rows],
            "source": ["test"] * n,
        }
    )


C2_ROWS = [
    ("ip-port", "192.0.2.66", 443, "tcp", "c2"),
    ("ip-port", "192.0.2.67", 8080, None, "c2"),  # no transport given: both
    ("ip", "192.0.2.68", None, None, "c2"),  # no port: every port
    ("ip-port", "2001:0db8::0066", 443, "udp", "c2"),  # canonical text in the set
    ("ip-port", "192.0.2.99", 443, "tcp", "malware-site"),  # not a C&C: M8's, not blocked
    ("ip-port", "not-an-ip", 443, "tcp", "c2"),
    ("ip-port", "203.0.113.5", 443, "tcp", "c2"),  # on the operator's allowlist
]


@pytest.fixture
def c2_gov(tmp_path: Path) -> Iterator[Governance]:
    cfg = make_config(
        tmp_path / "store", reputation=ReputationConfig(allow_prefixes=("203.0.113.0/24",))
    )
    g = Governance(cfg)
    g.write_registry("reputation", rep_rows(C2_ROWS), "test", source="test")
    clients = {"10.0.1.10": "sub-in", "10.0.1.11": "sub-out", "2001:db8:1::10": "sub-in6"}
    g.write_registry("allocations", allocations_table(clients), "test", source="csv")
    g.consent.set("sub-out", "M7", False, actor="test", channel="cli")
    yield g
    g.close()


def test_endpoints_from_the_lists_in_force(c2_gov: Governance) -> None:
    e = c2_endpoints(c2_gov, "test")
    assert e.v4 == ["192.0.2.66 . tcp . 443", "192.0.2.67 . tcp . 8080", "192.0.2.67 . udp . 8080"]
    assert e.v6 == ["2001:db8::66 . udp . 443"]
    assert e.v4_any == ["192.0.2.68"] and e.v6_any == []
    assert e.rejected == 1 and e.count == 5
    # the digest names the list version: same list, same digest; another list, another
    assert e.digest() == c2_endpoints(c2_gov, "test").digest()
    c2_gov.write_registry(
        "reputation",
        rep_rows([("ip", "192.0.2.70", None, None, "c2")]),
        "test",
        source="other-feed",
    )
    assert c2_endpoints(c2_gov, "test").digest() != e.digest()


def test_only_consenting_subscribers_addresses(c2_gov: Governance) -> None:
    v4, v6 = consenting_addresses(c2_gov, "test")
    assert v4 == ["10.0.1.10/32"]  # sub-out opted out of M7
    assert v6 == ["2001:db8:1::10/128"]


def test_table_drops_both_directions_and_names_its_action(c2_gov: Governance) -> None:
    e = c2_endpoints(c2_gov, "test")
    text = render_c2_table(e, (["10.0.1.10/32"], []), NftConfig(), "c2-ip-x")
    assert 'comment "mamori c2-ip-x"' in text
    assert "ip saddr @subscribers4 ip daddr . meta l4proto . th dport @c2_4 counter drop" in text
    assert "ip daddr @subscribers4 ip saddr . meta l4proto . th sport @c2_4 counter drop" in text
    assert "ip saddr @subscribers4 ip daddr @c2_4_any counter drop" in text
    assert "10.0.1.11" not in text
    update = render_subscribers((["10.0.1.10/32"], []), NftConfig())
    assert update == (
        "flush set inet mamori_c2 subscribers4\n"
        "add element inet mamori_c2 subscribers4 { 10.0.1.10/32 }\n"
        "flush set inet mamori_c2 subscribers6\n"
    )


def test_rpz_ip_owner_names() -> None:
    assert rpz_ip_owner("203.0.113.66") == "32.66.113.0.203.rpz-ip"
    assert rpz_ip_owner("2001:db8::1") == "128.1.zz.db8.2001.rpz-ip"
    assert rpz_ip_owner("2001:db8:1:2:3:4:5:6") == "128.6.5.4.3.2.1.db8.2001.rpz-ip"
    with pytest.raises(ValueError):
        rpz_ip_owner("203.0.113")


def test_policy_ips_current_c2_only() -> None:
    rows = rep_rows(
        [
            ("ip", "203.0.113.66", None, None, "c2"),
            ("ip", "203.0.113.66", 443, "tcp", "c2"),  # the same address once
            ("ip", "203.0.113.77", None, None, "malware-site"),
            ("ip", "bogus", None, None, "c2"),
            ("ip", "203.0.113.88", None, None, "c2"),
        ]
    )
    expires = pa.array([None, None, None, None, NOW - timedelta(seconds=1)], TS)
    rows = rows.append_column("expires", expires)
    assert policy_ips(rows, ["c2"], at=NOW).to_pylist() == ["32.66.113.0.203.rpz-ip"]


def test_names_resolving_to_a_c2_address_are_blocked_by_unbound(
    dns_gov: Governance, tmp_path: Path
) -> None:
    """benign.test.example is not listed by name (its entry expired), but it resolves to a C&C
    address the lists name: the rpz-ip trigger blocks it for the consenting client only."""
    from mamori.act.resolver import prepare_resolver_files, unbound_snippet

    dns_gov.write_registry(
        "reputation", rep_rows([("ip", "203.0.113.10", None, None, "c2")]), "test", source="ips"
    )
    prepare_resolver_files(dns_gov, "test")
    result = generate_rpz(dns_gov, "test")
    c2 = result.by_measure("M7")
    assert c2.ips == 1
    zone = dns.zone.from_file(str(c2.path), origin=c2.zone, relativize=True)
    assert "32.10.113.0.203.rpz-ip" in {n.to_text() for n, _ in zone.iterate_rdatasets("CNAME")}
    with running_unbound(tmp_path / "ub", unbound_snippet(dns_gov.config)) as ub:
        assert ub.answer(f"benign.{DOMAIN}", "127.0.0.2") == ("NXDOMAIN", [])
        assert ub.answer(f"benign.{DOMAIN}", "127.0.0.3") == ("NOERROR", ["203.0.113.10"])
