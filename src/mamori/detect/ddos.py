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
the last ``horizon_s`` of arrivals reach that threshold. Running totals per address (sorted
NumPy arrays, merged once a second) pick these candidates; only their records are spread into
bins. Normal traffic — many addresses, each far below the thresholds — costs a parse, a sort and a
lookup per record.

The attack type is the dominant one among the attack's packets: ``syn`` (TCP SYN without ACK),
``amplification`` (UDP from a reflection port), ``udp``, ``icmp``, else ``mixed``; ``carpet``
for a prefix.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
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
    """Integer ids for addresses and prefixes: IPv4 addresses are their own value; IPv6 addresses
    and every prefix get ids above 2**40 from a table (few)."""

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

    def name(self, key: int) -> str:
        if key < int(_V6_BASE):
            return str(ipaddress.IPv4Address(key))
        return self.names[key]


class _Totals:
    """Running packet/bit/flow totals per key over the last ``horizon_s`` of arrivals: two
    generations of sorted arrays (the older one dropped every half horizon), with the batches of
    the current second folded in once a second."""

    def __init__(self, horizon_s: float) -> None:
        self.half = horizon_s / 2
        empty = (np.zeros(0, np.uint64), np.zeros((0, 3)))
        self.gens: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]] = [empty, empty]
        self.pending: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]] = []
        self.gen_started = 0.0
        self.folded = 0.0

    @staticmethod
    def _merge(
        parts: Sequence[tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]],
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]:
        keys = np.concatenate([p[0] for p in parts])
        vals = np.concatenate([p[1] for p in parts])
        u, inv = np.unique(keys, return_inverse=True)
        out = np.column_stack([np.bincount(inv, vals[:, c], len(u)) for c in range(3)])
        return u.astype(np.uint64), out.reshape(len(u), 3).astype(np.float64)

    def lookup(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
        out = np.zeros((len(keys), 3))
        for k, v in [*self.gens, *self.pending]:
            if not len(k):
                continue
            pos = np.searchsorted(k, keys)
            pos = np.minimum(pos, len(k) - 1)
            hit = k[pos] == keys
            out[hit] += v[pos[hit]]
        return out

    def add(self, keys: npt.NDArray[np.uint64], vals: npt.NDArray[np.float64], now: float) -> None:
        self.pending.append((keys, vals))
        if now - self.folded >= 1.0 or len(self.pending) > 64:
            self.gens[1] = self._merge([self.gens[1], *self.pending])
            self.pending = []
            self.folded = now
        if now - self.gen_started >= self.half:
            self.gens = [self.gens[1], (np.zeros(0, np.uint64), np.zeros((0, 3)))]
            self.gen_started = now


class _Ring:
    """Candidates' spread rates, second by second, for the last ``horizon`` seconds of the flows'
    own time: one row of a (keys, seconds, columns) array per key, indexed by second modulo the
    horizon, so a batch's candidates are updated and tested together. A cell holds the second it
    was last written for; a cell left from an older second reads as zero."""

    def __init__(self, horizon: int, width: int) -> None:
        self.h, self.w = horizon, width
        self.slot: dict[int, int] = {}
        self.free: list[int] = []
        self.vals = np.zeros((0, horizon, width), np.float32)
        self.sec = np.zeros((0, horizon), np.int64)
        self.last = np.zeros(0, np.int64)  # per slot: the newest second written
        self.base = -(1 << 62)  # the newest second of any key

    def __len__(self) -> int:
        return len(self.slot)

    def slots(self, keys: Sequence[int]) -> npt.NDArray[np.int64]:
        out = np.empty(len(keys), np.int64)
        for i, k in enumerate(keys):
            j = self.slot.get(k)
            if j is None:
                if not self.free:
                    self._grow()
                j = self.slot[k] = self.free.pop()
                self.sec[j] = -1
                self.last[j] = -(1 << 62)
            out[i] = j
        return out

    def _grow(self) -> None:
        n = len(self.vals)
        m = max(64, 2 * n)
        vals = np.zeros((m, self.h, self.w), np.float32)
        sec = np.full((m, self.h), -1, np.int64)
        vals[:n], sec[:n] = self.vals, self.sec
        self.vals, self.sec = vals, sec
        self.last = np.concatenate([self.last, np.full(m - n, -(1 << 62), np.int64)])
        self.free.extend(range(m - 1, n - 1, -1))

    def add(self, slots: npt.NDArray[np.int64], lo: int,
            block: npt.NDArray[np.float64]) -> None:  # fmt: skip
        """Add ``block`` (keys × seconds from ``lo`` × columns) to the keys' rows."""
        secs = lo + np.arange(block.shape[1])
        self.base = max(self.base, int(secs[-1]))
        keep = secs > self.base - self.h
        secs, block = secs[keep], block[:, keep]
        if not len(secs):
            return
        pos = secs % self.h
        rows, cols = slots[:, None], pos[None, :]
        cur = self.vals[rows, cols].astype(np.float64)
        cur[self.sec[rows, cols] != secs[None, :]] = 0.0
        self.vals[rows, cols] = cur + block
        self.sec[rows, cols] = secs[None, :]
        self.last[slots] = np.maximum(self.last[slots], secs[-1])

    def window(self, slots: npt.NDArray[np.int64]) -> tuple[int, npt.NDArray[np.float64]]:
        """(first second, keys × the last ``horizon`` seconds × columns), oldest first."""
        first = self.base - self.h + 1
        secs = first + np.arange(self.h)
        pos = secs % self.h
        rows, cols = slots[:, None], pos[None, :]
        out = self.vals[rows, cols].astype(np.float64)
        out[self.sec[rows, cols] != secs[None, :]] = 0.0
        return first, out

    def drop_older(self, second: int) -> None:
        old = [k for k, j in self.slot.items() if self.last[j] < second]
        for k in old:
            self.free.append(self.slot.pop(k))


class DdosEngine:
    """Feed it decoded flow batches (:data:`STREAM_COLUMNS`); it returns the attacks each batch
    reveals (each attack once, until its target has been quiet for ``horizon_s``)."""

    def __init__(self, params: DdosParams, inside: Sequence[Net]) -> None:
        self.p = params
        self.inside4 = [(int(n.network_address), int(n.broadcast_address))
                        for n in inside if n.version == 4]  # fmt: skip
        self.inside6 = [n for n in inside if n.version == 6]
        self.keys = _Keys()
        self.totals = _Totals(params.horizon_s)
        # candidates' spread rates, per key, second by second (pps, bps, flows, sampled
        # packets, then pps per attack type)
        self.bins = _Ring(params.horizon_s + 2, 4 + len(TYPES))
        self.active: dict[int, float] = {}  # key -> last second over threshold
        self.records = 0
        self.unknown_rate = 0
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
        hit = np.zeros(len(v4), bool)
        for lo, hi in self.inside4:
            hit |= ok4 & (v4 >= lo) & (v4 <= hi)
        if self.inside6 and (~ok4).any():
            for i in np.flatnonzero(~ok4):
                try:
                    a = ipaddress.ip_address(str(text[i]))
                except ValueError:
                    continue
                hit[i] = any(a in n for n in self.inside6)
        return hit

    def _ids(self, v4: npt.NDArray[np.uint64], ok4: npt.NDArray[np.bool_],
             text: pa.Array) -> npt.NDArray[np.uint64]:  # fmt: skip
        ids = v4.copy()
        rest = np.flatnonzero(~ok4)
        if len(rest):
            ids[rest] = self.keys.of(str(text[i]) for i in rest)
        return ids

    def _prefix_ids(self, v4: npt.NDArray[np.uint64], ok4: npt.NDArray[np.bool_],
                    rows: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:  # fmt: skip
        plen = self.p.prefix_v4
        mask = np.uint64(((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1))
        nets = v4[rows] & mask
        u, inv = np.unique(nets, return_inverse=True)
        names = [f"{ipaddress.IPv4Address(int(x))}/{plen}" for x in u]
        return self.keys.of(names)[inv]

    def feed(self, flows: pa.Table, now: float | None = None) -> list[Attack]:
        t0 = time.perf_counter()
        now = time.time() if now is None else now
        n = flows.num_rows
        self.records += n
        if n == 0:
            return []
        rate_col = flows.column("sampling_rate")
        rate = pc.fill_null(rate_col, 0).to_numpy(zero_copy_only=False).astype(np.float64)
        self.unknown_rate += int(rate_col.null_count)
        src_t = flows.column("src_addr").combine_chunks()
        dst_t = flows.column("dst_addr").combine_chunks()
        src, ok_s = parse_v4(src_t)
        dst, ok_d = parse_v4(dst_t)
        s_in = self._inside(src, ok_s, src_t)
        d_in = self._inside(dst, ok_d, dst_t)
        inbound = d_in & ~s_in
        outbound = s_in & ~d_in
        known = rate > 0
        ts = _epoch(flows.column("time_start"))
        te = np.maximum(_epoch(flows.column("time_end")), ts)
        packets = flows.column("packets").to_numpy(zero_copy_only=False).astype(np.float64)
        nbytes = flows.column("bytes").to_numpy(zero_copy_only=False).astype(np.float64)
        est_p = packets * rate
        est_b = nbytes * rate * 8
        proto = pc.fill_null(flows.column("protocol"), 0).to_numpy(zero_copy_only=False)
        flags = pc.fill_null(flows.column("tcp_flags"), 0).to_numpy(zero_copy_only=False)
        sport = pc.fill_null(flows.column("src_port"), 0).to_numpy(zero_copy_only=False)
        kind = np.full(n, 4, np.int64)  # other
        kind[proto == 1] = 3
        kind[proto == 17] = 2
        kind[(proto == 17) & np.isin(sport, self.p.reflection_ports)] = 1
        kind[(proto == 6) & ((flags & 0x02) > 0) & ((flags & 0x10) == 0)] = 0

        found: list[Attack] = []
        groups: list[tuple[str, str, npt.NDArray[np.int64], npt.NDArray[np.uint64]]] = []
        rows_in = np.flatnonzero(inbound & known)
        rows_out = np.flatnonzero(outbound & known)
        groups.append(("host", "inbound", rows_in, self._ids(dst, ok_d, dst_t)[rows_in]))
        groups.append(("host", "outbound", rows_out, self._ids(src, ok_s, src_t)[rows_out]))
        v4_in = rows_in[ok_d[rows_in]]
        groups.append(("prefix", "inbound", v4_in, self._prefix_ids(dst, ok_d, v4_in)))
        # an outside address flooded from inside: many subscribers' devices (a botnet), or
        # sources no customer holds (spoofed), each below any per-source threshold
        rows_remote = np.flatnonzero(~d_in & known)
        groups.append(("remote", "outbound", rows_remote, self._ids(dst, ok_d, dst_t)[rows_remote]))
        for scope, direction, rows, keys in groups:
            if not len(rows):
                continue
            found += self._group(
                scope, direction, rows, keys, ts, te, packets, est_p, est_b, kind, now
            )
        if len(ts):
            self.latest = max(self.latest, float(te.max()))
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
               keys: npt.NDArray[np.uint64], ts: npt.NDArray[np.float64],
               te: npt.NDArray[np.float64], sampled: npt.NDArray[np.float64],
               est_p: npt.NDArray[np.float64],
               est_b: npt.NDArray[np.float64], kind: npt.NDArray[np.int64],
               now: float) -> list[Attack]:  # fmt: skip
        # direction and scope share the key space (prefix ids are distinct; an inside address is
        # inbound or outbound per record): tag outbound keys so a host can be both
        if direction == "outbound":
            keys = keys | np.uint64(_REMOTE_TAG if scope == "remote" else _SOURCE_TAG)
        thr = self.thr[(scope, direction)]
        # the span a record's packets are spread over: with c sampled packets seen over d
        # seconds the flow most likely lasted d·(c+1)/(c−1) (the range of c uniform points);
        # one sampled packet says nothing of the span, so it gets sparse_spread_s
        c = np.maximum(sampled[rows], 1.0)
        d = np.maximum(te[rows] - ts[rows], 0.0)
        span_s = np.where(c >= 2, d * (c + 1) / np.maximum(c - 1, 1), self.p.sparse_spread_s)
        span_s = np.clip(span_s, self.p.min_duration_s, self.p.horizon_s)
        nb_all = np.maximum(np.ceil(span_s - 0.05), 1).astype(np.int64)  # float noise
        span_all = nb_all.astype(np.float64)
        pp_all = est_p[rows] / span_all
        pb_all = est_b[rows] / span_all
        u, inv = np.unique(keys, return_inverse=True)
        batch = np.zeros((len(u), 3))
        batch[:, 0] = np.bincount(inv, pp_all, len(u))
        batch[:, 1] = np.bincount(inv, pb_all, len(u))
        batch[:, 2] = np.bincount(inv, None, len(u))
        before = self.totals.lookup(u)
        self.totals.add(u, batch, now)
        # can any one second of this key reach a threshold? No second holds more than the sum
        # of the per-second rates of the records seen for it in the horizon
        total = before + batch
        cand = (total[:, 0] >= thr[0]) | (total[:, 1] >= thr[1]) | (total[:, 2] >= thr[2])
        if len(self.bins):
            cand |= np.isin(u, np.fromiter(self.bins.slot, np.uint64, len(self.bins)))
        if not cand.any():
            return []
        pick = np.flatnonzero(cand[inv])
        r = rows[pick]
        k = keys[pick]
        nb = nb_all[pick]
        mid = (ts[r] + te[r]) / 2
        s = np.round(mid - nb / 2).astype(np.int64)
        e = s + nb - 1
        per_p = pp_all[pick]
        per_b = pb_all[pick]
        per_n = sampled[r] / span_all[pick]
        # every candidate's records spread at once: difference arrays over one block of
        # (keys × seconds × columns), summed by bincount, then a running sum over the seconds
        uk, ki = np.unique(k, return_inverse=True)
        lo = max(int(s.min()), max(self.bins.base, int(e.max())) - self.p.horizon_s - 1)
        gone = e < lo  # wholly older than the horizon: adds nothing
        s = np.maximum(s, lo)
        e = np.maximum(e, s)
        hi = int(e.max())
        span = hi - lo + 2
        kd = kind[r]
        vals = np.column_stack([per_p, per_b, np.ones(len(r)), per_n]
                               + [np.where(kd == t, per_p, 0.0) for t in range(len(TYPES))])  # fmt: skip
        vals[gone] = 0.0
        cells = len(uk) * span
        start = ki * span + (s - lo)
        stop = ki * span + (e - lo + 1)
        diff = np.column_stack([np.bincount(start, vals[:, c], cells)
                                - np.bincount(stop, vals[:, c], cells)
                                for c in range(vals.shape[1])])  # fmt: skip
        block = np.cumsum(diff.reshape(len(uk), span, -1), axis=1)[:, :-1]
        slots = self.bins.slots(uk.tolist())
        self.bins.add(slots, lo, block)
        first, rows_all = self.bins.window(slots)
        peak = rows_all[:, :, :3].max(axis=1)
        may = np.flatnonzero((peak >= thr).any(axis=1))  # no window's mean exceeds the top second
        out: list[Attack] = []
        if not len(may):
            return out
        level = self._level(rows_all[may])
        hits: npt.NDArray[np.bool_] = np.any(level >= thr, axis=2)
        for i in np.flatnonzero(hits.any(axis=1)):
            out += self._attack(int(uk[may[i]]), scope, direction, first, rows_all[may[i]],
                                level[i], hits[i], thr, now)  # fmt: skip
        return out

    def _attack(self, key: int, scope: str, direction: str, origin: int,
                rows: npt.NDArray[np.float64], level: npt.NDArray[np.float64],
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
    us = pc.cast(arr, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return np.asarray(pc.fill_null(us, 0).to_numpy(zero_copy_only=False), np.float64) / 1e6


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    from mamori.schemas import dataset

    return pa.Table.from_pylist(rows, schema=dataset("findings").arrow)


def attack_findings(attacks: Sequence[Attack]) -> pa.Table:
    """Attacks as findings (kind ``ddos``; the method is the attack type, ``carpet`` for a
    prefix)."""
    rows = []
    for a in attacks:
        key = f"{a.target}|{a.direction}|{a.kind}|{int(a.start)}"
        rows.append(
            {
                "detected": datetime.fromtimestamp(a.detected, UTC),
                "finding_id": "ddos-" + hashlib.sha256(key.encode()).hexdigest()[:16],
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
    """The engine on a live stream: ``collector.observers.append(DdosStream(gov, actor))``.
    Governance authorises M13 to look at the stream's columns (one audit entry); each attack is
    stored as a finding the moment its batch is processed, then handed to ``on_attack``."""

    def __init__(
        self,
        gov: Governance,
        actor: str,
        params: DdosParams | None = None,
        *,
        write: bool = True,
        on_attack: Callable[[Attack], None] | None = None,
    ) -> None:
        from mamori.detect.flowview import internal_nets

        self.gov, self.actor, self.write, self.on_attack = gov, actor, write, on_attack
        self.columns = gov.open_stream_read(
            "M13", "flows", STREAM_COLUMNS, actor, justification="DDoS detection (stream)"
        )
        self.engine = DdosEngine(params or DdosParams(), internal_nets(gov)[0])
        self.attacks: list[Attack] = []

    def __call__(self, flows: pa.Table) -> None:
        found = self.engine.feed(flows.select(list(self.columns)))
        if not found:
            return
        self.attacks += found
        if self.write:
            self.gov.write("M13", "findings", attack_findings(found), self.actor,
                           justification="DDoS detection (stream)")  # fmt: skip
        for a in found:
            if self.on_attack is not None:
                self.on_attack(a)


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
            "attacks": len(attacks),
            "attack_sources": senders,
            "engine_seconds": round(engine.seconds, 3),
        }
        return DetectorRun(findings=table, summary=summary)
