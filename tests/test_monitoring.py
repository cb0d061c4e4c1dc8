"""packaging/monitoring: the Grafana dashboard is valid JSON whose every query names metrics the
collector and the console really expose; the Prometheus alert rules pass `promtool check rules`
and their unit tests (`promtool test rules`), name only real metrics, and link runbooks that
exist in docs/operations.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mamori.governance import Governance
from mamori.ingest.collector import Collector
from mamori.ingest.metrics import CollectorMetrics
from mamori.web.metrics import ConsoleMetrics, registry
from tests.conftest import make_config
from tests.web.conftest import populate

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "packaging" / "monitoring"
DASHBOARD = MONITORING / "mamori-dashboard.json"
RULES = MONITORING / "mamori-alerts.yml"
PCAP = ROOT / "tests" / "data" / "netflow" / "100-IPFIXv10-CISCO__traffic-00.pcap"
METRIC = re.compile(r"\bmamori_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _names(text: str) -> set[str]:
    """Every series name an exposition offers (counters with _total, histograms' parts)."""
    out = set()
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            out.add(family.name + suffix)
        out |= {s.name for s in family.samples}
    return out


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The metric names of a collector that decoded a capture and of the console over a store
    with findings, actions and alerts."""
    cfg = make_config(tmp_path_factory.mktemp("monitoring") / "store")
    with Governance(cfg) as gov:
        collector = Collector(gov, cfg.collector)
        reg = CollectorRegistry()
        reg.register(CollectorMetrics(collector, "default", cfg.pools()))
        collector.replay_pcap(PCAP)
        names = _names(generate_latest(reg).decode())
        collector.close()
        populate(gov)
        names |= _names(generate_latest(registry(ConsoleMetrics(gov))).decode())
    assert "mamori_collector_records_decoded_total" in names
    assert "mamori_collector_flush_duration_seconds_bucket" in names
    assert "mamori_audit_verified" in names
    return names


def test_dashboard_is_a_grafana_dashboard_of_real_metrics(exposed: set[str]) -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    assert any(v["type"] == "datasource" for v in dash["templating"]["list"])
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    queries = 0
    for p in panels:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"][
            "w"
        ] <= 24
        if p["type"] == "row":
            continue
        assert p["title"] and p["targets"], p
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        for t in p["targets"]:
            names = set(METRIC.findall(t["expr"]))
            assert names, f"{p['title']}: a query that names no Mamori metric"
            assert names <= exposed, f"{p['title']}: unknown metric(s) {names - exposed}"
            queries += 1
    assert queries >= 20


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool not installed: apt-get install -y prometheus (packaging/apt-packages.txt)",
            pytrace=False,
        )
    return exe


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    for args in (["check", "rules", RULES.name], ["test", "rules", "mamori-alerts.test.yml"]):
        r = subprocess.run(
            [_promtool(), *args], cwd=MONITORING, capture_output=True, text=True, check=False
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "SUCCESS" in r.stdout + r.stderr


def test_alert_rules_name_real_metrics_and_existing_runbooks(exposed: set[str]) -> None:
    text = RULES.read_text()
    exprs = re.findall(r"expr: (?:>-\n)?((?:.+\n)+?)\s+(?:for|labels):", text)
    assert len(exprs) == 5
    for expr in exprs:
        names = set(METRIC.findall(expr))
        assert names and names <= exposed, expr
    alerts = set(re.findall(r"alert: (\w+)", text))
    assert {
        "MamoriCollectorDrops",
        "MamoriExporterSilent",
        "MamoriAuditVerificationFailed",
        "MamoriPurgeOverdue",
    } <= alerts
    doc = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", doc, re.MULTILINE)
    }
    runbooks = re.findall(r'runbook: "docs/operations\.md#([a-z0-9-]+)"', text)
    assert len(runbooks) == len(alerts)
    assert set(runbooks) <= anchors, set(runbooks) - anchors
