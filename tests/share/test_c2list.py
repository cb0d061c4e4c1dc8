"""The C&C list and the export guard, including the property: no subscriber address leaves."""

from __future__ import annotations

import ipaddress
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamori.governance import Governance
from mamori.share import ExportRefused, c2_list, export, guard
from mamori.share.c2list import in_pools
from mamori.share.csvio import csv_to_list
from mamori.share.misp import event_to_list
from mamori.share.stix import ParseReport, objects_to_list
from tests.conftest import HOUR, PLAN, T0, make_config
from tests.share.conftest import finding, write_findings

POOLS = [n for p in PLAN for n in p.prefixes]


def test_list_aggregates_per_endpoint(gov: Governance) -> None:
    write_findings(
        gov,
        [
            finding("203.0.113.5", 443, score=0.5, first=T0, last=T0 + HOUR),
            finding(
                "203.0.113.5", 443, score=0.876, first=T0 - HOUR, last=T0, n=1, method="learned"
            ),
            finding("203.0.113.5", 8443, score=0.4),
            finding("203.0.113.6", 443, score=0.9, kind="infected"),  # not a C&C finding
            finding("203.0.113.7", 443, score=0.1),
        ],
    )
    rows = c2_list(gov, "test").to_pylist()
    assert [(r["ip"], r["port"]) for r in rows] == [
        ("203.0.113.5", 443),
        ("203.0.113.5", 8443),
        ("203.0.113.7", 443),
    ]
    top = rows[0]
    assert (top["first_seen"], top["last_seen"]) == (T0 - HOUR, T0 + HOUR)
    assert top["confidence"] == pytest.approx(0.88)
    assert top["method"] == "correlation"
    best = c2_list(gov, "test", min_score=0.45).to_pylist()
    assert best == [top]  # the whole endpoint, first seen from its 0.5 finding too


@pytest.mark.parametrize(
    ("ip", "inside"),
    [
        ("10.0.5.5", True),  # dynamic pool
        ("192.0.2.1", True),  # static pool
        ("198.51.100.3", True),  # CGNAT pool
        ("198.51.100.16", False),  # just past the CGNAT /28
        ("::ffff:10.0.0.1", True),  # a pool address in IPv6 clothing
        ("010.0.0.1", True),  # unreadable: cannot be checked, so it does not leave
        ("not-an-ip", True),
        (None, True),
        ("203.0.113.5", False),
        ("2001:db8::1", False),
    ],
)
def test_in_pools(ip: str | None, inside: bool) -> None:
    assert in_pools(pa.array([ip], pa.string()), POOLS).tolist() == [inside]


def test_guard_refuses_and_audits(gov: Governance) -> None:
    write_findings(gov, [finding("203.0.113.5"), finding("10.0.1.2", 40000)])
    with pytest.raises(ExportRefused, match="1 of 2 address"):
        export(gov, "stix", "test", include_candidates=True)
    refused = [e for e in gov.audit.entries() if e.event == "refused"]
    assert len(refused) == 1
    detail = json.loads(refused[0].detail or "{}")
    assert detail["what"] == "export-stix" and "10.0.1.2" not in (refused[0].detail or "")
    assert not [e for e in gov.audit.entries() if e.event == "share-export"]


def test_guard_refuses_fields_beyond_the_allowed(gov: Governance) -> None:
    t = c2_list(gov, "test").append_column("evidence", pa.array([], pa.string()))
    with pytest.raises(ExportRefused, match="evidence"):
        guard(gov, t, "test", what="test")


_pool_addr = st.sampled_from(POOLS).flatmap(
    lambda net: st.integers(0, net.num_addresses - 1).map(lambda i: str(net[i]))
)
_any_addr = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), _pool_addr)


@pytest.mark.slow
@settings(max_examples=300)
@given(st.lists(_any_addr, max_size=40))
def test_in_pools_matches_ipaddress(addrs: list[str]) -> None:
    want = [
        any(ip.version == n.version and ip in n for n in POOLS)
        or (
            ip.version == 6
            and ip.ipv4_mapped is not None
            and any(ip.ipv4_mapped in n for n in POOLS if n.version == 4)
        )
        or (
            ip.version == 6
            and ip.sixtofour is not None
            and any(ip.sixtofour in n for n in POOLS if n.version == 4)
        )
        for ip in map(ipaddress.ip_address, addrs)
    ]
    assert in_pools(pa.array(addrs, pa.string()), POOLS).tolist() == want


def _exported_ips(fmt: str, data: bytes) -> list[str]:
    report = ParseReport()
    if fmt == "stix":
        t = objects_to_list(json.loads(data)["objects"], report)
    elif fmt == "misp":
        t = event_to_list(json.loads(data), report)
    else:
        t = csv_to_list(data, report)
    return t["ip"].to_pylist()


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(_any_addr, st.integers(1, 65535), st.floats(0, 1, width=32)),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["stix", "misp", "csv"]),
    st.booleans(),
)
def test_no_subscriber_pool_address_can_be_exported(
    rows: list[tuple[str, int, float]], fmt: str, clean: bool
) -> None:
    """Over random findings: an export either refuses, or holds no address of the pools.

    Half the examples have their pool addresses removed, so the export that goes through is
    exercised as often as the refusal."""
    if clean:
        rows = [r for r in rows if not in_pools(pa.array([r[0]]), POOLS)[0]] or [
            ("203.0.113.1", 443, 0.5)
        ]
    with tempfile.TemporaryDirectory() as tmp, Governance(make_config(Path(tmp))) as g:
        write_findings(g, [finding(ip, port, score=s, n=i) for i, (ip, port, s) in enumerate(rows)])
        any_inside = any(in_pools(pa.array([ip]), POOLS)[0] for ip, _, _ in rows)
        try:
            data, n = export(g, fmt, "test", include_candidates=True)  # type: ignore[arg-type]
        except ExportRefused:
            assert any_inside
            return
        assert not any_inside
        ips = _exported_ips(fmt, data)
        assert len(ips) == n == len({(ip, p) for ip, p, _ in rows})
        assert not in_pools(pa.array(ips, pa.string()), POOLS).any()
