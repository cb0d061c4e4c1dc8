"""Import: files in our own formats, and the acceptance round trip over TAXII on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from mamori.governance import Governance
from mamori.share import c2_list, export, import_file, poll_peer, publish
from mamori.share.c2list import LIST_SCHEMA
from mamori.share.trust import TrustStore
from tests.conftest import HOUR, T0
from tests.share.conftest import c2_url, finding, serving, write_findings

ENDPOINTS = [
    finding("203.0.113.5", 443, score=0.91),
    finding("203.0.113.5", 443, score=0.55, first=T0 - HOUR, last=T0 + 5 * HOUR, n=1),
    finding("198.18.0.7", 8080, score=0.7, protocol="tcp", method="learned"),
    finding("198.18.0.9", 53, score=0.66, protocol="udp"),
    finding("2001:db8:beef::1", None, score=0.8, protocol=None),
    finding("203.0.113.77", 4444, score=0.3),
]


def _reputation_as_list(gov: Governance, source: str) -> pa.Table:
    rep = gov.open("M3", "reputation", None, "test").arrow()
    rep = rep.filter(pa.compute.equal(rep["source"], source))
    out = rep.select(["ip", "port", "protocol", "first_seen", "last_seen", "confidence"])
    return out.sort_by([("ip", "ascending"), ("port", "ascending")])


def _expected(gov: Governance) -> pa.Table:
    return (
        c2_list(gov, "test")
        .select(["ip", "port", "protocol", "first_seen", "last_seen", "confidence"])
        .sort_by([("ip", "ascending"), ("port", "ascending")])
    )


def test_round_trip_over_taxii(gov: Governance, gov_b: Governance) -> None:
    """Export from store A, serve it over TAXII, poll it from store B with taxii2-client: B's
    reputation equals A's list; a second poll brings nothing new; a new finding comes alone."""
    write_findings(gov, ENDPOINTS)
    assert publish(gov, "test", include_candidates=True).endpoints == 5
    trust_a = TrustStore.of(gov)
    trust_a.set_group("isac", read=["c2"], write=["submissions"])
    key = trust_a.add_peer("isp-b", "isac")
    with serving(gov) as base:
        TrustStore.of(gov_b).set_remote("isp-a", c2_url(base, gov), key)
        first = poll_peer(gov_b, "isp-a", "test")
        assert (first.loaded, first.skipped) == (5, 0)
        got, want = _reputation_as_list(gov_b, "isp-a"), _expected(gov)
        assert got.num_rows == 5
        assert got.to_pylist() == want.to_pylist()
        rep = gov_b.open("M3", "reputation", ["category", "indicator_type"], "test").arrow()
        assert set(rep["category"].to_pylist()) == {"c2"}
        assert sorted(rep["indicator_type"].to_pylist()) == ["ip"] + ["ip-port"] * 4

        again = poll_peer(gov_b, "isp-a", "test")
        assert (again.objects_received, again.loaded) == (0, 0)

        write_findings(gov, [finding("192.0.2.200", 25, score=0.5) | {"ip": "203.0.113.200"}])
        publish(gov, "test", include_candidates=True)
        third = poll_peer(gov_b, "isp-a", "test")
        assert third.loaded == 1
        assert third.objects_received == 3  # indicator, infrastructure, relationship
    assert _reputation_as_list(gov_b, "isp-a").num_rows == 6
    reads = [e for e in gov.audit.entries() if e.event == "share-read"]
    assert reads and all(e.actor == "taxii:isp-b" for e in reads)


def test_poll_with_revoked_key_fails_and_loads_nothing(gov: Governance, gov_b: Governance) -> None:
    write_findings(gov, ENDPOINTS[:1])
    publish(gov, "test", include_candidates=True)
    trust_a = TrustStore.of(gov)
    trust_a.set_group("isac", read=["c2"], write=[])
    key = trust_a.add_peer("isp-b", "isac")
    trust_a.revoke_peer("isp-b")
    with serving(gov) as base:
        TrustStore.of(gov_b).set_remote("isp-a", c2_url(base, gov), key)
        with pytest.raises(Exception, match="401"):
            poll_peer(gov_b, "isp-a", "test")
    assert TrustStore.of(gov_b).remote("isp-a").added_after is None


@pytest.mark.parametrize("fmt", ["stix", "misp", "csv"])
def test_file_round_trip(gov: Governance, gov_b: Governance, tmp_path: Path, fmt: str) -> None:
    write_findings(gov, ENDPOINTS)
    data, n = export(gov, fmt, "test", include_candidates=True)  # type: ignore[arg-type]
    path = tmp_path / f"list.{fmt}"
    path.write_bytes(data)
    result = import_file(gov_b, path, fmt, "test", source="isp-a")  # type: ignore[arg-type]
    assert (result.loaded, result.skipped) == (n, 0)
    assert _reputation_as_list(gov_b, "isp-a").to_pylist() == _expected(gov).to_pylist()


@pytest.mark.parametrize(
    ("fmt", "text", "loaded", "skipped"),
    [
        ("stix", b"{not json", 0, 1),
        (
            "stix",
            b'{"type": "bundle", "objects": [{"type": "indicator", "id": "indicator--1", '
            b'"pattern_type": "stix", "pattern": "[file:name = \'x\']"}, 7]}',
            0,
            2,
        ),
        (
            "misp",
            b'{"Event": {"Attribute": [{"type": "ip-dst|port", "value": "203.0.113.1|x"},'
            b'{"type": "ip-dst", "value": "203.0.113.2"}]}}',
            1,
            1,
        ),
        ("misp", b'{"nothing": 1}', 0, 1),
        ("csv", b'ip,port\n203.0.113.1,80\n203.0.113.2,70000\n"unterminated\n', 1, 2),
    ],
)
def test_bad_input_is_counted_and_the_rest_loaded(
    gov_b: Governance, tmp_path: Path, fmt: str, text: bytes, loaded: int, skipped: int
) -> None:
    path = tmp_path / "in"
    path.write_bytes(text)
    result = import_file(gov_b, path, fmt, "test", source="feed")  # type: ignore[arg-type]
    assert (result.loaded, result.skipped) == (loaded, skipped)
    assert len(result.problems) == skipped


def test_empty_list_schema() -> None:
    assert LIST_SCHEMA.names == [
        "ip",
        "port",
        "protocol",
        "first_seen",
        "last_seen",
        "confidence",
        "method",
    ]
