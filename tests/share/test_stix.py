"""STIX 2.1 export: every bundle passes stix2 parsing and stix2-validator; it reads back."""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa
import pytest
import stix2
from stix2validator import ValidationOptions, validate_string

from mamori.governance import Governance
from mamori.share import export
from mamori.share.c2list import LIST_SCHEMA
from mamori.share.stix import TLP_IDS, ParseReport, bundle, list_to_objects, objects_to_list
from tests.conftest import HOUR, T0
from tests.share.conftest import finding, write_findings


def _list(rows: list[tuple[str, int | None, str | None, float | None, str | None]]) -> pa.Table:
    return pa.table(
        {
            "ip": [r[0] for r in rows],
            "port": [r[1] for r in rows],
            "protocol": [r[2] for r in rows],
            "first_seen": [T0] * len(rows),
            "last_seen": [T0 + HOUR] * len(rows),
            "confidence": [r[3] for r in rows],
            "method": [r[4] for r in rows],
        },
        schema=LIST_SCHEMA,
    )


CASES = {
    "v4 tcp": [("203.0.113.5", 443, "tcp", 0.87, "correlation")],
    "v4 udp, no method": [("198.18.0.1", 53, "udp", 0.5, None)],
    "v6 no port": [("2001:db8::1", None, None, None, None)],
    "several": [("203.0.113.5", 443, "tcp", 1.0, "learned"), ("203.0.113.6", 1, "tcp", 0.0, "x")],
    "empty": [],
}


def _validate(b: dict[str, object]) -> None:
    text = json.dumps(b)
    result = validate_string(text, ValidationOptions(version="2.1", strict=True))
    assert result.is_valid, [str(e) for e in result.errors]
    assert not result.warnings, [str(w) for w in result.warnings]
    stix2.parse(text, allow_custom=False)


@pytest.mark.parametrize("tlp", sorted(TLP_IDS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_bundles_validate(case: str, tlp: str) -> None:
    b = bundle(list_to_objects(_list(CASES[case]), "Example ISP", tlp))
    _validate(b)
    objs = b["objects"]
    assert isinstance(objs, list)
    marking, ident = objs[0], objs[1]
    assert marking["id"] == TLP_IDS[tlp] and ident["type"] == "identity"
    for o in objs[2:]:
        assert o["created_by_ref"] == ident["id"]
        assert o["object_marking_refs"] == [TLP_IDS[tlp]]
    kinds = [o["type"] for o in objs[2:]]
    assert kinds == ["indicator", "infrastructure", "relationship"] * len(CASES[case])


def test_default_marking_is_amber_strict(gov: Governance) -> None:
    write_findings(gov, [finding("203.0.113.5")])
    data, n = export(gov, "stix", "test", include_candidates=True)
    b = json.loads(data)
    _validate(b)
    assert n == 1
    assert b["objects"][0]["id"] == "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003"
    assert b["objects"][0]["name"] == "TLP:AMBER+STRICT"
    infra = [o for o in b["objects"] if o["type"] == "infrastructure"]
    assert infra[0]["infrastructure_types"] == ["command-and-control"]
    ind = next(o for o in b["objects"] if o["type"] == "indicator")
    assert ind["pattern"] == (
        "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = "
        "'203.0.113.5' AND network-traffic:dst_port = 443 AND "
        "network-traffic:protocols[*] = 'tcp']"
    )


def test_unknown_tlp_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown TLP level"):
        list_to_objects(_list([]), "Example ISP", "purple")


def test_ids_are_stable_and_versions_follow_last_seen() -> None:
    a = list_to_objects(_list(CASES["v4 tcp"]), "Example ISP")
    later = _list(CASES["v4 tcp"]).set_column(
        4,
        "last_seen",
        pa.array([datetime(2026, 11, 5, tzinfo=T0.tzinfo)], LIST_SCHEMA.field("last_seen").type),
    )
    b = list_to_objects(later, "Example ISP")
    assert [o["id"] for o in a] == [o["id"] for o in b]
    assert a[2]["modified"] < b[2]["modified"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_reads_back(case: str) -> None:
    table = _list(CASES[case])
    report = ParseReport()
    back = objects_to_list(list_to_objects(table, "Example ISP"), report)
    assert back.drop_columns(["method"]).equals(table.drop_columns(["method"]))
    assert report.skipped == 0


def test_reads_others_indicators_and_counts_the_rest() -> None:
    objs = [
        {
            "type": "indicator",
            "id": "indicator--a",
            "pattern_type": "stix",
            "pattern": "[ipv4-addr:value = '198.51.100.77']",
            "valid_from": "2026-11-01T00:00:00Z",
            "confidence": 40,
        },
        {"type": "indicator", "id": "indicator--b", "pattern_type": "sigma", "pattern": "x"},
        {
            "type": "indicator",
            "id": "indicator--c",
            "revoked": True,
            "pattern_type": "stix",
            "pattern": "[ipv4-addr:value = '198.51.100.78']",
        },
        {"type": "malware", "id": "malware--d"},
        "junk",
    ]
    report = ParseReport()
    rows = objects_to_list(objs, report).to_pylist()
    assert [(r["ip"], r["port"], r["confidence"]) for r in rows] == [
        ("198.51.100.77", None, pytest.approx(0.4))
    ]
    assert report.skipped == 3 and len(report.problems) == 3
