"""Small address helpers shared by the simulator (IPv4 as ``uint32``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import numpy.typing as npt

U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@lru_cache(maxsize=4096)
def ip(text: str) -> int:
    """Dotted quad → int."""
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def ntoa(value: int) -> str:
    """int → dotted quad."""
    v = int(value)
    return f"{v >> 24 & 255}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}"


def ntoa_many(values: Iterable[int] | U32) -> list[str]:
    """Dotted quads for many addresses (each distinct address formatted once)."""
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), np.uint32)
    uniq, inv = np.unique(arr, return_inverse=True)
    text = [ntoa(int(v)) for v in uniq]
    return [text[i] for i in inv.tolist()]


def pool_addresses(base: str, count: int) -> U32:
    """``count`` host addresses from ``base``, skipping each /24's .0 and .255."""
    i = np.arange(count, dtype=np.uint64)
    out = np.uint64(ip(base)) + (i // np.uint64(254)) * np.uint64(256) + i % np.uint64(254)
    return (out + np.uint64(1)).astype(np.uint32)


def iso(ts: float) -> str:
    """Epoch seconds → ``2026-11-02T09:00:00Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
