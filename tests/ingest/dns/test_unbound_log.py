"""Unbound text query logs: table-driven lines, the simulator's files, and a log written by a real
Unbound with log-queries/log-replies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mamori.governance import Governance
from mamori.ingest.dns import ingest_unbound_log
from mamori.ingest.dns.unbound_log import parse_unbound_log
from tests.ingest.dns.test_dnstap import consent_gov  # noqa: F401  (fixture)
from tests.unbound_harness import DOMAIN, running_unbound


@pytest.fixture(scope="module")
def sim_dns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mamori.sim import simulate

    out = tmp_path_factory.mktemp("sim")
    simulate("tiny", out)
    return out / "dns"


@pytest.mark.parametrize(
    ("line", "row"),
    [
        (
            "[1793577600] unbound[2101:0] info: 10.48.0.5 www.Site1.example.jp. A IN",
            ("10.48.0.5", None, "www.site1.example.jp", 1, None),
        ),
        (
            "[1793577600] unbound[7:1] query: 2001:db8::5 x.example. AAAA IN",
            ("2001:db8::5", None, "x.example", 28, None),
        ),
        (
            "[1793577600] unbound[7:0] info: 10.0.0.1@53000 x.example. TYPE65 IN",
            ("10.0.0.1", 53000, "x.example", 65, None),
        ),
        (
            "[1793577600] unbound[7:0] reply: 10.0.0.1 nx.example. A IN NXDOMAIN 0.000100 0 40",
            ("10.0.0.1", None, "nx.example", 1, 3),
        ),
        ("[1793577600] unbound[7:0] info: 10.0.0.1 . NS IN", ("10.0.0.1", None, "", 2, None)),
    ],
)
def test_lines(line: str, row: tuple[object, ...]) -> None:
    table, stats = parse_unbound_log(line.encode() + b"\n", resolver="192.0.2.53")
    assert stats.queries == 1 and stats.malformed == 0
    got = table.to_pylist()[0]
    assert (got["client_addr"], got["client_port"], got["qname"], got["qtype"], got["rcode"]) == row
    assert got["resolver"] == "192.0.2.53"
    assert got["ts"].timestamp() == 1793577600


def test_damaged_and_foreign_lines() -> None:
    data = (
        b"[1793577600] unbound[1:0] notice: init module 0: respip\n"
        b"[1793577600] unbound[1:0] info: 10.0.0.1 ok.example. A IN\n"
        b"[1793577600] unbound[1:0] info: 10.0.0.1 cut.exam\n"
        b"\xff\xfe garbage\n"
        b"[1793577601] unbound[1:0] info: 10.0.0.2 ok2.example. MX IN\n"
    )
    table, stats = parse_unbound_log(data)
    assert table.column("qname").to_pylist() == ["ok.example", "ok2.example"]
    # a line that is not UTF-8 is malformed, as in every line format
    assert stats.malformed == 2 and stats.other == 1
    assert stats.examples[0].startswith("line 3:")
    assert stats.examples[1] == "line 4: not UTF-8 text"


def test_replies_are_not_counted_twice() -> None:
    data = (
        b"[1] unbound[1:0] info: 10.0.0.1 a.example. A IN\n"
        b"[1] unbound[1:0] info: 10.0.0.1 a.example. A IN NOERROR 0.0001 0 50\n"
    ).replace(b"[1]", b"[1793577600]")
    table, stats = parse_unbound_log(data)
    assert table.num_rows == 1 and stats.skipped_replies == 1


def test_simulator_log_and_dnstap_agree(gov: Governance, sim_dns: Path) -> None:
    from mamori.ingest.dns import ingest_dnstap_file

    a = ingest_unbound_log(gov, sim_dns / "unbound-resolver1.log", "test")
    b = ingest_dnstap_file(gov, sim_dns / "resolver1.dnstap", "test")
    assert a.queries == b.queries > 0 and a.malformed == b.malformed == 0


def test_real_unbound_log(consent_gov: Governance, tmp_path: Path) -> None:  # noqa: F811
    """Unbound's own log-queries output, consent-filtered into the store."""
    with running_unbound(
        tmp_path / "ub", "", extra_server="  log-queries: yes\n  log-replies: yes\n"
    ) as ub:
        ub.answer(f"cc1.{DOMAIN}", "127.0.0.2")
        ub.answer(f"nothere.{DOMAIN}", "127.0.0.2")
        ub.answer(f"cc1.{DOMAIN}", "127.0.0.3")
        time.sleep(0.2)
        log = ub.directory / "unbound.log"
        report = ingest_unbound_log(consent_gov, log, "test", resolver="127.0.0.1")
    assert (report.queries, report.stored, report.malformed) == (3, 2, 0)
    rows = consent_gov.open("M4", "dns_queries", ["client_addr", "qname"], "test").arrow()
    assert sorted(zip(*(rows.column(c).to_pylist() for c in rows.column_names), strict=True)) == [
        ("127.0.0.2", f"cc1.{DOMAIN}"),
        ("127.0.0.2", f"nothere.{DOMAIN}"),
    ]
