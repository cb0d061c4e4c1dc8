"""Prometheus metrics of a running collector (``mamori collect --metrics 127.0.0.1:9465``).

The collector already counts what it does (:class:`mamori.ingest.collector.Stats`, what
``mamori collect stats`` prints); this module reads those counters when Prometheus scrapes, so
nothing is counted twice and nothing is added to the per-batch path. Only the flush (its
duration, the bytes it wrote) is observed through the collector's ``on_flush`` hook, and the
kernel's socket drops are read from ``/proc/net/udp`` at scrape time.

Labels name exporters (routers), listener groups and error kinds — never a subscriber address:
an "exporter" inside the subscriber pools (someone in a subscriber range sending export packets
to the collector) is labelled ``subscriber-pool`` and its counts added together.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector as _PromCollector

from mamori.config import IPNetwork

if TYPE_CHECKING:
    from mamori.ingest.collector import Collector

__all__ = ["IN_POOL", "CollectorMetrics", "parse_metrics_address", "serve_metrics"]

IN_POOL = "subscriber-pool"
_FLUSH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def parse_metrics_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9465`` for IPv6) → (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ValueError(
            f"cannot read metrics address {text!r}; expected HOST:PORT, e.g. 127.0.0.1:9465"
        )
    return host.strip("[]"), int(port)


class _Exporters:
    """Exporter label values: the address, or ``subscriber-pool`` inside the pools."""

    def __init__(self, pools: Sequence[IPNetwork]) -> None:
        self._pools = tuple(pools)
        self._cache: dict[str, str] = {}

    def __call__(self, exporter: str) -> str:
        label = self._cache.get(exporter)
        if label is None:
            try:
                addr = ipaddress.ip_address(exporter)
                inside = any(addr in net for net in self._pools)
            except ValueError:
                inside = True  # not an address: never let it into a label as is
            label = self._cache[exporter] = IN_POOL if inside else exporter
        return label


class CollectorMetrics(_PromCollector):
    """The metrics of one collector process (one listener group)."""

    def __init__(self, collector: Collector, group: str, pools: Sequence[IPNetwork]) -> None:
        self._collector = collector
        self._group = group
        self._label = _Exporters(pools)
        self._lock = threading.Lock()
        # observed on flush (the main loop); read at scrape (the server thread)
        self.flush_seconds = Histogram(
            "mamori_collector_flush_duration_seconds",
            "Time a flush took: writing held records and making them visible in the store",
            ["group"],
            buckets=_FLUSH_BUCKETS,
            registry=None,
        )
        self.bytes_written = Counter(
            "mamori_collector_written_bytes",
            "Bytes of Parquet files the collector made visible in the store",
            ["group"],
            registry=None,
        )
        collector.on_flush = self._flushed

    def _flushed(self, seconds: float, files: Iterable[Path]) -> None:
        size = 0
        for f in files:
            try:
                size += f.stat().st_size
            except OSError:  # purged or moved meanwhile: count what is there
                continue
        self.flush_seconds.labels(self._group).observe(seconds)
        self.bytes_written.labels(self._group).inc(size)

    def _snapshot(self) -> tuple[dict[str, int], dict[str, dict[str, int]], int]:
        stats = self._collector.stats
        # dict() of a dict is one C call under the interpreter lock: a consistent copy while
        # the main loop keeps counting
        counters = dict(stats.counters)
        by_exporter = {k: dict(v) for k, v in dict(stats.by_exporter).items()}
        return counters, by_exporter, stats.rows_written

    def collect(self) -> Iterator[Any]:
        counters, by_exporter, rows_written = self._snapshot()
        g = self._group
        per: dict[str, dict[str, int]] = {}
        for exporter, c in by_exporter.items():
            into = per.setdefault(self._label(exporter), {})
            for key, value in c.items():
                into[key] = into.get(key, 0) + int(value)

        def per_exporter(name: str, doc: str, key: str) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=["group", "exporter"])
            for exporter, c in sorted(per.items()):
                m.add_metric([g, exporter], c.get(key, 0))
            return m

        yield per_exporter(
            "mamori_collector_datagrams_received",
            "Export datagrams received from each exporter",
            "packets",
        )
        yield per_exporter(
            "mamori_collector_records_decoded",
            "Flow records decoded from each exporter, ready to be stored",
            "records",
        )
        yield per_exporter(
            "mamori_collector_records_sampling_unknown",
            "Records stored without a sampling rate (set one in [collector.sampling_defaults])",
            "sampling_unknown",
        )
        stored = CounterMetricFamily(
            "mamori_collector_records_stored",
            "Flow records made visible in the store (all exporters)",
            labels=["group"],
        )
        stored.add_metric([g], rows_written)
        yield stored
        received = CounterMetricFamily(
            "mamori_collector_datagrams",
            "Export datagrams received on the collector's sockets (all exporters)",
            labels=["group"],
        )
        received.add_metric([g], counters.get("packets.received", 0))
        yield received
        errors = CounterMetricFamily(
            "mamori_collector_decode_errors",
            "Datagrams or records that could not be decoded, by kind",
            labels=["group", "kind"],
        )
        for key, value in sorted(counters.items()):
            if key.startswith("errors."):
                errors.add_metric([g, key.removeprefix("errors.")], value)
        yield errors
        pending = GaugeMetricFamily(
            "mamori_collector_records_awaiting_template",
            "Records held until their template arrives",
            labels=["group"],
        )
        pending.add_metric([g], counters.get("records.pending", 0))
        yield pending
        templates = GaugeMetricFamily(
            "mamori_collector_templates", "NetFlow v9 / IPFIX templates known", labels=["group"]
        )
        templates.add_metric([g], len(self._collector.decoder.registry))
        yield templates
        drops = CounterMetricFamily(
            "mamori_collector_socket_drops",
            "Datagrams lost before decoding: 'kernel' (socket buffer full, /proc/net/udp) or "
            "'receiver' (the decoder fell behind)",
            labels=["group", "where"],
        )
        drops.add_metric([g, "kernel"], self._collector.kernel_drops())
        drops.add_metric([g, "receiver"], counters.get("packets.dropped_by_receiver", 0))
        yield drops
        files = GaugeMetricFamily(
            "mamori_collector_open_files", "File descriptors the collector holds", labels=["group"]
        )
        files.add_metric([g], _open_files())
        yield files
        last = GaugeMetricFamily(
            "mamori_collector_started_timestamp_seconds",
            "When this collector process started (counters restart from 0 then)",
            labels=["group"],
        )
        last.add_metric([g], self._collector.stats.started)
        yield last
        yield from self.flush_seconds.collect()
        yield from self.bytes_written.collect()


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def serve_metrics(metrics: CollectorMetrics, address: str) -> tuple[Any, threading.Thread]:
    """Serve ``metrics`` over HTTP on ``address`` (``HOST:PORT``) from a daemon thread; returns
    the server (``shutdown()`` it) and its thread."""
    host, port = parse_metrics_address(address)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    server, thread = start_http_server(port, host, registry)
    return server, thread
