"""Throttling of sign-in attempts, per account and per source address.

A sign-in is refused *before its password is checked* once the account or the source has had
``web.login_failures_per_minute`` wrong passwords in the last minute, so guessing costs a minute
per handful of tries and the password hash is not computed for the guesser. An account with
``web.lock_after_failures`` wrong passwords in a row is locked for ``web.lock_minutes`` (kept on
the account, so it holds across restarts and workers; an administrator can unlock it).

The per-minute windows are kept in memory: a restart forgets them, which costs a guesser at most
one more window. The same class limits other things a visitor can repeat (one-time codes).
"""

from __future__ import annotations

import threading
import time
from collections import deque

__all__ = ["Window"]


class Window:
    """At most ``limit`` events per key in any ``seconds``-long window."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float]:
        q = self._events.setdefault(key, deque())
        while q and q[0] <= now - self.seconds:
            q.popleft()
        return q

    def full(self, key: str, now: float | None = None) -> bool:
        """Whether ``key`` has used up its window (the next event would be one too many)."""
        at = time.monotonic() if now is None else now
        with self._lock:
            return len(self._trim(key, at)) >= self.limit

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Seconds until ``key`` may try again (0 if it may now)."""
        at = time.monotonic() if now is None else now
        with self._lock:
            q = self._trim(key, at)
            if len(q) < self.limit:
                return 0
            return max(1, int(q[0] + self.seconds - at + 0.999))

    def add(self, key: str, now: float | None = None) -> None:
        at = time.monotonic() if now is None else now
        with self._lock:
            self._trim(key, at).append(at)
            if len(self._events) > 100_000:  # a flood of distinct keys: forget the idle ones
                for k in [k for k, q in self._events.items() if not q]:
                    del self._events[k]

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)
