"""MISP event JSON: the structure MISP expects, and back."""

from __future__ import annotations

import json
import re
import uuid

import pytest

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
    data, n = export(gov, "misp", "test", tlp="red")
    doc = json.loads(data)
    assert n == 2 and {"name": "tlp:red"} in doc["Event"]["Tag"]
    report = ParseReport()
    assert event_to_list({"response": [doc, doc]}, report).num_rows == 4
