"""RPZ zone files: contents, serials, atomic replacement, and Unbound answering from them."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.name
import dns.rdatatype
import dns.zone
import pyarrow as pa
import pytest

from mamori.act.base import current
from mamori.act.rpz import build_zone, generate_rpz, next_serial, policy_names
from mamori.config import DnsConfig
from mamori.governance import Governance
from tests.act.conftest import REPUTATION, reputation_table
from tests.conftest import make_config
from tests.unbound_harness import DOMAIN, running_unbound

NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("row", "categories", "expected"),
    [
        (("domain", "CC.Example.", None, "c2", None), ["c2"], ["cc.example"]),
        (("domain", "*.cc.example", None, "c2", None), ["c2"], ["cc.example"]),
        (("domain", " cc.example ", None, "c2", None), ["c2"], ["cc.example"]),
        (
            ("url", None, "https://u:p@Mal.example:8443/a?b", "malware-site", None),
            ["malware-site"],
            ["mal.example"],
        ),
        (("url", None, "http://203.0.113.5/x.exe", "malware-site", None), ["malware-site"], []),
        (("domain", "cc.example", None, "c2", NOW - timedelta(seconds=1)), ["c2"], []),
        (("domain", "cc.example", None, "c2", NOW + timedelta(days=1)), ["c2"], ["cc.example"]),
        (("domain", "cc.example", None, "phishing", None), ["c2"], []),
        (("domain", "com", None, "c2", None), ["c2"], []),  # never a whole TLD
        (("domain", "bad name.example", None, "c2", None), ["c2"], []),
        (("domain", "-x.example", None, "c2", None), ["c2"], []),
        (("domain", "a" * 64 + ".example", None, "c2", None), ["c2"], []),
        (("domain", "_dmarc.x.example", None, "c2", None), ["c2"], ["_dmarc.x.example"]),
        (("ip", None, None, "c2", None), ["c2"], []),
    ],
)
def test_policy_names(
    row: tuple[str, str | None, str | None, str, datetime | None],
    categories: list[str],
    expected: list[str],
) -> None:
    names, _ = policy_names(reputation_table([row]), categories, at=NOW)
    assert names.to_pylist() == expected


def test_bad_names_are_counted_and_logged_with_row_numbers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = [
        ("domain", "ok.example", None, "c2", None),
        ("domain", "not a name", None, "c2", None),
        ("domain", "ok2.example", None, "c2", None),
    ]
    with caplog.at_level(logging.WARNING):
        names, rejected = policy_names(reputation_table(rows), ["c2"], at=NOW)
    assert sorted(names.to_pylist()) == ["ok.example", "ok2.example"]
    assert rejected == 1
    assert "row 1: 'not a name'" in caplog.text


def test_never_block_spares_a_domain_and_its_subdomains() -> None:
    rows = [("domain", n, None, "c2", None) for n in ("x.cdn.example", "cdn.example", "y.example")]
    names, _ = policy_names(reputation_table(rows), ["c2"], at=NOW, never_block=["cdn.example."])
    assert names.to_pylist() == ["y.example"]


@pytest.mark.parametrize(
    ("c2_action", "rdtype", "target"),
    [
        ("nxdomain", "CNAME", "."),
        ("nodata", "CNAME", "*."),
        ("drop", "CNAME", "rpz-drop."),
        ("cname-warning", "CNAME", f"warning.{DOMAIN}."),
    ],
)
def test_zone_files_parse_and_hold_the_policy(
    dns_gov: Governance, tmp_path: Path, c2_action: str, rdtype: str, target: str
) -> None:
    result = generate_rpz(dns_gov, "test", out_dir=tmp_path / "z", c2_action=c2_action)  # type: ignore[arg-type]
    c2 = result.by_measure("M7")
    zone = dns.zone.from_file(str(c2.path), origin=c2.zone, relativize=False)
    origin = dns.name.from_text(c2.zone)
    cc = dns.name.from_text(f"cc1.{DOMAIN}", origin)
    for owner in (cc, dns.name.from_text(f"*.cc1.{DOMAIN}", origin)):
        rrset = zone.find_rrset(owner, rdtype)
        assert [rd.to_text() for rd in rrset] == [target]
    assert c2.names == 1 and c2.records == 2
    soa = zone.find_rdataset(origin, "SOA")[0]
    assert soa.serial == c2.serial  # type: ignore[attr-defined]

    warn = result.by_measure("M8")
    wz = dns.zone.from_file(str(warn.path), origin=warn.zone, relativize=False)
    listed = sorted(
        n.relativize(dns.name.from_text(warn.zone)).to_text()
        for n, rds in wz.iterate_rdatasets()
        if rds.rdtype == dns.rdatatype.CNAME
    )
    assert listed == sorted(
        [f"malware.{DOMAIN}", f"*.malware.{DOMAIN}", f"phish.{DOMAIN}", f"*.phish.{DOMAIN}"]
    )


def test_warning_addresses_instead_of_cname(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path / "store", dns=DnsConfig(warning_addrs=("192.0.2.80", "2001:db8::80"))
    )
    with Governance(cfg) as gov:
        gov.write_registry("reputation", reputation_table(REPUTATION), "test", source="test")
        warn = generate_rpz(gov, "test").by_measure("M8")
    zone = dns.zone.from_file(str(warn.path), origin=warn.zone, relativize=True)
    node = zone.find_node(f"malware.{DOMAIN}")
    assert sorted(rds.to_text() for rds in node.rdatasets) == [
        "300 IN A 192.0.2.80",
        "300 IN AAAA 2001:db8::80",
    ]


def test_serials_increase_and_replace_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "c2.rpz.mamori.zone"
    names = pa.array(["a.example"])
    s1, _ = build_zone(path, "c2.rpz.mamori.", names, ["CNAME ."])
    s2, _ = build_zone(path, "c2.rpz.mamori.", names, ["CNAME ."])
    s3, _ = build_zone(path, "c2.rpz.mamori.", pa.array([], pa.string()), ["CNAME ."])
    assert s1 < s2 < s3
    assert next_serial(path, now=0) == s3 + 1  # a clock going back cannot lower it
    assert next_serial(tmp_path / "absent.zone", now=1234) == 1234
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    dns.zone.from_file(str(path), origin="c2.rpz.mamori.")  # an empty zone is still a zone


def test_generation_is_recorded_as_actions(dns_gov: Governance, tmp_path: Path) -> None:
    first = generate_rpz(dns_gov, "test", out_dir=tmp_path)
    writes = [e for e in dns_gov.audit.entries() if e.dataset == "actions" and e.event == "write"]
    steps = [(e.measure, json.loads(e.detail or "{}")["step"]) for e in writes]
    assert steps == [(m, s) for m in ("M7", "M8") for s in ("proposed", "approved", "applied")]
    assert all(e.legal_basis == "consent" and e.actor == "test" for e in writes)
    now = current(dns_gov, "test")
    for z in first.zones:
        a = now[f"rpz-{z.measure}-{z.serial}"]
        assert (a.kind, a.state, a.target, a.approved_by) == ("rpz", "applied", z.zone, "test")
        assert a.expires > a.start  # type: ignore[operator]
    # a rebuild replaces the zone: the earlier action ends (superseded), the new one is applied
    second = generate_rpz(dns_gov, "test", out_dir=tmp_path)
    now = current(dns_gov, "test")
    for z1, z2 in zip(first.zones, second.zones, strict=True):
        assert now[f"rpz-{z1.measure}-{z1.serial}"].state == "ended"
        assert now[f"rpz-{z2.measure}-{z2.serial}"].state == "applied"
    assert z2.path.stat().st_size > 200  # not withdrawn: the new zone is in force


def test_unbound_answers_nodata_for_c2_when_configured(dns_gov: Governance, tmp_path: Path) -> None:
    import subprocess

    from mamori.act.resolver import prepare_resolver_files, unbound_snippet

    prepare_resolver_files(dns_gov, "test")
    generate_rpz(dns_gov, "test", c2_action="nodata")
    with running_unbound(tmp_path / "ub", unbound_snippet(dns_gov.config)) as ub:
        assert ub.answer(f"cc1.{DOMAIN}", "127.0.0.2") == ("NOERROR", [])
        assert ub.answer(f"cc1.{DOMAIN}", "127.0.0.3") == ("NOERROR", ["203.0.113.66"])
        zones = subprocess.run(
            [*ub.control, "list_auth_zones"], capture_output=True, text=True, check=True
        ).stdout
        assert "c2.rpz.mamori." in zones and "warning.rpz.mamori." in zones


def test_a_name_the_feed_no_longer_lists_leaves_the_zone(
    dns_gov: Governance, tmp_path: Path
) -> None:
    import time

    time.sleep(0.01)  # a later load of the same source
    later = reputation_table([("domain", "new.example", None, "c2", None)])
    later = later.set_column(
        0, "loaded", pa.array([datetime.now(UTC)], pa.timestamp("ms", tz="UTC"))
    )
    dns_gov.write_registry("reputation", later, "test", source="test")
    c2 = generate_rpz(dns_gov, "test", out_dir=tmp_path).by_measure("M7")
    zone = dns.zone.from_file(str(c2.path), origin=c2.zone, relativize=True)
    assert sorted(n.to_text() for n, _ in zone.iterate_rdatasets("CNAME")) == [
        "*.new.example",
        "new.example",
    ]
