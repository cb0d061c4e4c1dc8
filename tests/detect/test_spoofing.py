"""Spoofed sources (BCP 38, M13): findings per customer-facing interface from the flows, the
uRPF/ACL renderings (golden files), the command line and the transparency report's counts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mamori.act.antispoof import iosxr_antispoof, junos_antispoof, nft_antispoof
from mamori.cli import app
from mamori.config import MamoriConfig
from mamori.config_network import CustomerInterface, NetworkConfig
from mamori.detect.base import Window
from mamori.detect.registry import build
from mamori.detect.spoofing import SpoofingDetector, SpoofingParams
from mamori.governance import Governance
from mamori.report.transparency import build_report, to_csv
from tests.conftest import T0, make_config, table

BNG = "192.0.2.254"
IFACES = (
    # home subscribers behind a BNG port: the dynamic pool, plus an IPv6 prefix
    CustomerInterface(exporter=BNG, ifindex=7, name="ge-0/0/1.100", pools=("home-dynamic",),
                      prefixes=("2001:db8:100::/48",)),
    # a business customer: its own /28
    CustomerInterface(exporter=BNG, ifindex=9, name="ge-0/0/2", prefixes=("203.0.113.16/28",)),
)  # fmt: skip
GOLDEN = Path(__file__).parents[1] / "act" / "golden"


def _cfg(store: Path) -> MamoriConfig:
    return make_config(store, network=NetworkConfig(customer_interfaces=IFACES))


@pytest.fixture
def sgov(tmp_path: Path) -> Iterator[Governance]:
    g = Governance(_cfg(tmp_path / "store"))
    yield g
    g.close()


def rec(src: str, ifindex: int, *, at_min: int = 0, packets: int = 1, rate: int | None = 1000,
        exporter: str = BNG) -> dict[str, Any]:  # fmt: skip
    return {
        "time_start": T0 + timedelta(minutes=at_min),
        "time_end": T0 + timedelta(minutes=at_min),
        "src_addr": src,
        "dst_addr": "198.51.100.200",
        "src_port": 40000,
        "dst_port": 80,
        "protocol": 17,
        "packets": packets,
        "bytes": 100 * packets,
        "exporter": exporter,
        "input_if": ifindex,
        "sampling_rate": rate,
    }


def _flows(gov: Governance) -> None:
    rows = [rec("10.0.3.4", 7, at_min=i) for i in range(20)]  # legitimate home traffic
    rows += [rec("2001:db8:100::5", 7)]  # legitimate IPv6
    rows += [rec(f"198.18.0.{i}", 7, at_min=i, packets=2) for i in range(5)]  # spoofed
    rows += [rec("2001:db8:999::1", 7, rate=None)]  # spoofed IPv6, rate unknown
    rows += [rec("203.0.113.20", 9, at_min=i) for i in range(10)]  # the business, its own /28
    rows += [rec("203.0.113.40", 9)]  # one stray record: under min_records
    rows += [rec("198.18.9.9", 3) for _ in range(10)]  # an upstream port: not customer-facing
    rows += [rec("198.18.9.9", 7, exporter="192.0.2.253") for _ in range(10)]  # another router
    gov.write("M1", "flows", table(rows), "collector")


def test_findings_per_customer_interface(sgov: Governance) -> None:
    _flows(sgov)
    run = SpoofingDetector().run(sgov, Window(), actor="t")
    [f] = run.findings.to_pylist()
    ev = json.loads(f["evidence"])
    assert (f["kind"], f["method"], f["ip"], f["measure"]) == (
        "spoofing", "ingress-source", BNG, "M13",
    )  # fmt: skip
    assert ev["interface"] == "ge-0/0/1.100" and ev["input_if"] == 7
    assert ev["records"] == 6 and ev["records_on_interface"] == 27
    assert ev["sampled_packets"] == 11
    assert ev["estimated_packets"] == 10_000  # the record of unknown rate adds nothing
    assert ev["unknown_rate_records"] == 1 and ev["distinct_sources"] == 6
    assert f["score"] == pytest.approx(6 / 27, rel=1e-4)
    assert f["first_seen"] == T0 and f["last_seen"] == T0 + timedelta(minutes=4)
    assert "198.18" not in f["evidence"]  # no spoofed address is kept
    # stored, and counted in the month's transparency report
    stored = sgov.open("M13", "findings", None, "t").arrow().to_pylist()
    assert [r["finding_id"] for r in stored] == [f["finding_id"]]
    month = f["detected"].strftime("%Y-%m")  # counted in the month it was found
    report = build_report(sgov, month, actor="t")
    counts = [(c.measure, c.kind, c.method, c.findings) for c in report.findings]
    assert counts == [("M13", "spoofing", "ingress-source", 1)]
    assert f"{month},findings,M13:spoofing:ingress-source,findings,1" in to_csv(report)
    assert run.summary["spoofed_records"] == 7  # the stray business record counted, not reported


def test_thresholds_are_parameters(sgov: Governance) -> None:
    _flows(sgov)
    low = SpoofingDetector(SpoofingParams(min_records=1), write=False).run(
        sgov, Window(), actor="t"
    )
    assert sorted(json.loads(f)["interface"] for f in low.findings.column("evidence").to_pylist()) == [
        "ge-0/0/1.100", "ge-0/0/2",
    ]  # fmt: skip
    high = build("spoofing", {"spoofing": {"min_share": 0.5}}, write=False)
    assert high.run(sgov, Window(), actor="t").findings.num_rows == 0


def test_window_limits_what_is_counted(sgov: Governance) -> None:
    _flows(sgov)
    run = SpoofingDetector(write=False).run(
        sgov, Window(T0 + timedelta(minutes=3), T0 + timedelta(hours=1)), actor="t"
    )
    assert run.findings.num_rows == 0  # two spoofed records left in the window


def test_unknown_pool_is_refused_clearly(tmp_path: Path) -> None:
    bad = CustomerInterface(exporter=BNG, ifindex=1, name="x", pools=("nope",))
    cfg = make_config(tmp_path / "s", network=NetworkConfig(customer_interfaces=(bad,)))
    with Governance(cfg) as gov:
        gov.write("M1", "flows", table([rec("10.0.0.1", 1)]), "collector")
        with pytest.raises(ValueError, match="no address-plan pool"):
            SpoofingDetector(write=False).run(gov, Window(), actor="t")


def test_cli_json_dry_run(sgov: Governance, tmp_path: Path) -> None:
    _flows(sgov)
    cfg = tmp_path / "mamori.toml"
    cfg.write_text(
        '[[address_plan]]\nname = "home-dynamic"\nkind = "dynamic"\nprefixes = ["10.0.0.0/16"]\n'
        f'[[network.customer_interfaces]]\nexporter = "{BNG}"\nifindex = 7\nname = "ge-0/0/1.100"\n'
        'pools = ["home-dynamic"]\n'
    )
    store = sgov.config.store
    r = CliRunner().invoke(
        app, ["--store", str(store), "--config", str(cfg), "detect", "spoofing", "--json",
              "--dry-run"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    [line] = [json.loads(x) for x in r.stdout.splitlines() if x]
    assert line["evidence"]["records"] == 7  # the IPv6 /48 is not configured here
    assert json.loads(r.stderr.strip().splitlines()[-1])["findings"] == 1
    # dry run: nothing stored beyond the first test's run (none in this store)
    assert sgov.open("M13", "findings", None, "t").arrow().num_rows == 0


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("MAMORI_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden file {path}"
    assert text == path.read_text(), f"{name} differs from the golden file"


@pytest.mark.parametrize(
    ("render", "ext"),
    [(junos_antispoof, "junos"), (iosxr_antispoof, "iosxr"), (nft_antispoof, "nft")],
)
def test_urpf_and_acl_renderings_match_the_golden_files(
    tmp_path: Path, render: Any, ext: str
) -> None:
    _golden(f"antispoof.{ext}", render(_cfg(tmp_path / "s"), "antispoof-golden-1"))


def test_cli_renders_spoofing_filters(tmp_path: Path) -> None:
    cfg = tmp_path / "mamori.toml"
    cfg.write_text(
        '[[address_plan]]\nname = "home"\nkind = "dynamic"\nprefixes = ["10.0.0.0/16"]\n'
        f'[[network.customer_interfaces]]\nexporter = "{BNG}"\nifindex = 7\n'
        'name = "Bundle-Ether1.100"\npools = ["home"]\n'
    )
    base = ["--store", str(tmp_path / "s"), "--config", str(cfg), "act", "filters", "--kind",
            "spoofing"]  # fmt: skip
    r = CliRunner().invoke(app, [*base, "--render", "iosxr"])
    assert r.exit_code == 0, r.output
    assert "interface Bundle-Ether1.100\n ipv4 verify unicast source reachable-via rx" in r.stdout
    assert CliRunner().invoke(app, [*base, "--render", "flowspec"]).exit_code == 2
    assert CliRunner().invoke(app, [*base, "--apply"]).exit_code == 2
