"""How a Mamori process logs: plain text or JSON lines (``--log-format``), and never a
subscriber's address at info level or above.

A JSON line carries ``ts``, ``level``, ``logger``, ``event`` (a stable name for the kind of line:
the ``event`` given with the record, else the message's template), ``message``, ``measure`` where
one applies and ``counts`` where the record has some (``extra={"counts": {...}}``; the
rate-limited decoder warnings give the number suppressed). Noisy errors stay rate-limited as
before (:mod:`mamori.ingest.ratelog`).

Addresses inside the configured subscriber pools (``address_plan``) are replaced by
``[subscriber]`` in every line at info level or above, whatever the code logging it wrote. With
no address plan, every address except loopback is replaced: Mamori cannot tell a subscriber from
a router then. Debug lines are left as written (switch debug on only to chase a fault).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = ["AddressRedactor", "JsonFormatter", "LogFormat", "configured", "setup_logging"]

LogFormat = Literal["text", "json"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PoolsSource = Callable[[], Sequence[IPNetwork] | None]

REDACTED = "[subscriber]"
# Loggers whose lines are about measure M1's data (the collector and its decoders).
_MEASURE_OF = {
    "mamori.ingest.collector": "M1",
    "mamori.ingest.netflow": "M1",
    "mamori.ingest.sflow": "M1",
}
_V4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_V6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![\w:])"
)
_HANDLER_NAME = "mamori"


class AddressRedactor:
    """Replaces subscriber addresses in text (see the module docstring)."""

    def __init__(self, pools: PoolsSource) -> None:
        self._pools = pools

    def _hide(self, m: re.Match[str]) -> str:
        try:
            addr = ipaddress.ip_address(m[0])
        except ValueError:  # a time of day, a version number: not an address
            return m[0]
        pools = self._pools()
        if pools:
            return REDACTED if any(addr in net for net in pools) else m[0]
        return m[0] if addr.is_loopback or addr.is_unspecified else REDACTED

    def __call__(self, text: str) -> str:
        if "." not in text and ":" not in text:
            return text
        return _V6.sub(self._hide, _V4.sub(self._hide, text))


def _event(record: logging.LogRecord) -> str:
    given = getattr(record, "event", None)
    return given if isinstance(given, str) else str(record.msg)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: AddressRedactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        clean: Callable[[str], str] = self.redact if record.levelno >= logging.INFO else str
        obj: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": clean(_event(record)),
            "message": clean(record.getMessage()),
        }
        measure = getattr(record, "measure", None) or _MEASURE_OF.get(record.name)
        if measure:
            obj["measure"] = measure
        counts = getattr(record, "counts", None)
        if isinstance(counts, dict) and counts:
            obj["counts"] = {str(k): v for k, v in counts.items() if isinstance(v, int | float)}
        if record.exc_info:
            obj["exception"] = clean(self.formatException(record.exc_info))
        return json.dumps(obj, ensure_ascii=False, sort_keys=True)


class TextFormatter(logging.Formatter):
    def __init__(self, redact: AddressRedactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return self.redact(text) if record.levelno >= logging.INFO else text


def setup_logging(
    fmt: LogFormat,
    level: int | str = logging.INFO,
    pools: PoolsSource = lambda: None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log line of this process to ``stream`` (stderr: the journal under systemd) in
    ``fmt``. Calling it again replaces the handler it installed before."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    redact = AddressRedactor(pools)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def configured() -> bool:
    """Whether :func:`setup_logging` installed its handler in this process."""
    return any(h.get_name() == _HANDLER_NAME for h in logging.getLogger().handlers)
