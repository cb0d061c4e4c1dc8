"""Structured logs (`--log-format json`): one JSON object per line with the event, the measure
where one applies and counts; subscriber addresses never appear at info level or above."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.ingest.ratelog import RateLimitedLog
from mamori.logs import REDACTED, AddressRedactor, setup_logging

runner = CliRunner()
POOLS = [ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("2001:db8:1::/48")]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buf = io.StringIO()
    setup_logging("json", "DEBUG", lambda: POOLS, stream=buf)
    yield buf
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_event_measure_and_counts(stream: io.StringIO) -> None:
    log = logging.getLogger("mamori.ingest.collector")
    log.info(
        "collector: flushed %d rows",
        1200,
        extra={"event": "collector.flush", "counts": {"rows": 1200}},
    )
    logging.getLogger("mamori.act.notify").warning("smtp down", extra={"measure": "M5"})
    first, second = _lines(stream)
    assert first["event"] == "collector.flush" and first["measure"] == "M1"
    assert first["counts"] == {"rows": 1200} and first["message"] == "collector: flushed 1200 rows"
    assert first["level"] == "info" and first["logger"] == "mamori.ingest.collector"
    assert second["measure"] == "M5" and second["event"] == "smtp down" and "counts" not in second


def test_subscriber_addresses_are_hidden_at_info_and_above(stream: io.StringIO) -> None:
    log = logging.getLogger("mamori.test")
    text = "flow 10.0.3.4:443 -> 198.51.100.7 via exporter 192.0.2.1 at 10:00:00, v6 2001:db8:1::5"
    log.info(text)
    log.error("failed for %s", "10.0.9.9", exc_info=ValueError("10.0.8.8 refused"))
    log.debug(text)
    info, error, debug = _lines(stream)
    assert info["message"] == (
        f"flow {REDACTED}:443 -> 198.51.100.7 via exporter 192.0.2.1 at 10:00:00, v6 {REDACTED}"
    )
    assert "10.0." not in json.dumps(error) and REDACTED in error["exception"]
    assert debug["message"] == text  # debug is what it was written as


def test_without_an_address_plan_every_address_but_loopback_is_hidden() -> None:
    redact = AddressRedactor(lambda: None)
    assert redact("from 203.0.113.9 and 127.0.0.1, ::1, fe80::1 v1.2.3") == (
        f"from {REDACTED} and 127.0.0.1, ::1, {REDACTED} v1.2.3"
    )


def test_rate_limited_warnings_count_what_they_suppressed(stream: io.StringIO) -> None:
    problems = RateLimitedLog(logging.getLogger("mamori.ingest.netflow"), interval_s=0.0)
    quiet = RateLimitedLog(logging.getLogger("mamori.ingest.netflow"), interval_s=3600.0)
    for _ in range(3):
        quiet.warn("errors.short", "netflow: short datagram")
    problems.warn("errors.bad", "netflow: bad")
    lines = _lines(stream)
    assert [ln["event"] for ln in lines] == ["errors.short", "errors.bad"]
    assert lines[0]["counts"] == {"suppressed": 0} and lines[0]["measure"] == "M1"


def _garbage_pcap(path: Path, src: str, n: int) -> None:
    """``n`` datagrams of an unknown export version from ``src`` (classic pcap, Ethernet/IPv4)."""
    body = b""
    for i in range(n):
        payload = b"\x00\x63" + b"\xff" * 30
        udp = struct.pack("!HHHH", 40000, 2055, 8 + len(payload), 0) + payload
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
            socket.inet_aton(src), socket.inet_aton("192.0.2.1"),
        )  # fmt: skip
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        body += struct.pack("<IIII", 1796580000 + i, 0, len(frame), len(frame)) + frame
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + body)


def test_the_collector_logs_json_lines_from_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "mamori.toml"
    config.write_text(
        f'store = "{tmp_path / "store"}"\n[[address_plan]]\nname = "h"\nkind = "dynamic"\n'
        'prefixes = ["10.0.0.0/16"]\n'
    )
    pcap = tmp_path / "garbage.pcap"
    _garbage_pcap(pcap, "10.0.0.9", 5)  # an "exporter" inside the subscriber pool
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        # the global option is accepted after the sub-command too
        r = runner.invoke(
            app,
            ["--config", str(config), "collect", "--pcap", str(pcap), "--log-format", "json"],
        )
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(logging.WARNING)
    assert r.exit_code == 0, r.output
    lines = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    (warning,) = [ln for ln in lines if ln["event"] == "errors.unknown_version"]  # rate-limited
    assert warning["measure"] == "M1" and warning["level"] == "warning"
    assert "10.0.0.9" not in r.stderr and REDACTED in warning["message"]


def test_an_unknown_log_level_is_refused(tmp_path: Path) -> None:
    r = runner.invoke(app, ["--store", str(tmp_path), "--log-level", "loud", "status"])
    assert r.exit_code == 2 and "--log-level" in r.output
