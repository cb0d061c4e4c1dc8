"""MISP event JSON: the structure MISP expects, and back."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from pymisp import MISPEvent

from mamori.governance import Governance
from mamori.share import export
from mamori.share.misp import event_to_list, list_to_event
from mamori.share.stix import ParseReport
from tests.share.conftest import finding, write_findings
from tests.share.test_stix import CASES, _list

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.mark.parametrize("case", sorted(CASES))
def test_event_structure(case: str) -> None:
    ev = json.loads(json.dumps(list_to_event(_list(CASES[case]), "Example ISP")))["Event"]
    assert _UUID.match(ev["uuid"]) and uuid.UUID(ev["uuid"])
    assert {
        "info",
        "date",
        "timestamp",
        "published",
        "analysis",
        "threat_level_id",
        "distribution",
        "Orgc",
        "Tag",
        "Attribute",
    } <= set(ev)
    assert {"name": "tlp:amber+strict"} in ev["Tag"] and ev["distribution"] == "0"
    assert len(ev["Attribute"]) == len(CASES[case])
    for a, (ip, port, proto, conf, _m) in zip(ev["Attribute"], CASES[case], strict=True):
        assert _UUID.match(a["uuid"])
        assert a["category"] == "Network activity" and a["to_ids"] is True
        assert (a["type"], a["value"]) == (
            ("ip-dst|port", f"{ip}|{port}") if port is not None else ("ip-dst", ip)
        )
        tags = {t["name"] for t in a["Tag"]}
        assert (f'mamori:protocol="{proto}"' in tags) == (proto is not None)
        assert (f'mamori:confidence="{conf}"' in tags) == (conf is not None)


def test_tlp_green_is_community(gov: Governance) -> None:
    ev = list_to_event(_list(CASES["v4 tcp"]), "Example ISP", "green")["Event"]
    assert {"name": "tlp:green"} in ev["Tag"] and ev["distribution"] == "1"


@pytest.mark.parametrize("case", sorted(CASES))
def test_reads_back(case: str) -> None:
    table = _list(CASES[case])
    report = ParseReport()
    back = event_to_list(list_to_event(table, "Example ISP"), report)
    assert back.drop_columns(["method"]).equals(table.drop_columns(["method"]))


def test_export_and_response_wrapper(gov: Governance) -> None:
    write_findings(gov, [finding("203.0.113.5"), finding("203.0.113.6", 80)])
    data, n = export(gov, "misp", "test", tlp="red", include_candidates=True)
    doc = json.loads(data)
    assert n == 2 and {"name": "tlp:red"} in doc["Event"]["Tag"]
    report = ParseReport()
    assert event_to_list({"response": [doc, doc]}, report).num_rows == 4


@pytest.mark.parametrize("case", sorted(CASES))
def test_pymisp_model_accepts_the_export(case: str) -> None:
    """PyMISP's own model (offline: no MISP server) loads every event we write; it checks
    attribute types and categories against MISP's describeTypes, so an event it accepts is one
    a MISP instance imports."""
    table = _list(CASES[case])
    ev = MISPEvent()
    ev.load(json.dumps(list_to_event(table, "Example ISP", "amber")))
    assert ev.info.startswith("Example ISP") and ev.distribution == 1
    assert [t.name for t in ev.tags] == ["tlp:amber", 'kill-chain:"Command and Control"']
    assert ev.Orgc.name == "Example ISP"
    got = [(a.type, a.value, a.category, a.to_ids) for a in ev.attributes]
    want = [
        ("ip-dst|port", f"{ip}|{port}") if port is not None else ("ip-dst", ip)
        for ip, port, *_ in CASES[case]
    ]
    assert got == [(t, v, "Network activity", True) for t, v in want]
    firsts = table.column("first_seen").to_pylist()
    assert [a.first_seen for a in ev.attributes] == firsts


def test_reads_an_event_pymisp_wrote() -> None:
    """A partner's event, written with PyMISP, comes back as list rows (other attribute types
    ignored)."""
    ev = MISPEvent()
    ev.info = "partner C&C list"
    ev.add_attribute("ip-dst|port", "198.51.100.7|8080", category="Network activity")
    a = ev.add_attribute("ip-dst", "2001:db8::7", category="Network activity")
    a.add_tag('mamori:confidence="0.5"')
    a.first_seen = "2026-11-01T00:00:00Z"
    ev.add_attribute("domain", "cnc.partner.example", category="Network activity")
    report = ParseReport()
    rows = event_to_list({"Event": json.loads(ev.to_json())}, report).to_pylist()
    assert [(r["ip"], r["port"], r["confidence"]) for r in rows] == [
        ("198.51.100.7", 8080, None),
        ("2001:db8::7", None, 0.5),
    ]
    assert rows[1]["first_seen"] is not None and report.rows == 2
