"""Hostile input to every JSON reader: one record nested 100,000 deep, or a STIX pattern of 20,000
``OR``, costs that record (reported with its position), never the file.

One table, every format: feeds (STIX, MISP, Feodo and ThreatFox JSON), reports (X-ARF as JSON
lines and as an array, plain JSON) and the share importer (STIX, MISP). Each file holds a good
record, the hostile one, and another good record. Before the bounds, each ended in
``RecursionError`` and nothing was read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mamori.governance import Governance
from mamori.ingest.reports import parse_report
from mamori.ingest.reputation import parse_feed
from mamori.share import import_file

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_PATTERN = "[" + " OR ".join(f"ipv4-addr:value = '203.0.113.{i % 250}'" for i in range(20_000))
HUGE_PATTERN += "]"
# short enough to pass the length bound (about 12,000 characters), still past the grammar's stack
MANY_OPS = "[" + " OR ".join("x-y:z = 1" for _ in range(1_000)) + "]"


def _j(value: object) -> str:
    return json.dumps(value)


def _indicator(n: int, pattern: str | None = None, extra: str = "") -> str:
    body = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd{n:02d}",
        "created": "2026-11-01T00:00:00.000Z",
        "modified": "2026-11-01T00:00:00.000Z",
        "name": "C&C server",
        "indicator_types": ["malicious-activity"],
        "pattern": pattern or f"[ipv4-addr:value = '203.0.113.{n}']",
        "pattern_type": "stix",
        "valid_from": "2026-11-01T00:00:00.000Z",
    }
    text = _j(body)
    return text[:-1] + f', "x_nested": {extra}' + "}" if extra else text


def _stix(middle: str) -> str:
    objs = ",\n".join([_indicator(1), middle, _indicator(3)])
    head = '{"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": ['
    return head + "\n" + objs + "\n]}"


def _attr(ip: str, extra: str = "") -> str:
    text = _j({"type": "ip-dst", "category": "Network activity", "to_ids": True, "value": ip})
    return text[:-1] + f', "Tag": {extra}' + "}" if extra else text


def _misp(middle: str) -> str:
    attrs = ",\n".join([_attr("203.0.113.1"), middle, _attr("203.0.113.3")])
    return (
        '{"Event": {"info": "C&C servers", "Tag": [{"name": "kill-chain:\\"Command and Control\\""}], "Attribute": [\n'
        + attrs
        + "\n]}}"
    )


def _misp_events(middle: str) -> str:
    def event(ip: str) -> str:
        return '{"Event": {"info": "C&C servers", "Attribute": [' + _attr(ip) + "]}}"

    return (
        '{"response": [\n'
        + ",\n".join([event("203.0.113.1"), middle, event("203.0.113.3")])
        + "\n]}"
    )


def _feodo(middle: str) -> str:
    def entry(ip: str) -> str:
        return _j(
            {
                "ip_address": ip,
                "port": 443,
                "first_seen": "2026-10-01 07:44:46",
                "malware": "QakBot",
            }
        )

    return "[\n" + ",\n".join([entry("203.0.113.1"), middle, entry("203.0.113.3")]) + "\n]"


def _threatfox(middle: str) -> str:
    def entry(ip: str) -> str:
        return _j({"ioc_value": f"{ip}:2404", "ioc_type": "ip:port", "threat_type": "botnet_cc"})

    return (
        '{"query_status": "ok", "data": [\n'
        + ",\n".join([entry("203.0.113.1"), middle, entry("203.0.113.3")])
        + "\n]}"
    )


def _xarf(n: int, extra: str = "") -> str:
    body = {
        "xarf_version": "4.2.0",
        "report_id": f"2b0a5b1e-8f0c-4b7e-9d39-1f6a1c0b6e{n:02d}",
        "timestamp": "2026-11-02T06:00:00Z",
        "reporter": {
            "org": "Example CERT",
            "contact": "abuse@cert.example",
            "domain": "cert.example",
        },
        "sender": {
            "org": "Example CERT",
            "contact": "abuse@cert.example",
            "domain": "cert.example",
        },
        "source_identifier": f"10.16.0.{n}",
        "category": "connection",
        "type": "infected_host",
        "source_port": 50329,
        "first_seen": "2026-11-02T00:18:19Z",
        "protocol": "tcp",
        "bot_type": "malicious",
        "bot_name": "Emotet",
    }
    text = _j(body)
    return text[:-1] + f', "evidence": {extra}' + "}" if extra else text


def _report(n: int, extra: str = "") -> str:
    text = _j({"ip": f"10.16.0.{n}", "timestamp": "2026-11-02T00:00:41Z", "port": 4444})
    return text[:-1] + f', "x": {extra}' + "}" if extra else text


# (what is read, how, file text, the hostile record's position, what the report says of it)
Read = Callable[[Path, Governance], tuple[int, list[tuple[int | str, str]]]]


def _feed(fmt: str) -> Read:
    def read(path: Path, gov: Governance) -> tuple[int, list[tuple[int | str, str]]]:
        table, report = parse_feed(path, fmt)
        return table.num_rows, [(e.line, e.reason) for e in report.errors]

    return read


def _reports(fmt: str) -> Read:
    def read(path: Path, gov: Governance) -> tuple[int, list[tuple[int | str, str]]]:
        p = parse_report(path, fmt)
        return p.good, [(b.line, b.reason) for b in p.bad]

    return read


def _share(fmt: str) -> Read:
    def read(path: Path, gov: Governance) -> tuple[int, list[tuple[int | str, str]]]:
        r = import_file(gov, path, fmt, "test", "peer")  # type: ignore[arg-type]
        return r.loaded, [(p.split(":")[0], p) for p in r.problems]

    return read


CASES: list[tuple[str, Read, str, int | str, str]] = [
    ("stix nested", _feed("stix"), _stix(_indicator(2, extra=DEEP)), 2, "nested deeper than 64"),
    ("stix pattern", _feed("stix"), _stix(_indicator(2, HUGE_PATTERN)), 2, "characters"),
    ("stix operators", _feed("stix"), _stix(_indicator(2, MANY_OPS)), 2, "999 operators"),
    ("stix deep item", _feed("stix"), _stix(DEEP), 2, "nested deeper"),
    ("misp attribute", _feed("misp"), _misp(_attr("203.0.113.2", DEEP)), 2, "nested deeper"),
    ("misp event", _feed("misp"), _misp_events(DEEP), 2, "nested deeper"),
    ("feodo json", _feed("feodo"), _feodo('{"ip_address": ' + DEEP + "}"), 2, "nested deeper"),
    ("threatfox json", _feed("threatfox"), _threatfox(DEEP), 2, "nested deeper"),
    (
        "xarf lines",
        _reports("xarf"),
        "\n".join([_xarf(1), _xarf(2, DEEP), _xarf(3)]) + "\n",
        2,
        "nested deeper",
    ),
    (
        "xarf array",
        _reports("xarf"),
        "[" + ",\n".join([_xarf(1), _xarf(2, DEEP), _xarf(3)]) + "]",
        2,
        "nested deeper",
    ),
    (
        "json report",
        _reports("json"),
        "[" + ",\n".join([_report(1), _report(2, DEEP), _report(3)]) + "]",
        2,
        "nested deeper",
    ),
    (
        "share stix",
        _share("stix"),
        _stix(_indicator(2, extra=DEEP)),
        "object 1 (indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd02)",
        "nested deeper",
    ),
    (
        "share stix pattern",
        _share("stix"),
        _stix(_indicator(2, HUGE_PATTERN)),
        "object 1 (indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd02)",
        "characters",
    ),
    (
        "share misp",
        _share("misp"),
        _misp(_attr("203.0.113.2", DEEP)),
        "event 0 attribute 1",
        "nested deeper",
    ),
]


@pytest.mark.parametrize(
    ("read", "text", "position", "why"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_one_hostile_record_costs_only_itself(
    tmp_path: Path, gov: Governance, read: Read, text: str, position: int | str, why: str
) -> None:
    path = tmp_path / "input.json"
    path.write_text(text)
    good, bad = read(path, gov)
    assert good == 2
    assert [p for p, _ in bad] == [position]
    assert why in bad[0][1]
