"""DDoS detection (M13), streaming: on the batches the collector decodes, not a later batch job.

What is measured, per destination inside the ISP (a victim), per inside source that floods
others (a subscriber's device attacking), and per outside destination flooded from inside (a
botnet of subscribers' devices, each below any per-source threshold; spoofed sources): packets, bits and flows per second, corrected for
sampling (× 1-in-N; a record of unknown rate adds nothing), against the thresholds of
``[detect.ddos]`` (FastNetMon's defaults: 20,000 pps, 1,000 Mbit/s, 3,500 flows/s). Per prefix
(/24, /64) too, so an attack spread thinly over a whole prefix (carpet bombing) is found when no
single address crosses a threshold.

Each record's packets are spread evenly over its duration (one-second bins from its first to its
last packet), not added to the second it arrived: a router with a 60 s active timeout reports a
flood 60 s late, as one record; a per-arrival-second counter sees a spike, or — when sampling
thins the flood — nothing. Spread, the record says exactly how many packets per second the
victim received during those 60 s, so the first record that arrives decides.

Cost: an address can only cross a threshold in one second once the packets counted for it in
the last ``horizon_s`` of arrivals reach that threshold. Running totals per address (a hashed
table, an upper bound: :class:`_Totals`) pick these candidates; only their records are spread
into bins. Normal traffic — many addresses, each far below the thresholds — costs a scatter-add
and a gather per record and key family; the collector hands the addresses over as integers.

Thresholds: the absolute ones of ``[detect.ddos]``, or for an inside destination whose prefix
has been learnt (:class:`_Baseline`), a multiple of the prefix's usual rate, never below a share
of the absolute ones.

The attack type is the dominant one among the attack's packets: ``syn`` (TCP SYN without ACK),
``amplification`` (UDP from a reflection port), ``udp``, ``icmp``, else ``mixed``; ``carpet``
for a prefix.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mamori.detect.base import DetectorParams, DetectorRun, Window
from mamori.governance import Governance

log = logging.getLogger(__name__)

__all__ = ["STREAM_COLUMNS", "Attack", "DdosDetector", "DdosEngine", "DdosParams", "parse_v4"]

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
STREAM_COLUMNS = ("time_start", "time_end", "src_addr", "dst_addr", "src_port", "protocol",
                  "tcp_flags", "packets", "bytes", "sampling_rate")  # fmt: skip
TYPES = ("syn", "amplification", "udp", "icmp", "other")
_V6_BASE = np.uint64(1 << 40)  # ids of IPv6 keys (and prefix keys) start above every IPv4
# key tags: an inside source flooding others, an outside address flooded from inside (an address
# may be both, or a victim inbound too: each is its own key)
_SOURCE_TAG = 1 << 62
_REMOTE_TAG = 1 << 61
_PREFIX_TAG = 1 << 59  # an IPv4 prefix: tag | length << 32 | network


class DdosParams(DetectorParams):
    threshold_pps: float = Field(default=20_000, gt=0, description="packets/s into one address")
    threshold_mbps: float = Field(default=1_000, gt=0, description="Mbit/s into one address")
    threshold_flows: float = Field(default=3_500, gt=0, description="flows/s into one address")
    outbound_factor: float = Field(
        default=1.0,
        gt=0,
        description="thresholds for an inside source flooding others, as a multiple of the above",
    )
    prefix_factor: float = Field(
        default=2.0,
        gt=0,
        description="thresholds for a whole prefix (carpet bombing), as a multiple of the above "
        "(a busy prefix carries more than one address)",
    )
    prefix_v4: int = Field(default=24, ge=8, le=32)
    prefix_v6: int = Field(default=64, ge=16, le=128)
    horizon_s: int = Field(
        default=180,
        ge=10,
        le=3600,
        description="how far back a record's packets are spread (≥ the routers' active timeout "
        "plus export delay)",
    )
    min_duration_s: float = Field(
        default=1.0, gt=0, description="shortest span a record's packets are spread over"
    )
    sparse_spread_s: float = Field(
        default=10.0,
        gt=0,
        description="span a record with one sampled packet is spread over (its own span is 0)",
    )
    windows_s: tuple[int, ...] = Field(
        default=(1, 2, 5, 10, 30, 60),
        description="trailing windows a rate is averaged over before it is held against a "
        "threshold; the shortest that gives certain evidence decides",
    )
    confidence_z: float = Field(
        default=2.5,
        ge=0,
        description="standard errors (Poisson, on the sampled packets in a window) taken off "
        "an estimated rate before it is held against a threshold: 1-in-1,000 sampling must not "
        "turn 1,500 pps into an alarm at 2,000",
    )
    type_share: float = Field(
        default=0.6, gt=0, le=1, description="share of packets that names the attack type"
    )
    reflection_ports: tuple[int, ...] = Field(
        default=(19, 53, 123, 161, 389, 1900, 3283, 3702, 5683, 11211),
        description="UDP source ports of amplification",
    )
    candidate_bits: int = Field(
        default=20,
        ge=10,
        le=26,
        description="size of the running totals that pick candidates: 2**bits cells of 24 "
        "bytes, for inside and for outside addresses (48 MiB at 20); fewer cells, more "
        "needless candidates, never a missed attack",
    )
    max_candidates: int = Field(
        default=10_000,
        ge=100,
        description="most keys followed second by second at once (each holds the horizon's "
        "rates: about 6.5 KiB); when traffic makes more keys candidates than this (a flood "
        "spread over a whole range), the ones closest to a threshold are followed and the rest "
        "counted as candidates_dropped and logged, so memory stays bounded",
    )
    baseline: bool = Field(
        default=True,
        description="hold inbound traffic against each destination prefix's usual rate as well "
        "as the absolute thresholds above",
    )
    baseline_prefix_v4: int = Field(
        default=24,
        ge=8,
        le=32,
        description="prefix length the usual rate is learnt per (an address is held against "
        "its prefix's usual rate; 32: each address its own)",
    )
    baseline_interval_s: int = Field(
        default=60, ge=1, description="seconds of flow time per sample of a prefix's rate"
    )
    baseline_alpha: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="weight of each new sample in the moving average (0.05: about the last 20)",
    )
    baseline_warmup_s: int = Field(
        default=3600,
        ge=0,
        description="a prefix's usual rate is used once it has been learnt this long",
    )
    baseline_multiplier: float = Field(
        default=3.0, gt=1, description="a learnt prefix alarms above this many times its usual rate"
    )
    baseline_floor: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="a learnt prefix's thresholds never go below this share of the absolute "
        "ones (1: a quiet prefix alarms where FastNetMon would; 0.25: at a quarter of it)",
    )
    memory_limit_mb: int | None = Field(default=None, ge=64)


@dataclass
class Attack:
    """An attack found: who (an address or a prefix), which way, what kind, since when."""

    target: str
    # host: one inside address (inbound: the victim; outbound: the source flooding others);
    # prefix: an inside prefix (carpet bombing); remote: an outside address flooded from inside
    scope: str
    direction: str  # inbound (a victim inside) | outbound (the flood leaves the network)
    kind: str
    start: float  # epoch s: first second over a threshold
    detected: float  # epoch s: when the deciding batch was processed
    pps: float
    bps: float
    flows: float
    metric: str  # the threshold crossed first: pps | bps | flows
    shares: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def parse_v4(text: pa.Array) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """Dotted-quad text to integers and which rows were IPv4 text. Arrow's split and cast when
    every row is a well-formed IPv4 address (a collector's batch without IPv6); otherwise 16
    column steps over an (n, 16) byte matrix. No per-string Python either way."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    n = len(text)
    if n and not text.null_count:
        try:
            octets = pc.list_flatten(pc.split_pattern(text, ".")).cast(pa.uint8())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            octets = None
        if octets is not None and len(octets) == 4 * n:
            o = octets.to_numpy().reshape(n, 4).astype(np.uint64)
            value = (o[:, 0] << 24) | (o[:, 1] << 16) | (o[:, 2] << 8) | o[:, 3]
            return value, np.ones(n, bool)
    return _parse_v4_bytes(text)


def _parse_v4_bytes(text: pa.Array) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    n = len(text)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    if text.type == pa.large_string():
        text = text.cast(pa.string())
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset : text.offset + n + 1]
    data_buf = text.buffers()[2]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    )
    start = offsets[:-1].astype(np.int64)
    length = (offsets[1:] - offsets[:-1]).astype(np.int64)
    cols = np.arange(16, dtype=np.int64)
    idx = np.minimum(start[:, None] + cols[None, :], max(len(data) - 1, 0))
    chars = np.where(cols[None, :] < length[:, None], data[idx], ord(".")).astype(np.int64)
    digit = (chars >= 48) & (chars <= 57)
    dot = chars == ord(".")
    ok = (length >= 7) & (length <= 15) & np.all(digit | dot, axis=1)
    value = np.zeros(n, np.int64)
    cur = np.zeros(n, np.int64)
    ndig = np.zeros(n, np.int64)
    seg = np.zeros(n, np.int64)
    for j in range(16):
        isd = digit[:, j]
        cur = np.where(isd, cur * 10 + (chars[:, j] - 48), cur)
        ndig = ndig + isd
        close = ~isd & (ndig > 0)
        ok &= ~(~isd & (ndig == 0) & (j < length))  # a leading dot or two dots in a row
        ok &= ~(close & ((cur > 255) | (ndig > 3)))
        value = np.where(close, (value << 8) | cur, value)
        seg = seg + close
        cur = np.where(close, 0, cur)
        ndig = np.where(close, 0, ndig)
    last = data[np.clip(start + length - 1, 0, max(len(data) - 1, 0))]
    ok &= (seg == 4) & (last >= 48) & (last <= 57)
    if text.null_count:
        ok &= pc.is_valid(text).to_numpy(zero_copy_only=False)
    return value.astype(np.uint64), ok


