"""Prometheus metrics of the installation, from the console (``/metrics``, admin only) or from a
listener bound to loopback (``web.metrics_listen``, for a Prometheus on the same host).

They are :mod:`mamori.web.health`'s snapshot as numbers: each stage's last run, its duration,
outcome and whether it is overdue; findings of each detector's last run; alerts and actions by
state; the audit log's entries and verification; size, age and retention lag of each dataset.
Labels name stages, detectors, measures, datasets and states — never an address or a subscriber.

A snapshot reads actions and alerts through governance (audited, as the service actor
``console:metrics``) and verifies the audit chain, so it is taken at most every ``cache_s``
seconds whatever the scrape interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector as _PromCollector

from mamori.governance import Governance
from mamori.web.health import ATTENTION, Health, gather

__all__ = ["ACTOR", "CACHE_S", "ConsoleMetrics", "LoopbackMetrics", "registry", "serve_loopback"]

ACTOR = "console:metrics"
CACHE_S = 60.0
# detector stage → (detector, measure)
_DETECTORS = {"detect-c2": ("c2", "M2"), "detect-infected": ("infected", "M4")}


def _ts(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


class ConsoleMetrics(_PromCollector):
    def __init__(self, gov: Governance, cache_s: float = CACHE_S) -> None:
        self._gov = gov
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._taken = -1e18
        self._health: Health | None = None

    def snapshot(self) -> Health:
        with self._lock:  # one snapshot at a time, and not more often than cache_s
            if self._health is None or time.monotonic() - self._taken >= self._cache_s:
                self._health = gather(self._gov, actor=ACTOR)
                self._taken = time.monotonic()
            return self._health

    def collect(self) -> Iterator[Any]:
        h = self.snapshot()
        now = datetime.fromisoformat(h.now)

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        last = gauge(
            "mamori_stage_last_run_timestamp_seconds", "When the stage last ran", ["stage"]
        )
        ok_at = gauge(
            "mamori_stage_last_success_timestamp_seconds",
            "When the stage last succeeded",
            ["stage"],
        )
        dur = gauge(
            "mamori_stage_last_run_duration_seconds", "How long its last run took", ["stage"]
        )
        ok = gauge("mamori_stage_last_run_ok", "1 when the stage's last run succeeded", ["stage"])
        attention = gauge(
            "mamori_stage_needs_attention",
            "1 when the stage's last run failed or its last success is overdue",
            ["stage"],
        )
        findings = gauge(
            "mamori_detector_findings",
            "Findings of the detector's last run",
            ["detector", "measure"],
        )
        for s in h.stages:
            attention.add_metric([s.stage], 1.0 if s.state == ATTENTION else 0.0)
            if s.last_run is None:
                continue
            last.add_metric([s.stage], _ts(s.last_run) or 0.0)
            if s.last_ok:
                ok_at.add_metric([s.stage], _ts(s.last_ok) or 0.0)
            if s.last_seconds is not None:
                dur.add_metric([s.stage], s.last_seconds)
            ok.add_metric([s.stage], 1.0 if s.last_outcome == "ok" else 0.0)
            if s.stage in _DETECTORS and "findings" in s.counts:
                findings.add_metric(list(_DETECTORS[s.stage]), s.counts["findings"])
        yield from (last, ok_at, dur, ok, attention, findings)

        alerts = gauge("mamori_alerts", "Alerts to subscribers by delivery state", ["state"])
        for state in sorted({"queued", "sent", "failed", *h.alerts}):
            alerts.add_metric([state], h.alerts.get(state, 0))
        yield alerts
        actions = gauge("mamori_actions", "Actions (blocks, filters) by state", ["state"])
        for state in sorted({"pending", "active", *h.actions}):
            actions.add_metric([state], h.actions.get(state, 0))
        yield actions

        entries = gauge("mamori_audit_entries", "Entries in the audit log", [])
        entries.add_metric([], h.audit["entries"])
        verified = gauge(
            "mamori_audit_verified", "1 when the audit log's hash chain verifies, 0 when broken", []
        )
        verified.add_metric([], 1.0 if h.audit["ok"] else 0.0)
        yield from (entries, verified)

        size = gauge("mamori_dataset_bytes", "Bytes the dataset holds in the store", ["dataset"])
        oldest = gauge(
            "mamori_dataset_oldest_timestamp_seconds", "Start of its oldest data", ["dataset"]
        )
        retention = gauge("mamori_dataset_retention_days", "Its retention", ["dataset"])
        lag = gauge(
            "mamori_retention_lag_seconds",
            "How long the dataset's oldest data has been past its retention (0: none is)",
            ["dataset"],
        )
        for d in h.datasets:
            size.add_metric([d.dataset], d.bytes)
            if d.retention_days is not None:
                retention.add_metric([d.dataset], d.retention_days)
            behind = 0.0
            if d.oldest:
                start = datetime.fromisoformat(d.oldest)
                oldest.add_metric([d.dataset], start.timestamp())
                if d.retention_days is not None:
                    # an hour partition is due once its whole hour is past the retention
                    due = start + timedelta(hours=1) + timedelta(days=d.retention_days)
                    behind = max(0.0, (now - due).total_seconds())
            lag.add_metric([d.dataset], behind)
        yield from (size, oldest, retention, lag)

        needs = gauge(
            "mamori_status_needs_attention",
            "1 when `mamori status` would exit 1 (something needs a person)",
            [],
        )
        needs.add_metric([], 1.0 if h.needs_attention else 0.0)
        taken = gauge("mamori_status_snapshot_timestamp_seconds", "When these values were read", [])
        taken.add_metric([], now.astimezone(UTC).timestamp())
        yield from (needs, taken)


def registry(metrics: ConsoleMetrics) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(metrics)
    return reg


class LoopbackMetrics:
    """The loopback listener; :meth:`close` stops it."""

    def __init__(self, gov: Governance, address: str) -> None:
        from mamori.ingest.metrics import parse_metrics_address

        host, port = parse_metrics_address(address)
        # a Governance of its own: DuckDB connections are not shared between threads
        self._gov = Governance(gov.config)
        try:
            self._server, self._thread = start_http_server(
                port, host, registry(ConsoleMetrics(self._gov))
            )
        except BaseException:
            self._gov.close()
            raise

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        self._gov.close()


def serve_loopback(gov: Governance, address: str) -> LoopbackMetrics:
    """Serve the metrics on ``address`` (a loopback ``HOST:PORT``) from a thread of their own."""
    return LoopbackMetrics(gov, address)
