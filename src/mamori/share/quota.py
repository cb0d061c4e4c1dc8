"""What each TAXII peer may use, and a summary of the refusals that are not worth an entry each.

:class:`PeerQuota` counts, per peer, its requests in a window of ``rate_window_s`` (from its first
request in the window; kept in memory: a restart forgives at most one window) and the objects and
request-body bytes it posted in the current UTC day (kept in ``usage.json`` next to the trust
file, so a restart forgives nothing). Past a limit the caller answers 429 with the
``Retry-After`` of :class:`Limited`; only the first refusal of each window is worth an audit entry
(:attr:`Limited.first`).

:class:`RefusalSummary` is where the others go: requests without a valid key and repeated quota
refusals are counted (by route, by source prefix, by peer and limit) and written as one
``refused-summary`` audit entry per interval, not one entry per request — an outsider must not be
able to grow the audit log at the rate it can send requests.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mamori.config import ShareConfig

__all__ = ["Limited", "PeerQuota", "RefusalSummary", "source_prefix"]

_MAX_KEYS = 200  # distinct routes / sources / peers kept per summary; the rest count as "other"


class Limited(Exception):
    """A peer is past one of its limits (``rate``, ``objects`` or ``bytes``)."""

    def __init__(self, limit: str, allowed: int, retry_after: int, first: bool) -> None:
        self.limit = limit
        self.allowed = allowed
        self.retry_after = retry_after
        self.first = first  # the first refusal of this peer and limit in this window
        super().__init__(f"{limit} limit of {allowed} reached; retry after {retry_after} s")


class PeerQuota:
    def __init__(
        self, cfg: ShareConfig, directory: Path, clock: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self.path = directory / "usage.json"
        self._lock_path = directory / "usage.lock"
        self.clock = clock
        self._mutex = threading.Lock()
        self._rate: dict[str, tuple[float, int]] = {}  # peer → (window start, requests)
        self._refused: dict[tuple[str, str], object] = {}  # (peer, limit) → window refused in

    def _refuse(
        self, peer: str, limit: str, allowed: int, window: object, left_s: float
    ) -> Limited:
        first = self._refused.get((peer, limit)) != window
        self._refused[(peer, limit)] = window
        return Limited(limit, allowed, max(1, int(left_s + 0.999)), first)

    # ------------------------------------------------------------------ request rate

    def request(self, peer: str) -> None:
        """Count one request of ``peer``; raise :class:`Limited` past the rate."""
        now = self.clock()
        span = self.cfg.rate_window_s
        with self._mutex:
            start, n = self._rate.get(peer, (now, 0))
            if now - start >= span:
                start, n = now, 0
            self._rate[peer] = (start, n + 1)
            if n + 1 > self.cfg.rate_requests:
                raise self._refuse(peer, "rate", self.cfg.rate_requests, start, start + span - now)

    # ------------------------------------------------------------------ daily volume

    def _day(self) -> tuple[str, float]:
        """Today (UTC) and the seconds left in it."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        return now.date().isoformat(), (midnight - now).total_seconds()

    def _usage(self, day: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        if data.get("day") != day or not isinstance(data.get("peers"), dict):
            data = {"day": day, "peers": {}}
        return data

    def used(self, peer: str) -> tuple[int, int]:
        """Objects and bytes ``peer`` posted today."""
        day, _ = self._day()
        u = self._usage(day)["peers"].get(peer, {})
        return int(u.get("objects", 0)), int(u.get("bytes", 0))

    def check(self, peer: str, *, objects: int = 0, nbytes: int = 0) -> None:
        """Raise :class:`Limited` if ``objects`` more objects or ``nbytes`` more bytes would take
        ``peer`` past today's quota."""
        day, left_s = self._day()
        have_objects, have_bytes = self.used(peer)
        with self._mutex:
            if nbytes and have_bytes + nbytes > self.cfg.quota_bytes_per_day:
                raise self._refuse(peer, "bytes", self.cfg.quota_bytes_per_day, day, left_s)
            if objects and have_objects + objects > self.cfg.quota_objects_per_day:
                raise self._refuse(peer, "objects", self.cfg.quota_objects_per_day, day, left_s)

    def bytes_left(self, peer: str) -> int:
        return max(0, self.cfg.quota_bytes_per_day - self.used(peer)[1])

    def charge(self, peer: str, *, objects: int = 0, nbytes: int = 0) -> None:
        """Add to what ``peer`` used today (under a file lock: several workers share it)."""
        if not objects and not nbytes:
            return
        day, _ = self._day()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._usage(day)
            u = data["peers"].setdefault(peer, {"objects": 0, "bytes": 0})
            u["objects"] = int(u.get("objects", 0)) + objects
            u["bytes"] = int(u.get("bytes", 0)) + nbytes
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, sort_keys=True)
            os.replace(tmp, self.path)


def source_prefix(host: str | None) -> str:
    """The /24 (IPv4) or /48 (IPv6) a request came from: enough to see where a flood comes from,
    without keeping one entry per address."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "unknown"
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False))


class RefusalSummary:
    """Counts refusals and writes them as one audit entry per ``interval_s``.

    The entry is written by a timer when the interval that the first counted refusal opened ends,
    by the next refusal after it, or by :meth:`flush` (at shutdown)."""

    def __init__(
        self,
        interval_s: float,
        write: Callable[[Mapping[str, Any]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval_s = interval_s
        self.write = write
        self.clock = clock
        self._mutex = threading.Lock()
        self._start: float | None = None
        self._timer: threading.Timer | None = None
        self._counts: dict[str, Counter[str]] = {}

    def _count(self, section: str, key: str) -> None:
        c = self._counts.setdefault(section, Counter())
        c[key if key in c or len(c) < _MAX_KEYS else "other"] += 1

    def unauthenticated(self, route: str, source: str) -> None:
        self._note({"by_route": route, "by_source": source, "unauthenticated": "requests"})

    def limited(self, peer: str, limit: str) -> None:
        self._note({"limited": f"{peer}:{limit}"})

    def _note(self, keys: Mapping[str, str]) -> None:
        now = self.clock()
        due = False
        with self._mutex:
            if self._start is not None and now - self._start >= self.interval_s:
                due = True
        if due:
            self.flush()
        with self._mutex:
            if self._start is None:
                self._start = now
                self._timer = threading.Timer(self.interval_s, self.flush)
                self._timer.daemon = True
                self._timer.start()
            for section, key in keys.items():
                self._count(section, key)

    def flush(self) -> None:
        """Write what was counted since the last entry (nothing if nothing was)."""
        with self._mutex:
            start, counts, timer = self._start, self._counts, self._timer
            self._start, self._counts, self._timer = None, {}, None
        if timer is not None:
            timer.cancel()
        if start is None or not counts:
            return
        detail: dict[str, Any] = {
            "from": datetime.fromtimestamp(start, UTC).isoformat(timespec="seconds"),
            "to": datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="seconds"),
        }
        for section, c in sorted(counts.items()):
            detail[section] = c["requests"] if section == "unauthenticated" else dict(c)
        self.write(detail)
