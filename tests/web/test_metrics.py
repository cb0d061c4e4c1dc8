"""The console's `/metrics`: admin only (or the loopback listener), parsed with
prometheus_client's parser, the numbers are the store's, and no label carries an address."""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mamori.act.notify import notification_status
from mamori.governance import Governance
from mamori.runs import RunRecord, record_run
from mamori.web.metrics import serve_loopback
from tests.web.conftest import ACCOUNTS, ADDRESSES, login

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _v(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def scraped(base_url: str, web_gov: Governance) -> tuple[str, Samples]:
    started = datetime.now(UTC) - timedelta(minutes=5)
    record_run(
        web_gov.state_dir("runs"),
        RunRecord("detect-c2", started.isoformat(), 12.5, "ok", counts={"findings": 4}),
    )
    with httpx.Client(base_url=base_url, timeout=60) as c:
        login(c, ACCOUNTS[next(r for r in ACCOUNTS if r.value == "admin")])
        r = c.get("/metrics")
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/plain")
    return r.text, _parse(r.text)


def test_only_the_admin_role_reads_metrics(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30, follow_redirects=False) as c:
        assert c.get("/metrics").status_code == 303  # to the login page
        for role, name in ACCOUNTS.items():
            if role.value == "admin":
                continue
            login(c, name)
            assert c.get("/metrics").status_code == 403, role


def test_numbers_are_the_stores(scraped: tuple[str, Samples], web_gov: Governance) -> None:
    _, s = scraped
    assert _v(s, "mamori_stage_last_run_duration_seconds", stage="detect-c2") == 12.5
    assert _v(s, "mamori_stage_last_run_ok", stage="detect-c2") == 1
    assert _v(s, "mamori_detector_findings", detector="c2", measure="M2") == 4
    assert _v(s, "mamori_stage_needs_attention", stage="detect-c2") == 0
    alerts: dict[str, int] = {}
    for per in notification_status(web_gov, actor="test").values():
        for state, n in per["notifications"].items():
            alerts[state] = alerts.get(state, 0) + n
    assert alerts, "the fixture store has alerts"
    for state, n in alerts.items():
        assert _v(s, "mamori_alerts", state=state) == n
    assert sum(v for (name, _), v in s.items() if name == "mamori_actions") > 0
    assert _v(s, "mamori_audit_verified") == 1
    assert _v(s, "mamori_audit_entries") > 0
    assert _v(s, "mamori_dataset_bytes", dataset="findings") > 0
    assert _v(s, "mamori_dataset_retention_days", dataset="flows") == 90


def test_no_label_carries_an_address(scraped: tuple[str, Samples]) -> None:
    text, samples = scraped
    for address in ADDRESSES:
        assert address not in text
    for _, labels in samples:
        for _, value in labels:
            with pytest.raises(ValueError):
                ipaddress.ip_address(value)


def test_the_loopback_listener_serves_without_a_login(web_gov: Governance) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    listener = serve_loopback(web_gov, f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                    text = r.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        listener.close()
    assert _v(_parse(text), "mamori_audit_verified") == 1


def test_the_loopback_listener_must_be_loopback() -> None:
    from mamori.config import MamoriConfig

    with pytest.raises(ValueError, match="loopback"):
        MamoriConfig.model_validate({"web": {"metrics_listen": "0.0.0.0:9466"}})
    assert MamoriConfig.model_validate({"web": {"metrics_listen": "[::1]:9466"}}).web.metrics_listen
