"""Reputation feeds: every format parses its fixture; malformed lines are reported with their
numbers and the good lines around them are kept; the list in force per source."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from mamori.config import ReputationConfig
from mamori.governance import Governance
from mamori.ingest.reputation import (
    FeedError,
    current_reputation,
    detect_format,
    load_feed,
    parse_feed,
)
from mamori.schemas import REPUTATION
from tests.conftest import make_config

DATA = Path(__file__).parent.parent / "data" / "reputation"

# file, format, format reported, rows, bad line numbers, skipped, an indicator it must hold
CASES = [
    ("feodo-ipblocklist.csv", "feodo", "feodo", 3, [12, 13, 14], 0, ("198.51.100.20", 8080, None)),
    ("feodo-ipblocklist.json", "feodo", "feodo-json", 2, [3, 4], 0, ("192.0.2.10", 443, None)),
    ("urlhaus.csv", "urlhaus", "urlhaus", 3, [12], 0, ("2001:db8::7", 8080, None)),
    ("threatfox.csv", "threatfox", "threatfox", 3, [14, 15], 1, (None, None, "cc.bad-actor.example")),
    ("threatfox.json", "threatfox", "threatfox-json", 2, [4], 1, ("198.51.100.77", 2404, None)),
    ("stix-bundle.json", "stix", "stix", 4, [8, 9], 1, ("203.0.113.40", 449, None)),
    ("misp-event.json", "misp", "misp", 6, [7], 3, ("198.51.100.150", 7080, None)),
    ("plain-blocklist.txt", "plain", "plain", 5, [6, 9], 0, ("2001:db8::99", 443, None)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fmt", "reported", "rows", "bad", "skipped", "holds"),
    CASES,
    ids=[c[0] for c in CASES],
)
@pytest.mark.parametrize("given", [True, False], ids=["format-given", "format-detected"])
def test_fixture_parses_with_bad_lines_numbered(
    name: str,
    fmt: str,
    reported: str,
    rows: int,
    bad: list[int],
    skipped: int,
    holds: tuple[str | None, int | None, str | None],
    given: bool,
) -> None:
    table, report = parse_feed(DATA / name, fmt if given else None)
    assert report.format == reported
    assert table.schema == REPUTATION.arrow
    assert (report.rows_loaded, table.num_rows) == (rows, rows)
    assert report.rows_bad == len(bad)
    assert [e.line for e in report.errors] == bad
    assert report.rows_skipped == skipped
    assert sum(report.by_category.values()) == rows
    ip, port, domain = holds
    found = [
        r
        for r in table.to_pylist()
        if (ip is None or r["ip"] == ip) and r["port"] == port and r["domain"] == domain
    ]
    assert found, f"{holds} not parsed from {name}"


CATEGORY_CASES = [
    # file, indicator (ip or domain), category, malware
    ("stix-bundle.json", "203.0.113.40", "c2", "TrickBot"),  # via infrastructure + malware
    ("stix-bundle.json", "login.phish.example", "phishing", None),  # via label
    ("misp-event.json", "dl.emotet-epoch5.example", "first-stage", "Emotet"),  # Payload delivery
    ("misp-event.json", "gate.emotet-epoch5.example", "c2", "Emotet"),  # kill-chain tag; case
    ("threatfox.csv", "pay.first-stage.example", "first-stage", "SmokeLoader"),
    ("urlhaus.csv", "dl.first-stage.example", "first-stage", "zip,Emotet"),
    ("feodo-ipblocklist.csv", "192.0.2.10", "c2", "QakBot"),
]


@pytest.mark.parametrize(("name", "key", "category", "malware"), CATEGORY_CASES)
def test_category_and_family(name: str, key: str, category: str, malware: str | None) -> None:
    table, _ = parse_feed(DATA / name)
    rows = [r for r in table.to_pylist() if key in (r["ip"], r["domain"])]
    assert rows
    assert {(r["category"], r["malware"]) for r in rows} == {(category, malware)}


def test_operator_category_confidence_and_expiry_win() -> None:
    at = datetime(2026, 11, 20, tzinfo=UTC)
    table, report = parse_feed(
        DATA / "plain-blocklist.txt",
        "plain",
        source="openphish",
        category="phishing",
        confidence=0.3,
        expires_days=2,
        loaded=at,
    )
    assert report.source == "openphish"
    assert set(table.column("category").to_pylist()) == {"phishing"}
    assert table.column("confidence").to_pylist() == [pytest.approx(0.3)] * table.num_rows
    assert set(table.column("expires").to_pylist()) == {at + timedelta(days=2)}
    # a feed's own expiry (STIX valid_until) is kept
    stix, _ = parse_feed(DATA / "stix-bundle.json", expires_days=100, loaded=at)
    exp = {r["ip"]: r["expires"] for r in stix.to_pylist() if r["ip"]}
    assert exp["203.0.113.40"] == datetime(2026, 12, 2, tzinfo=UTC)
    assert exp["203.0.113.41"] == at + timedelta(days=100)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"some": "object"}', "give --format"),
    ],
)
def test_unreadable_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "feed.json"
    p.write_text(text)
    with pytest.raises(FeedError, match=message):
        parse_feed(p, "stix" if text.startswith("{not") else None)


def test_bad_options_are_errors() -> None:
    with pytest.raises(FeedError, match="unknown category"):
        parse_feed(DATA / "plain-blocklist.txt", "plain", category="spam")
    with pytest.raises(FeedError, match="unknown format"):
        parse_feed(DATA / "plain-blocklist.txt", "csv")
    with pytest.raises(FeedError, match="no such file"):
        parse_feed(DATA / "missing.txt", "plain")


def test_sim_feeds_are_detected(tmp_path: Path) -> None:
    for name, fmt in [
        ("feodo-ipblocklist.csv", "feodo"),
        ("urlhaus.csv", "urlhaus"),
        ("threatfox.csv", "threatfox"),
        ("stix-bundle.json", "stix"),
        ("misp-event.json", "misp"),
        ("threatfox.json", "threatfox"),
        ("feodo-ipblocklist.json", "feodo"),
        ("plain-blocklist.txt", "plain"),
    ]:
        assert detect_format(DATA / name) == fmt, name


def test_load_and_current_reputation(gov: Governance, tmp_path: Path) -> None:
    r1 = load_feed(gov, DATA / "feodo-ipblocklist.csv", actor="test")
    assert r1.stored and r1.rows_loaded == 3
    t_first = r1.loaded_at
    assert t_first is not None
    # a newer download of the same source replaces the old list; another source stays
    newer = tmp_path / "feodo.csv"
    newer.write_text(
        '"first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"\n'
        '"2026-11-21 00:00:00","192.0.2.77","443","online","2026-11-21","QakBot"\n'
    )
    r2 = load_feed(gov, newer, "feodo", actor="test")
    load_feed(gov, DATA / "plain-blocklist.txt", actor="test", expires_days=1)
    now = current_reputation(gov, "M4", "test")
    feodo = {r["ip"] for r in now.to_pylist() if r["source"] == "feodo"}
    assert feodo == {"192.0.2.77"}
    assert {r["source"] for r in now.to_pylist()} == {"feodo", "plain-blocklist"}
    # as it was right after the first load
    then = current_reputation(gov, "M4", "test", at=t_first)
    assert {r["ip"] for r in then.to_pylist()} == {"192.0.2.10", "198.51.100.20", "203.0.113.32"}
    # expired entries are gone
    later = current_reputation(gov, "M4", "test", at=datetime.now(UTC) + timedelta(days=2))
    assert "plain-blocklist" not in set(later.column("source").to_pylist())
    assert r2.rows_loaded == 1
    # every load is audited as a registry write
    writes = [e for e in gov.audit.entries() if e.event == "write" and e.dataset == "reputation"]
    assert len(writes) == 3
    assert json.loads(writes[0].detail or "{}")["source"] == "feodo"


def test_nothing_stored_when_no_row_is_good(gov: Governance, tmp_path: Path) -> None:
    load_feed(gov, DATA / "feodo-ipblocklist.csv", actor="test")
    broken = tmp_path / "feodo.csv"
    broken.write_text('"2026-11-21 00:00:00","not-an-ip","443","online","2026-11-21","X"\n')
    report = load_feed(gov, broken, "feodo", actor="test")
    assert not report.stored and report.rows_bad == 1 and report.errors[0].line == 1
    assert current_reputation(gov, "M4", "test").num_rows == 3


def test_parse_large_feed_keeps_every_good_line(tmp_path: Path) -> None:
    n = 5000
    p = tmp_path / "big.txt"
    lines = [f"198.51.{(i >> 8) & 255}.{i & 255}:{1024 + i % 1000}" for i in range(n)]
    lines[1234] = "garbage line"
    p.write_text("\n".join(lines) + "\n")
    table, report = parse_feed(p, "plain")
    assert isinstance(table, pa.Table)
    assert report.rows_loaded == n - 1 and [e.line for e in report.errors] == [1235]


def test_cli_loads_and_reports_line_numbers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mamori.cli import app

    runner = CliRunner()
    store = tmp_path / "store"
    result = runner.invoke(
        app, ["--store", str(store), "ingest", "reputation", str(DATA / "threatfox.csv"), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["rows_loaded"], report["rows_bad"], report["stored"]) == (3, 2, True)
    assert [e["line"] for e in report["errors"]] == [14, 15]
    broken = tmp_path / "broken.txt"
    broken.write_text("not/a/thing\n")
    result = runner.invoke(
        app, ["--store", str(store), "ingest", "reputation", "--format", "plain", str(broken)]
    )
    assert result.exit_code == 1
    assert "line 1:" in result.output and "nothing was stored" in result.output


ALLOW_CASES = [
    # (allow_prefixes, allow_domains, what is left of the plain list)
    (
        (),
        (),
        {
            "192.0.2.99",
            "198.51.100.99",
            "cnc.plain-list.example",
            "phish.plain-list.example",
            "2001:db8::99",
        },
    ),
    (
        ("192.0.2.0/24",),
        (),
        {"198.51.100.99", "cnc.plain-list.example", "phish.plain-list.example", "2001:db8::99"},
    ),
    (
        ("2001:db8::/32", "198.51.100.99/32"),
        (),
        {"192.0.2.99", "cnc.plain-list.example", "phish.plain-list.example"},
    ),
    ((), ("plain-list.example",), {"192.0.2.99", "198.51.100.99", "2001:db8::99"}),
    (
        (),
        ("CNC.Plain-List.Example.",),
        {"192.0.2.99", "198.51.100.99", "phish.plain-list.example", "2001:db8::99"},
    ),
    ((), ("example",), {"192.0.2.99", "198.51.100.99", "2001:db8::99"}),
    (
        (),
        ("ain-list.example",),
        {
            "192.0.2.99",
            "198.51.100.99",
            "cnc.plain-list.example",
            "phish.plain-list.example",
            "2001:db8::99",
        },
    ),
]


@pytest.mark.parametrize(("prefixes", "domains", "left"), ALLOW_CASES)
def test_operator_allowlist_leaves_entries_out(
    tmp_path: Path, prefixes: tuple[str, ...], domains: tuple[str, ...], left: set[str]
) -> None:
    cfg = make_config(tmp_path / "store")
    cfg = cfg.model_copy(
        update={
            "reputation": ReputationConfig.model_validate(
                {"allow_prefixes": prefixes, "allow_domains": domains}
            )
        }
    )
    g = Governance(cfg)
    try:
        load_feed(g, DATA / "plain-blocklist.txt", actor="test")
        rows = current_reputation(g, "M4", "test").to_pylist()
        assert {r["ip"] or r["domain"] for r in rows} == left
    finally:
        g.close()


def test_allowlist_rejects_what_is_not_a_domain() -> None:
    with pytest.raises(ValueError, match="not domain names"):
        ReputationConfig.model_validate({"allow_domains": ["ok.example", "x' OR 1=1 --"]})
