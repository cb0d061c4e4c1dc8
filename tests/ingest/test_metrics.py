"""`mamori collect --metrics`: a real collector, fed by softflowd's exports over UDP, scraped over
HTTP and parsed with prometheus_client's parser; its counters move by exactly what was sent, and
no label carries a subscriber address."""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mamori.config import load_config
from mamori.governance import Governance
from mamori.ingest.collector import Collector, Stats
from mamori.ingest.metrics import IN_POOL, CollectorMetrics
from mamori.ingest.netflow import Datagram, FlowDecoder
from tests.ingest.reference_tools import softflowd_export
from tests.ingest.test_collector import CAPTURE, collector, stop

pytestmark = [pytest.mark.reference_tools, pytest.mark.slow]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
POOLS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError("the counters did not reach the expected values")
        time.sleep(0.2)


def _records(datagrams: list[bytes]) -> int:
    return FlowDecoder().decode([Datagram("127.0.0.1", d, 0.0) for d in datagrams]).flows.num_rows


def test_scrape_counts_exactly_what_softflowd_sent(tmp_path: Path) -> None:
    datagrams = softflowd_export(CAPTURE, 9)
    half = len(datagrams) // 2
    first, total = _records(datagrams[:half]), _records(datagrams)  # templates come first
    assert 0 < first < total
    config = tmp_path / "mamori.toml"
    config.write_text(
        '[[address_plan]]\nname = "home"\nkind = "dynamic"\n'
        f"prefixes = [{', '.join(repr(p).replace(chr(39), chr(34)) for p in POOLS)}]\n"
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    store = tmp_path / "store"
    extra = ("--config", str(config), "--metrics", f"127.0.0.1:{port}", "--flush-interval", "0.2")
    with collector(store, *extra) as run:
        _until(lambda: _ok(url))
        before = _scrape(url)
        assert _value(before, "mamori_collector_records_stored_total", group="default") == 0
        assert _value(before, "mamori_collector_templates", group="default") == 0

        run.send(datagrams[:half])
        labels = {"group": "default", "exporter": "127.0.0.1"}
        _until(
            lambda: (
                _value(_scrape(url), "mamori_collector_records_stored_total", group="default")
                >= first
            )
        )
        time.sleep(0.5)  # anything more would have arrived by now: the count must be exact
        mid = _scrape(url)
        assert _value(mid, "mamori_collector_records_stored_total", group="default") == first
        assert _value(mid, "mamori_collector_records_decoded_total", **labels) == first
        assert _value(mid, "mamori_collector_datagrams_received_total", **labels) == half
        assert _value(mid, "mamori_collector_templates", group="default") >= 1
        assert _value(mid, "mamori_collector_written_bytes_total", group="default") > 0
        assert _value(mid, "mamori_collector_flush_duration_seconds_count", group="default") >= 1

        run.send(datagrams[half:])
        _until(
            lambda: (
                _value(_scrape(url), "mamori_collector_records_stored_total", group="default")
                >= total
            )
        )
        time.sleep(0.5)
        after = _scrape(url)
        assert _value(after, "mamori_collector_records_stored_total", group="default") == total
        assert _value(after, "mamori_collector_records_decoded_total", **labels) - first == (
            total - first
        )
        assert _value(after, "mamori_collector_datagrams_received_total", **labels) == len(
            datagrams
        )
        for where in ("kernel", "receiver"):
            assert (
                _value(after, "mamori_collector_socket_drops_total", group="default", where=where)
                == 0
            )
        assert _value(after, "mamori_collector_open_files", group="default") > 0
        stop(run)
    _no_subscriber_in_labels(after)


def _ok(url: str) -> bool:
    try:
        _scrape(url)
    except OSError:
        return False
    return True


def _no_subscriber_in_labels(samples: Samples) -> None:
    pools = [ipaddress.ip_network(p) for p in POOLS]
    for _, labels in samples:
        for _, value in labels:
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                continue
            assert not any(addr in p for p in pools), value


def test_an_exporter_inside_the_subscriber_pools_is_never_a_label(tmp_path: Path) -> None:
    """Someone in a subscriber range sending export packets: counted, but under one label."""
    cfg = load_config(overrides={"store": tmp_path / "store"})
    with Governance(cfg) as gov:
        c = Collector(gov, cfg.collector)
        c.stats = Stats()
        for exporter, n in (("10.1.2.3", 5), ("10.9.9.9", 7), ("192.0.2.1", 11)):
            c.stats.by_exporter[exporter] = Stats().counters
            c.stats.by_exporter[exporter]["records"] = n
            c.stats.by_exporter[exporter]["packets"] = 1
        registry = CollectorRegistry()
        registry.register(CollectorMetrics(c, "default", [ipaddress.ip_network("10.0.0.0/8")]))
        text = generate_latest(registry).decode()
        c.close()
    assert "10.1.2.3" not in text and "10.9.9.9" not in text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    decoded = "mamori_collector_records_decoded_total"
    assert _value(samples, decoded, group="default", exporter=IN_POOL) == 12
    assert _value(samples, decoded, group="default", exporter="192.0.2.1") == 11
