"""Rate-limited warnings for decoders: bad input is counted always, logged once per kind and
interval (with how many were suppressed), so a flood of garbage never floods the log."""

from __future__ import annotations

import logging
import time
from collections import Counter

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Log each kind of problem at most once per ``interval_s``, with the count suppressed since."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warn(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        suffix = f" ({suppressed} similar suppressed)" if suppressed else ""
        self.logger.warning(
            message + suffix,
            *args,
            exc_info=exc_info,
            extra={"event": kind, "counts": {"suppressed": suppressed}},
        )