class _Keys:
    """Integer ids for addresses and prefixes: an IPv4 address is its own value; an IPv4 prefix
    is ``_PREFIX_TAG | length << 32 | network`` (computed, no table); IPv6 addresses get ids
    above 2**40 from a table (few)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: dict[int, str] = {}

    def of(self, names: Iterable[str]) -> npt.NDArray[np.uint64]:
        out = []
        for n in names:
            i = self.ids.get(n)
            if i is None:
                i = int(_V6_BASE) + len(self.ids)
                self.ids[n], self.names[i] = i, n
            out.append(i)
        return np.asarray(out, dtype=np.uint64)

    @staticmethod
    def prefixes(v4: npt.NDArray[np.uint64], plen: int) -> npt.NDArray[np.uint64]:
        mask = np.uint64(((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1))
        return (v4 & mask) | np.uint64(_PREFIX_TAG | plen << 32)

    def name(self, key: int) -> str:
        if key & _PREFIX_TAG:
            plen = (key >> 32) & 0xFF
            return f"{ipaddress.IPv4Address(key & 0xFFFFFFFF)}/{plen}"
        if key < int(_V6_BASE):
            return str(ipaddress.IPv4Address(key))
        return self.names[key]


def _unique_inverse(
    keys: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """``np.unique(keys, return_inverse=True)`` at a third of its cost (one argsort)."""
    if not len(keys):
        return keys, np.zeros(0, np.int64)
    order = np.argsort(keys)
    sk = keys[order]
    new = np.empty(len(sk), bool)
    new[0] = True
    np.not_equal(sk[1:], sk[:-1], out=new[1:])
    group = np.cumsum(new) - 1
    inv = np.empty(len(keys), np.int64)
    inv[order] = group
    return sk[new], inv


_HASH = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of key × 2**64/φ


class _Totals:
    """An upper bound of each key's packet/bit/flow totals over the last ``horizon_s`` of
    arrivals: a hashed table of ``2**bits`` cells (a key's bound is its cell, the sum of every
    key hashed there, never below its own total), in two generations, the older cleared every
    half horizon. A batch costs one scatter-add and one gather, whatever the number of keys:
    no sort, no merge. A cell holds both generations' three measures side by side, so a key is
    one memory access. The totals only pick candidates; a collision makes a needless
    candidate, never a missed one (with millions of keys a cell holds a few small ones; a
    needless candidate costs its records' spreading, then its seconds say no)."""

    def __init__(self, horizon_s: float, bits: int) -> None:
        self.half = horizon_s / 2
        self.shift = np.uint64(64 - bits)
        # cell × (generation a: pps, bps, flows; generation b: the same)
        self.table = np.zeros((1 << bits, 6), np.float32)
        self.cur = 0  # 0 or 3: the current generation's columns
        self.gen_started = 0.0

    def add(self, keys: npt.NDArray[np.uint64], vals: npt.NDArray[np.float32],
            now: float) -> npt.NDArray[np.float32]:  # fmt: skip
        """Add ``vals`` (records × 3) under ``keys`` (one per record, repeats allowed); return
        each record's key's bound, this batch included."""
        if now - self.gen_started >= self.half:
            self.cur = 3 - self.cur
            self.table[:, self.cur : self.cur + 3] = 0.0
            self.gen_started = now
        cell = ((keys * _HASH) >> self.shift).astype(np.intp)
        flat = self.table.reshape(-1)
        at = cell * 6 + self.cur
        for c in range(3):
            np.add.at(flat, at + c, vals[:, c])
        got = self.table[cell]
        return got[:, :3] + got[:, 3:]


class _Baseline:
    """Each inside destination prefix's usual rate (pps, bps, flows): per ``interval`` of flow
    time, the estimated packets, bits and records that arrived for it, divided by the
    interval, folded into an exponentially weighted moving average. A sample is capped at the
    prefix's own threshold, so an attack does not teach it that attacks are usual; a prefix
    not seen in an interval samples zero. Only rates per prefix are kept, never an address."""

    def __init__(self, plen: int, interval: float, alpha: float) -> None:
        self.plen, self.interval, self.alpha = plen, interval, alpha
        self.mask = np.uint64(((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1))
        self.keys = np.zeros(0, np.uint64)  # sorted prefix networks
        self.rate = np.zeros((0, 3))
        self.since = np.zeros(0)  # flow time the prefix was first sampled
        self.started: float | None = None  # the current interval's start (flow time)
        self.pending: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]] = []
        self.dirty = False

    def observe(self, v4: npt.NDArray[np.uint64], vals: npt.NDArray[np.float64]) -> None:
        """Inbound records' destination addresses and (est. packets, bits, 1)."""
        if len(v4):
            u, inv = _unique_inverse(v4 & self.mask)
            self.pending.append((u, np.column_stack(
                [np.bincount(inv, vals[:, c], len(u)) for c in range(3)])))  # fmt: skip

    def advance(self, now: float, cap: Callable[[npt.NDArray[np.uint64]], npt.NDArray[np.float64]],
                ) -> None:  # fmt: skip
        """Close the intervals that ended by flow time ``now``; ``cap`` gives each prefix's
        threshold (a sample's ceiling)."""
        if self.started is None:
            self.started = now
            return
        gone = int((now - self.started) // self.interval)
        if gone <= 0:
            return
        if self.pending:
            keys = np.concatenate([k for k, _ in self.pending])
            vals = np.concatenate([v for _, v in self.pending])
            u, inv = _unique_inverse(keys)
            sums = [np.bincount(inv, vals[:, c], len(u)) / self.interval for c in range(3)]
            sample = np.column_stack(sums)
        else:
            u, sample = np.zeros(0, np.uint64), np.zeros((0, 3))
        self.pending = []
        end = self.started + self.interval
        # the interval that had the records, then (gone - 1) empty ones: zeros
        allk = np.union1d(self.keys, u)
        old = np.searchsorted(allk, self.keys)
        new = np.searchsorted(allk, u)
        rate = np.full((len(allk), 3), np.nan)
        rate[old] = self.rate
        since = np.full(len(allk), end)
        since[old] = self.since
        got = np.zeros((len(allk), 3))
        got[new] = np.minimum(sample, cap(u))
        fresh = np.isnan(rate[:, 0])
        rate[fresh] = got[fresh]
        rate[~fresh] += self.alpha * (got[~fresh] - rate[~fresh])
        rate *= (1 - self.alpha) ** (gone - 1)
        keep = (rate > 1e-3).any(axis=1)  # a prefix long silent is forgotten
        self.keys, self.rate, self.since = allk[keep], rate[keep], since[keep]
        self.started += gone * self.interval
        self.dirty = True

    def lookup(self, nets: npt.NDArray[np.uint64],
               ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:  # fmt: skip
        """Usual rate and first-sampled time of each prefix network (NaN where unknown)."""
        rate = np.full((len(nets), 3), np.nan)
        since = np.full(len(nets), np.nan)
        if len(self.keys):
            at = np.minimum(np.searchsorted(self.keys, nets), len(self.keys) - 1)
            hit = self.keys[at] == nets
            rate[hit], since[hit] = self.rate[at[hit]], self.since[at[hit]]
        return rate, since

    def state(self) -> dict[str, Any]:
        return {"plen": self.plen, "interval": self.interval, "keys": self.keys,
                "rate": self.rate, "since": self.since}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> bool:
        """Load :meth:`state`; False (nothing loaded) if it was learnt per another prefix
        length or interval."""
        if int(state["plen"]) != self.plen or float(state["interval"]) != self.interval:
            return False
        self.keys = np.asarray(state["keys"], np.uint64)
        self.rate = np.asarray(state["rate"], np.float64).reshape(-1, 3)
        self.since = np.asarray(state["since"], np.float64)
        # the time the engine was down is not silence: the next batch starts a new interval
        self.started = None
        return True


@dataclass
class _Cols:
    """A batch's columns the groups share, as NumPy arrays."""

    ts: npt.NDArray[np.float64]
    te: npt.NDArray[np.float64]
    sampled: npt.NDArray[np.float64]
    nb: npt.NDArray[np.float64]  # seconds a record is spread over
    per_s: npt.NDArray[np.float32]  # records × (pps, bps, flows) while it lasts
    kind: npt.NDArray[np.int8]


def _numpy(col: pa.ChunkedArray | pa.Array, dtype: type[Any]) -> npt.NDArray[Any]:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        arr = pc.fill_null(arr, 0)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype)


class _Ring:
    """Candidates' spread rates, second by second, for the last ``horizon`` seconds of the flows'
    own time: one row of a (keys, seconds, columns) array per key, indexed by second modulo the
    horizon, so a batch's candidates are updated and tested together. Every cell belongs to a
    second of the current horizon: when the newest second advances, the cells of the seconds
    that leave it are cleared for every key at once."""

    def __init__(self, horizon: int, width: int) -> None:
        self.h, self.w = horizon, width
        self.slot: dict[int, int] = {}
        self.free: list[int] = []
        self.vals = np.zeros((0, horizon, width), np.float32)
        self.last = np.zeros(0, np.int64)  # per slot: the newest second written
        self.base = -(1 << 62)  # the newest second of any key
        self._sorted: npt.NDArray[np.uint64] | None = None

    def __len__(self) -> int:
        return len(self.slot)

    def sorted_keys(self) -> npt.NDArray[np.uint64]:
        if self._sorted is None:
            self._sorted = np.sort(np.fromiter(self.slot, np.uint64, len(self.slot)))
        return self._sorted

    def slots(self, keys: Sequence[int]) -> npt.NDArray[np.int64]:
        out = np.empty(len(keys), np.int64)
        for i, k in enumerate(keys):
            j = self.slot.get(k)
            if j is None:
                if not self.free:
                    self._grow()
                j = self.slot[k] = self.free.pop()
                self._sorted = None
                self.vals[j] = 0.0
                self.last[j] = -(1 << 62)
            out[i] = j
        return out

    def _grow(self) -> None:
        n = len(self.vals)
        m = max(64, 2 * n)
        vals = np.zeros((m, self.h, self.w), np.float32)
        vals[:n] = self.vals
        self.vals = vals
        self.last = np.concatenate([self.last, np.full(m - n, -(1 << 62), np.int64)])
        self.free.extend(range(m - 1, n - 1, -1))

    def _advance(self, newest: int) -> None:
        if newest <= self.base:
            return
        gone = newest - self.base
        if gone >= self.h:
            self.vals[:] = 0.0
        else:
            self.vals[:, (self.base + 1 + np.arange(gone)) % self.h] = 0.0
        self.base = newest

    def add(self, slots: npt.NDArray[np.int64], lo: int,
            block: npt.NDArray[np.float64]) -> None:  # fmt: skip
        """Add ``block`` (keys × seconds from ``lo`` × columns) to the keys' rows."""
        secs = lo + np.arange(block.shape[1])
        self._advance(int(secs[-1]))
        keep = secs > self.base - self.h
        secs, block = secs[keep], block[:, keep]
        if not len(secs):
            return
        # the seconds are one run, split in two where it wraps round the ring
        p0 = int(secs[0]) % self.h
        first = min(len(secs), self.h - p0)
        self.vals[slots, p0 : p0 + first] += block[:, :first]
        if first < len(secs):
            self.vals[slots, : len(secs) - first] += block[:, first:]
        self.last[slots] = np.maximum(self.last[slots], secs[-1])

    def window(self, slots: npt.NDArray[np.int64]) -> tuple[int, npt.NDArray[np.float32]]:
        """(first second, keys × the last ``horizon`` seconds × columns), oldest first."""
        first = self.base - self.h + 1
        pos = (first + np.arange(self.h)) % self.h
        return first, self.vals[slots][:, pos]

    def drop_older(self, second: int) -> None:
        old = [k for k, j in self.slot.items() if self.last[j] < second]
        for k in old:
            self.free.append(self.slot.pop(k))
        if old:
            self._sorted = None


class DdosEngine:
    """Feed it decoded flow batches (:data:`STREAM_COLUMNS`); it returns the attacks each batch
    reveals (each attack once, until its target has been quiet for ``horizon_s``)."""

    def __init__(self, params: DdosParams, inside: Sequence[Net]) -> None:
        self.p = params
        self.inside4 = [(int(n.network_address), int(n.broadcast_address))
                        for n in inside if n.version == 4]  # fmt: skip
        self.inside6 = [n for n in inside if n.version == 6]
        spans = sorted(self.inside4)
        merged: list[list[int]] = []
        for lo, hi in spans:  # overlapping or adjacent ranges as one, for one search per address
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._ranges4 = (np.array([m[0] for m in merged], np.uint64),
                         np.array([m[1] for m in merged], np.uint64))  # fmt: skip
        self.baseline = (
            _Baseline(params.baseline_prefix_v4, params.baseline_interval_s, params.baseline_alpha)
            if params.baseline
            else None
        )
        self._reflection = np.zeros(1 << 16, bool)
        self._reflection[list(params.reflection_ports)] = True
        self.keys = _Keys()
        # an outside address, an inside one and a prefix are apart: a heavy prefix (thousands
        # of addresses' traffic) never shares a cell with an address
        self.totals = {"host": _Totals(params.horizon_s, params.candidate_bits),
                       "remote": _Totals(params.horizon_s, params.candidate_bits),
                       "prefix": _Totals(params.horizon_s, 16)}  # fmt: skip
        # candidates' spread rates, per key, second by second (pps, bps, flows, sampled
        # packets, then pps per attack type)
        self.bins = _Ring(params.horizon_s + 2, 4 + len(TYPES))
        self.active: dict[int, float] = {}  # key -> last second over threshold
        self.records = 0
        self.unknown_rate = 0
        self.candidates_dropped = 0  # candidate keys not followed: the ring was full
        self._dropped_logged = 0.0
        self._purged = 0.0
        self.latest = 0.0  # the last second the flows have reached
        self.seconds = 0.0
        base = np.array([params.threshold_pps, params.threshold_mbps * 1e6,
                         params.threshold_flows])  # fmt: skip
        self.thr = {
            ("host", "inbound"): base,
            ("host", "outbound"): base * params.outbound_factor,
            ("prefix", "inbound"): base * params.prefix_factor,
            ("remote", "outbound"): base * params.outbound_factor,
        }

    # ------------------------------------------------------------------ per batch

    def _inside(self, v4: npt.NDArray[np.uint64], ok4: npt.NDArray[np.bool_],
                text: pa.Array) -> npt.NDArray[np.bool_]:  # fmt: skip
        lo, hi = self._ranges4
        if len(lo):
            at = np.searchsorted(lo, v4, side="right") - 1
            hit = ok4 & (at >= 0) & (v4 <= hi[np.maximum(at, 0)])
        else:
            hit = np.zeros(len(v4), bool)
        if self.inside6 and (~ok4).any():
            for i in np.flatnonzero(~ok4):
                try:
                    a = ipaddress.ip_address(str(text[i]))
                except ValueError:
                    continue
                hit[i] = any(a in n for n in self.inside6)
        return hit

    def _ids(self, v4: npt.NDArray[np.uint64], ok4: npt.NDArray[np.bool_],
             text: pa.Array, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:  # fmt: skip
        ids = v4[rows]
        rest = np.flatnonzero(~ok4[rows])
        if len(rest):
            ids[rest] = self.keys.of(str(text[int(i)]) for i in rows[rest])
        return ids

    @staticmethod
    def _addresses(flows: pa.Table, name: str,
                   ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_], pa.Array]:  # fmt: skip
        """An address column as IPv4 integers and which rows are IPv4. The collector hands the
        decoder's integers over (``<name>_v4``, null where the row is IPv6 or came without
        them); only rows without them are parsed from text."""
        text = flows.column(name).combine_chunks()
        num = name + "_v4"
        if num not in flows.column_names:
            v4, ok = parse_v4(text)
            return v4, ok, text
        col = flows.column(num).combine_chunks()
        v4 = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), np.uint64)
        if not col.null_count:
            return v4, np.ones(len(v4), bool), text
        ok = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), bool)
        rest = np.flatnonzero(~ok)
        p, pok = parse_v4(text.take(pa.array(rest)))
        v4[rest], ok[rest] = p, pok
        return v4, ok, text

    def feed(self, flows: pa.Table, now: float | None = None) -> list[Attack]:
        t0 = time.perf_counter()
        now = time.time() if now is None else now
        n = flows.num_rows
        self.records += n
        if n == 0:
            return []
        rate_col = flows.column("sampling_rate")
        rate = _numpy(rate_col, np.float64)
        self.unknown_rate += int(rate_col.null_count)
        src, ok_s, src_t = self._addresses(flows, "src_addr")
        dst, ok_d, dst_t = self._addresses(flows, "dst_addr")
        s_in = self._inside(src, ok_s, src_t)
        d_in = self._inside(dst, ok_d, dst_t)
        known = rate > 0
        inbound = d_in & ~s_in & known
        outbound = s_in & ~d_in & known
        remote = ~d_in & known
        ts = _epoch(flows.column("time_start"))
        te = np.maximum(_epoch(flows.column("time_end")), ts)
        packets = _numpy(flows.column("packets"), np.float64)
        est_p = packets * rate
        est_b = _numpy(flows.column("bytes"), np.float64) * (rate * 8)
        proto = _numpy(flows.column("protocol"), np.uint8)
        flags = _numpy(flows.column("tcp_flags"), np.uint8)
        kind = np.full(n, 4, np.int8)  # other
        kind[proto == 1] = 3
        udp = proto == 17
        kind[udp] = 2
        sport = _numpy(flows.column("src_port"), np.uint16)
        kind[udp & self._reflection[sport]] = 1
        kind[(proto == 6) & ((flags & 0x12) == 0x02)] = 0  # SYN without ACK
        # the span a record's packets are spread over: with c sampled packets seen over d
        # seconds the flow most likely lasted d·(c+1)/(c−1) (the range of c uniform points);
        # one sampled packet says nothing of the span, so it gets sparse_spread_s
        d = te - ts
        span_s = np.where(packets >= 2, d * (packets + 1) / np.maximum(packets - 1, 1),
                          self.p.sparse_spread_s)  # fmt: skip
        np.clip(span_s, self.p.min_duration_s, self.p.horizon_s, out=span_s)
        nb = np.maximum(np.ceil(span_s - 0.05), 1)  # float noise
        per_s = np.empty((n, 3), np.float32)  # each record's pps, bps, flows while it lasts
        per_s[:, 0] = est_p / nb
        per_s[:, 1] = est_b / nb
        per_s[:, 2] = 1.0
        cols = _Cols(ts, te, packets, nb, per_s, kind)

        found: list[Attack] = []
        rows_in = np.flatnonzero(inbound)
        rows_out = np.flatnonzero(outbound)
        # an outside address flooded from inside: many subscribers' devices (a botnet), or
        # sources no customer holds (spoofed), each below any per-source threshold
        rows_remote = np.flatnonzero(remote)
        v4_in = rows_in[ok_d[rows_in]]
        if self.baseline is not None:
            self.baseline.observe(dst[v4_in], np.column_stack(
                [est_p[v4_in], est_b[v4_in], np.ones(len(v4_in))]))  # fmt: skip
        groups = [
            ("host", "inbound", rows_in, self._ids(dst, ok_d, dst_t, rows_in)),
            ("host", "outbound", rows_out, self._ids(src, ok_s, src_t, rows_out)),
            ("prefix", "inbound", v4_in, self.keys.prefixes(dst[v4_in], self.p.prefix_v4)),
            ("remote", "outbound", rows_remote, self._ids(dst, ok_d, dst_t, rows_remote)),
        ]
        self.latest = max(self.latest, float(te.max()))  # first: a prefix's warm-up is by it
        for scope, direction, rows, keys in groups:
            if len(rows):
                found += self._group(scope, direction, rows, keys, cols, now)
        if self.baseline is not None:
            prefix_thr = self.thr[("prefix", "inbound")]
            self.baseline.advance(self.latest, lambda nets: self._learnt(nets, prefix_thr))
        if self.latest - self._purged >= self.p.horizon_s / 2:
            self._purge(self.latest)
        self.seconds += time.perf_counter() - t0
        return found

    def _purge(self, latest: float) -> None:
        """Forget keys quiet for two horizons of the flows' own time (memory stays bounded by
        what is current; a replay of old flows is not purged by the wall clock)."""
        old = latest - 2 * self.p.horizon_s
        self.bins.drop_older(int(old))
        for key in [k for k, last in self.active.items() if last < old]:
            del self.active[key]
        self._purged = latest

    def _group(self, scope: str, direction: str, rows: npt.NDArray[np.int64],
               keys: npt.NDArray[np.uint64], c: _Cols, now: float) -> list[Attack]:  # fmt: skip
        # direction and scope share the key space (prefix ids are distinct; an inside address is
        # inbound or outbound per record): tag outbound keys so a host can be both
        if direction == "outbound":
            keys = keys | np.uint64(_REMOTE_TAG if scope == "remote" else _SOURCE_TAG)
        vals = c.per_s[rows]
        # can any one second of this key reach a threshold? No second holds more than the sum
        # of the per-second rates of the records seen for it in the horizon
        total = self.totals[scope].add(keys, vals, now)
        thr_r = self._thresholds(scope, direction, keys)
        cand = np.any(total >= thr_r * 0.999, axis=1)  # float32 sums round
        ring = self.bins.sorted_keys()
        followed = np.zeros(len(keys), bool)
        if len(ring):
            at = np.minimum(np.searchsorted(ring, keys), len(ring) - 1)
            followed = ring[at] == keys
        cand = self._within_cap(keys, cand & ~followed, total / thr_r) | followed
        if not cand.any():
            return []
        pick = np.flatnonzero(cand)
        r = rows[pick]
        nb = c.nb[r].astype(np.int64)
        mid = (c.ts[r] + c.te[r]) / 2
        s = np.round(mid - nb / 2).astype(np.int64)
        e = s + nb - 1
        # every candidate's records spread at once: difference arrays over one block of
        # (keys × seconds × columns), summed by bincount, then a running sum over the seconds
        uk, ki = _unique_inverse(keys[pick])
        thr_k = self._thresholds(scope, direction, uk)
        lo = max(int(s.min()), max(self.bins.base, int(e.max())) - self.p.horizon_s - 1)
        live = e >= lo  # wholly older than the horizon: adds nothing
        s = np.maximum(s, lo)
        e = np.maximum(e, s)
        hi = int(e.max())
        span = hi - lo + 2
        cells = len(uk) * span
        start = ki * span + (s - lo)
        stop = ki * span + (e - lo + 1)
        rate = np.where(live[:, None], vals[pick], 0.0)
        per_p = rate[:, 0]
        kd = c.kind[r]
        # one bincount over (cell, measure) pairs: + at a record's first second, − after its
        # last; the measures are pps, bps, flows, sampled packets, then pps per attack type
        width = 4 + len(TYPES)
        w = np.zeros((len(r), width))
        w[:, 0], w[:, 1], w[:, 2] = per_p, rate[:, 1], rate[:, 2]
        w[:, 3] = np.where(live, c.sampled[r] / nb, 0.0)
        w[np.arange(len(r)), 4 + kd] = per_p
        measure = np.arange(width)
        at = np.concatenate([start * width, stop * width])[:, None] + measure
        diff = np.asarray(
            np.bincount(at.ravel(), np.concatenate([w, -w]).ravel(), cells * width), np.float64
        )
        block = np.cumsum(diff.reshape(len(uk), span, width), axis=1)[:, :-1]
        slots = self.bins.slots(uk.tolist())
        self.bins.add(slots, lo, block)
        # no window's mean beats the top second: only keys whose top second does are read whole
        peak = self.bins.vals[slots, :, :3].max(axis=1)
        may = np.flatnonzero((peak >= thr_k).any(axis=1))
        out: list[Attack] = []
        if not len(may):
            return out
        first, rows_all = self.bins.window(slots[may])
        level = self._level(rows_all.astype(np.float64))
        hits: npt.NDArray[np.bool_] = np.any(level >= thr_k[may][:, None, :], axis=2)
        for i in np.flatnonzero(hits.any(axis=1)):
            out += self._attack(int(uk[may[i]]), scope, direction, first, rows_all[i],
                                level[i], hits[i], thr_k[may[i]], now)  # fmt: skip
        return out

    def _within_cap(self, keys: npt.NDArray[np.uint64], new: npt.NDArray[np.bool_],
                    ratio: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.bool_]:  # fmt: skip
        """The new candidates the ring has room for: all of them normally; past
        ``max_candidates`` keys, those whose upper bound is nearest a threshold (the
        others are counted and logged, never followed: memory stays bounded whatever the
        traffic)."""
        if not new.any():
            return new
        uk, ki = _unique_inverse(keys[new])
        room = self.p.max_candidates - len(self.bins)
        if len(uk) <= room:
            return new
        best = np.zeros(len(uk))
        np.maximum.at(best, ki, ratio[new].max(axis=1))
        keep_k = np.zeros(len(uk), bool)
        if room > 0:
            keep_k[np.argsort(-best, kind="stable")[:room]] = True
        self.candidates_dropped += int((~keep_k).sum())
        if time.monotonic() - self._dropped_logged >= 60.0:
            self._dropped_logged = time.monotonic()
            log.warning(
                "ddos: %d keys are candidates at once, more than max_candidates = %d; the "
                "nearest to a threshold are followed, %d not followed so far (raise "
                "[detect.ddos] max_candidates if memory allows)",
                len(self.bins) + len(uk),
                self.p.max_candidates,
                self.candidates_dropped,
            )
        out = new.copy()
        out[np.flatnonzero(new)] = keep_k[ki]
        return out

    def _thresholds(self, scope: str, direction: str,
                    keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:  # fmt: skip
        """Per key, the (pps, bps, flows) it is held against: the absolute thresholds, or for
        an inside destination whose prefix has a learnt usual rate, the multiple of it."""
        base = self.thr[(scope, direction)]
        if self.baseline is None or direction != "inbound":
            return np.broadcast_to(base, (len(keys), 3))
        if scope == "host":
            v4 = keys < _V6_BASE
            nets = np.where(v4, keys, 0) & self.baseline.mask
        elif self.p.baseline_prefix_v4 <= self.p.prefix_v4:  # a carpet prefix in one learnt one
            v4 = np.ones(len(keys), bool)
            nets = keys & np.uint64(0xFFFFFFFF) & self.baseline.mask
        else:
            return np.broadcast_to(base, (len(keys), 3))
        out = self._learnt(nets, base)
        out[~v4] = base
        return out

    def _learnt(self, nets: npt.NDArray[np.uint64],
                base: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:  # fmt: skip
        """Thresholds of inside prefix networks: ``base`` until a prefix has been learnt for
        the warm-up, then ``baseline_multiplier`` × its usual rate, never below
        ``baseline_floor`` × ``base``."""
        out = np.tile(base, (len(nets), 1))
        if self.baseline is None or not len(self.baseline.keys):
            return out
        rate, since = self.baseline.lookup(nets)
        warm = since + self.p.baseline_warmup_s <= self.latest  # NaN: never learnt
        if warm.any():
            out[warm] = np.maximum(self.p.baseline_floor * base,
                                   self.p.baseline_multiplier * rate[warm])  # fmt: skip
        return out

    def _attack(self, key: int, scope: str, direction: str, origin: int,
                rows: npt.NDArray[np.float32], level: npt.NDArray[np.float64],
                hit: npt.NDArray[np.bool_], thr: npt.NDArray[np.float64],
                now: float) -> list[Attack]:  # fmt: skip
        idx = np.flatnonzero(hit)
        last_over = origin + int(idx[-1])
        known = self.active.get(key)
        self.active[key] = max(last_over, known or last_over)
        if known is not None and last_over - known <= self.p.horizon_s:
            return []  # the same attack, already reported
        if scope == "prefix" and self._host_attacked(key):
            return []  # the prefix only shows an attack on one of its hosts
        first = int(idx[0])
        v = level[first]
        metric = "pps" if v[0] >= thr[0] else ("bps" if v[1] >= thr[1] else "flows")
        tot = rows[idx][:, 4:].sum(axis=0)
        whole = float(tot.sum())
        shares = {t: float(tot[i] / whole) if whole else 0.0 for i, t in enumerate(TYPES)}
        top = max(shares, key=lambda t: shares[t])
        kind_name = "carpet" if scope == "prefix" else (
            top if shares[top] >= self.p.type_share and top != "other" else "mixed"
        )  # fmt: skip
        top_level = level[idx[np.argmax(level[idx, 0])]]
        return [
            Attack(
                target=self.keys.name(key & ~(_REMOTE_TAG | _SOURCE_TAG)),
                scope=scope,
                direction=direction,
                kind=kind_name,
                start=float(origin + first),
                detected=now,
                pps=float(top_level[0]),
                bps=float(top_level[1]),
                flows=float(top_level[2]),
                metric=metric,
                shares={t: round(x, 3) for t, x in shares.items() if x},
            )
        ]

    def _level(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Per key and second, the best evidence of (pps, bps, flows): over each trailing window
        of ``windows_s``, the mean rate less ``confidence_z`` standard errors of a count of
        sampled packets (Poisson) — one second decides a flood seen unsampled; a thinly sampled
        one needs the seconds that make it certain. ``rows``: keys × seconds × columns."""
        k, n = rows.shape[:2]
        best = np.zeros((k, n, 3))
        cs = np.concatenate([np.zeros((k, 1, 4)), np.cumsum(rows[:, :, :4], axis=1)], axis=1)
        for w in self.p.windows_s:
            w = min(w, n)
            total = cs[:, w:] - cs[:, :-w]  # windows ending at seconds w-1 .. n-1
            count = total[:, :, 3]
            factor = np.clip(1 - self.p.confidence_z / np.sqrt(np.maximum(count, 1e-9)), 0, 1)
            mean = total[:, :, :3] / w
            mean[:, :, 0] *= factor
            mean[:, :, 1] *= factor
            best[:, w - 1 :] = np.maximum(best[:, w - 1 :], mean)
        return best

    def _host_attacked(self, prefix_key: int) -> bool:
        name = self.keys.name(prefix_key)
        net = ipaddress.ip_network(name)
        return any(k < int(_V6_BASE) and ipaddress.IPv4Address(k) in net for k in self.active)


def _epoch(col: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.float64]:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_timestamp(arr.type):
        arr = pc.cast(arr, pa.timestamp("us", tz="UTC"))
    per_s = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[arr.type.unit]
    ticks = arr.cast(pa.int64())
    if ticks.null_count:
        ticks = pc.fill_null(ticks, 0)
    return np.asarray(ticks.to_numpy(zero_copy_only=False), np.float64) / per_s


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    from mamori.schemas import dataset

    return pa.Table.from_pylist(rows, schema=dataset("findings").arrow)


def _finding_id(a: Attack) -> str:
    key = f"{a.target}|{a.direction}|{a.kind}|{int(a.start)}"
    return "ddos-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def attack_findings(attacks: Sequence[Attack]) -> pa.Table:
    """Attacks as findings (kind ``ddos``; the method is the attack type, ``carpet`` for a
    prefix)."""
    rows = []
    for a in attacks:
        rows.append(
            {
                "detected": datetime.fromtimestamp(a.detected, UTC),
                "finding_id": _finding_id(a),
                "kind": "ddos",
                "method": a.kind,
                "ip": a.target,
                "port": None,
                "protocol": None,
                "score": float(min(1.0, max(a.pps, 1.0) / 1e6)),
                "first_seen": datetime.fromtimestamp(a.start, UTC),
                "last_seen": datetime.fromtimestamp(a.detected, UTC),
                "measure": "M13",
                "evidence": json.dumps(
                    {
                        "scope": a.scope,
                        "direction": a.direction,
                        "pps": round(a.pps),
                        "bps": round(a.bps),
                        "flows": round(a.flows, 1),
                        "metric": a.metric,
                        "types": a.shares,
                    },
                    sort_keys=True,
                ),
            }
        )
    return _table(rows)


class DdosStream:
    """The engine on a live stream: ``collector.observers.append(stream)`` and
    ``collector.after_flush.append(stream.flushed)``. Governance authorises M13 to look at the
    stream's columns (one audit entry); each attack is stored as a finding the moment its
    batch is processed, then handed to ``on_attack``. The senders of an outbound attack
    (``attack-source`` findings, :mod:`mamori.detect.ddos_sources`) are read from the stored
    flows, as ``detect ddos`` reads them, once the collector has stored the flows up to
    ``margin_s`` after the attack was found (or at its last flush)."""

    def __init__(
        self,
        gov: Governance,
        actor: str,
        params: DdosParams | None = None,
        *,
        write: bool = True,
        on_attack: Callable[[Attack], None] | None = None,
        on_senders: Callable[[Attack, int], None] | None = None,
    ) -> None:
        from mamori.detect.ddos_sources import SourceParams
        from mamori.detect.flowview import internal_nets

        self.gov, self.actor, self.write, self.on_attack = gov, actor, write, on_attack
        self.on_senders = on_senders
        self.columns = gov.open_stream_read(
            "M13", "flows", STREAM_COLUMNS, actor, justification="DDoS detection (stream)"
        )
        self.engine = DdosEngine(params or DdosParams(), internal_nets(gov)[0])
        self.attacks: list[Attack] = []
        self.sources = SourceParams()
        self.outbound: list[Attack] = []  # outbound attacks whose senders are not read yet
        self.senders = 0
        # the prefixes' usual rates outlive a restart (rates per prefix: operational state)
        self.baseline_path = gov.state_dir("ddos") / "baseline.npz"
        if self.engine.baseline is not None and self.baseline_path.exists():
            with np.load(self.baseline_path) as state:
                self.engine.baseline.restore(dict(state))

    def __call__(self, flows: pa.Table) -> None:
        # the authorised columns, and the collector's integer form of the addresses among them
        names = [*self.columns]
        names += [f"{c}_v4" for c in self.columns if f"{c}_v4" in flows.column_names]
        found = self.engine.feed(flows.select(names))
        base = self.engine.baseline
        if base is not None and base.dirty:
            tmp = self.baseline_path.with_suffix(".tmp.npz")
            np.savez(tmp, **base.state())
            os.replace(tmp, self.baseline_path)
            base.dirty = False
        if not found:
            return
        self.attacks += found
        self.outbound += [a for a in found if a.direction == "outbound"]
        if self.write:
            self.gov.write("M13", "findings", attack_findings(found), self.actor,
                           justification="DDoS detection (stream)")  # fmt: skip
        for a in found:
            if self.on_attack is not None:
                self.on_attack(a)

    def flushed(self, final: bool = False) -> None:
        """The collector made what it decoded visible in the store: read the senders of the
        outbound attacks whose flows are all there (flow time ``margin_s`` past the attack's
        detection; every one at the last flush)."""
        if not self.outbound or not self.write:
            return
        from mamori.detect.ddos_sources import attack_sources

        margin = self.sources.margin_s
        ready = [a for a in self.outbound if final or self.engine.latest >= a.detected + margin]
        if not ready:
            return
        self.outbound = [a for a in self.outbound if a not in ready]
        table = attack_sources(self.gov, attack_findings(ready), self.actor, self.sources)
        self.senders += table.num_rows
        if self.on_senders is not None:
            for a in ready:
                self.on_senders(a, sum(1 for f in table.column("evidence").to_pylist()
                                       if json.loads(f)["attack"] == _finding_id(a)))  # fmt: skip


class DdosDetector:
    """``mamori detect ddos``: the streaming engine replayed over stored flows, in the order
    a collector would have received them (by each record's last packet), one batch per second.
    ``mamori collect --detect-ddos`` runs the same engine on the live stream."""

    name = "ddos"
    measure = "M13"
    Params = DdosParams

    def __init__(self, params: DdosParams | None = None, *, write: bool = True) -> None:
        self.params = params or DdosParams()
        self.write = write

    def run(self, gov: Governance, window: Window, *, actor: str) -> DetectorRun:
        from mamori.detect.flowview import internal_nets

        # neutral SQL: with engine = "spark" the window is sorted on Spark; the streaming
        # engine then replays it here, second by second, as the collector would have
        box = gov.sandbox(self.params.memory_limit_mb, label="M13-ddos", neutral=True)
        try:
            grant = gov.open(
                self.measure,
                "flows",
                list(STREAM_COLUMNS),
                actor,
                justification="DDoS detection (replay of stored flows)",
                start=window.since,
                end=window.until,
                sandbox=box,
            )
            flows = grant.sql(
                f"SELECT * FROM {grant.name} ORDER BY time_end, time_start"
            ).to_arrow_table()
        finally:
            box.close()
        nets, _ = internal_nets(gov)
        engine = DdosEngine(self.params, nets)
        attacks: list[Attack] = []
        if flows.num_rows:
            end = _epoch(flows.column("time_end"))
            second = np.floor(end).astype(np.int64)
            cuts = np.flatnonzero(np.diff(second)) + 1
            bounds = [0, *cuts.tolist(), flows.num_rows]
            for a, b in itertools.pairwise(bounds):
                attacks += engine.feed(flows.slice(a, b - a), now=float(second[a]) + 1.0)
        table = attack_findings(attacks)
        senders = 0
        if self.write and table.num_rows:
            from mamori.detect.ddos_sources import attack_sources

            gov.write(self.measure, "findings", table, actor, justification="DDoS detection")
            # the subscribers' devices behind outbound attacks, for `mamori notify` (M13)
            senders = attack_sources(gov, table, actor).num_rows
        summary = {
            "window": window.as_json(),
            "records": engine.records,
            "records_unknown_rate": engine.unknown_rate,
            "candidates_dropped": engine.candidates_dropped,
            "attacks": len(attacks),
            "attack_sources": senders,
            "engine_seconds": round(engine.seconds, 3),
        }
        return DetectorRun(findings=table, summary=summary)
