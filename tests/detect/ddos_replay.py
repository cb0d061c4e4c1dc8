"""Attacks as a router would export them: per flow, one record per active-timeout interval
(packets sampled 1-in-N, time stamps of the first and last sampled packet), arriving when the
interval ends. Used by the DDoS tests and bench/ddos.py."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from mamori.detect.ddos import STREAM_COLUMNS

EPOCH = 1_790_000_000.0  # a fixed second (Sep 2026) so results do not depend on the clock


@dataclass(frozen=True)
class Flood:
    target: str  # the victim (inbound) or the inside source (outbound)
    pps: float
    start: float = 0.0  # seconds after EPOCH
    duration: float = 120.0
    sources: int = 100
    proto: int = 17
    sport: int = 40000
    flags: int = 0
    outbound: bool = False
    packet_bytes: int = 512
    spread_prefix: int | None = None  # carpet bombing: targets spread over a /24 of target
    botnet: bool = False  # target is outside; the sources are inside (10.0.200.0/22), each small


def export(
    floods: list[Flood], *, sampling: int, active_timeout: float, seed: int = 0,
    rate_known: bool = True,
) -> list[tuple[float, pa.Table]]:  # fmt: skip
    """(arrival second, records) batches, in arrival order."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[object]] = {c: [] for c in STREAM_COLUMNS}
    arrival: list[float] = []
    for f in floods:
        per_flow = f.pps / f.sources
        t = f.start
        while t < f.start + f.duration:
            w = min(active_timeout, f.start + f.duration - t)
            counts = rng.binomial(np.maximum(1, round(per_flow * w)), 1.0 / sampling, f.sources)
            for i, c in enumerate(counts.tolist()):
                if c == 0:
                    continue
                first = t + rng.uniform(0, w / max(c, 1))
                last = t + w - rng.uniform(0, w / max(c, 1)) if c > 1 else first
                other = f"198.18.{(i >> 8) & 255}.{i & 255}"
                target = f.target
                if f.spread_prefix is not None:
                    base = f.target.rsplit(".", 1)[0]
                    target = f"{base}.{i % 256}"
                src, dst = (target, other) if f.outbound else (other, target)
                if f.botnet:
                    src, dst = f"10.0.{200 + ((i >> 8) & 3)}.{i & 255}", target
                rows["time_start"].append(datetime.fromtimestamp(EPOCH + first, UTC))
                rows["time_end"].append(datetime.fromtimestamp(EPOCH + max(last, first), UTC))
                rows["src_addr"].append(src)
                rows["dst_addr"].append(dst)
                rows["src_port"].append(f.sport)
                rows["protocol"].append(f.proto)
                rows["tcp_flags"].append(f.flags)
                rows["packets"].append(c)
                rows["bytes"].append(c * f.packet_bytes)
                rows["sampling_rate"].append(sampling if rate_known else None)
                arrival.append(t + w)
            t += w
    ts = pa.timestamp("us", tz="UTC")
    table = pa.table(
        {
            "time_start": pa.array(rows["time_start"], ts),
            "time_end": pa.array(rows["time_end"], ts),
            "src_addr": pa.array(rows["src_addr"], pa.string()),
            "dst_addr": pa.array(rows["dst_addr"], pa.string()),
            "src_port": pa.array(rows["src_port"], pa.uint16()),
            "protocol": pa.array(rows["protocol"], pa.uint8()),
            "tcp_flags": pa.array(rows["tcp_flags"], pa.uint8()),
            "packets": pa.array(rows["packets"], pa.uint64()),
            "bytes": pa.array(rows["bytes"], pa.uint64()),
            "sampling_rate": pa.array(rows["sampling_rate"], pa.uint32()),
        }
    )
    order = np.argsort(np.asarray(arrival), kind="stable")
    table = table.take(pa.array(order))
    arr = np.asarray(arrival)[order]
    seconds = np.ceil(arr).astype(np.int64)
    out = []
    cuts = [0, *(np.flatnonzero(np.diff(seconds)) + 1).tolist(), len(arr)]
    for a, b in itertools.pairwise(cuts):
        if b > a:
            out.append((EPOCH + float(seconds[a]), table.slice(a, b - a)))
    return out
