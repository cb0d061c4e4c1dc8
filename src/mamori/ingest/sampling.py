"""The one place where a flow record's sampling rate is decided.

The decoders (NetFlow v5 / v9 / IPFIX in :mod:`mamori.ingest.netflow`, sFlow in
:mod:`mamori.ingest.sflow`) only report what the exporter said: the v5 header's interval, the
rate a v9 / IPFIX record carries or that options records give its sampler / selector id or its
observation domain, the sFlow flow sample's ``sampling_rate``; null where the exporter said
nothing usable. :meth:`SamplingPolicy.apply` then settles the ``sampling_rate`` column of the
decoded batch, whatever the protocol (UDP and pcap replay alike), with one rule:

1. an operator **override** for the exporter (``--sampling EXPORTER=RATE``,
   ``[collector.sampling_overrides]``) wins over anything the exporter says: the operator sets one
   because the router misreports (or sends nothing);
2. otherwise the **exporter's** rate; 0 means "unknown", as it does in every protocol;
3. otherwise a configured **default** for the exporter (``[collector.sampling_defaults]``), used
   only where the exporter said nothing;
4. otherwise **null**: unknown, never 1. Records are stored unscaled and consumers must not treat
   a null rate as unsampled.

Counters (added to the collector's, absent means 0): ``records.sampling_unknown`` (rows stored
with a null rate, after the rule), ``records.sampling_overridden`` (rows whose rate is an
override), ``records.sampling_override_differs`` (of those, rows whose exporter reported another,
non-zero rate: the override may be stale), ``records.sampling_defaulted`` (rows whose rate is a
configured default).

The work is a few Arrow compute calls per record batch, no Python per record. The decoder gives
one record batch per template, so usually all rows of a batch come from one exporter (unless
several send identical templates): such a batch is recognised from its string buffers and settled
with one dictionary lookup; a mixed one is looked up row by row in Arrow (a hash of the text). With nothing configured only the nulls are
counted. EXPORTER keys are matched against the stored ``exporter`` text (canonical IP form): the
UDP source for NetFlow / IPFIX, the agent address for sFlow.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.config import CollectorConfig

__all__ = ["SamplingPolicy"]

_RATE: Final = "sampling_rate"
_EXPORTER: Final = "exporter"
_U32: Final = pa.uint32()


@dataclass(frozen=True)
class SamplingPolicy:
    """Per-exporter overrides and defaults (exporter address text → 1-in-N rate, N ≥ 1)."""

    overrides: Mapping[str, int] = field(default_factory=dict)
    defaults: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # --sampling values reach here without the config validator: check and canonicalise here
        # too, so that "2001:DB8::1" matches the exporter text the collector stores.
        for name in ("overrides", "defaults"):
            table: dict[str, int] = {}
            for exporter, rate in getattr(self, name).items():
                if not 1 <= rate <= 0xFFFFFFFF:
                    raise ValueError(f"sampling rate {rate} for {exporter}: must be 1 to 2**32-1")
                table[_canonical(exporter)] = rate
            object.__setattr__(self, name, table)

    @classmethod
    def from_config(cls, config: CollectorConfig) -> SamplingPolicy:
        return cls(dict(config.sampling_overrides), dict(config.sampling_defaults))

    def apply(self, flows: pa.Table, counters: Counter[str]) -> pa.Table:
        """``flows`` with its ``sampling_rate`` column settled by the rule; counts into
        ``counters``. Other columns are untouched."""
        if not flows.num_rows:
            return flows
        reported = flows.column(_RATE)
        rate = reported
        if _has_zero(reported):  # decoders give null already; the rule must not rely on it
            rate = pc.if_else(pc.equal(rate, pa.scalar(0, _U32)), pa.scalar(None, _U32), rate)
        if self.overrides or self.defaults:
            pairs = pa.table({_EXPORTER: flows.column(_EXPORTER), _RATE: rate})
            settled = [self._settle(b.column(0), b.column(1), counters) for b in pairs.to_batches()]
            rate = pa.chunked_array(settled, _U32)
        if rate.null_count:
            counters["records.sampling_unknown"] += rate.null_count
        if rate is reported:
            return flows
        return flows.set_column(
            flows.schema.get_field_index(_RATE), flows.schema.field(_RATE), rate
        )

    def _settle(self, exporter: pa.Array, rate: pa.Array, counters: Counter[str]) -> pa.Array:
        """The rule on one record batch (``rate``: the exporter's, 0 already made null)."""
        n = len(rate)
        one = _one_value(exporter)
        if one is not None:
            # One exporter (the usual batch): no per-row lookup at all.
            over = self.overrides.get(one)
            if over is not None:
                same = pc.sum(pc.equal(rate, pa.scalar(over, _U32))).as_py() or 0
                _count(counters, overridden=n, differs=n - rate.null_count - same)
                return pa.array(np.full(n, over, np.uint32), _U32)
            default = self.defaults.get(one)
            if default is not None and rate.null_count:
                _count(counters, defaulted=rate.null_count)
                return rate.fill_null(default)
            return rate
        if self.overrides:
            over = _lookup(exporter, self.overrides)
            if over.null_count < n:
                differs = pc.sum(pc.and_(pc.is_valid(over), pc.not_equal(rate, over))).as_py() or 0
                _count(counters, overridden=n - over.null_count, differs=differs)
                rate = pc.coalesce(over, rate)
        if self.defaults and rate.null_count:
            default = _lookup(exporter, self.defaults)
            used = pc.sum(pc.and_(pc.is_null(rate), pc.is_valid(default))).as_py()
            if used:
                _count(counters, defaulted=used)
                rate = pc.coalesce(rate, default)
        return rate


def _count(counters: Counter[str], **rows: int) -> None:
    names = {"overridden": "overridden", "differs": "override_differs", "defaulted": "defaulted"}
    for key, n in rows.items():
        if n:
            counters[f"records.sampling_{names[key]}"] += n


def _canonical(exporter: str) -> str:
    try:
        return ipaddress.ip_address(exporter).compressed
    except ValueError:
        return exporter


def _has_zero(rate: pa.ChunkedArray) -> bool:
    low = pc.min(rate).as_py()
    return low is not None and low == 0


def _lookup(exporter: pa.Array, table: Mapping[str, int]) -> pa.Array:
    """Per row, the configured rate of the row's exporter (null: none configured)."""
    keys = pa.array(list(table), pa.string())
    rates = pa.array(list(table.values()), _U32)
    return rates.take(pc.index_in(exporter, value_set=keys))


def _one_value(strings: pa.Array) -> str | None:
    """The value of a string array whose rows are all the same non-null string, else None.

    Read from the Arrow buffers (lengths, then one comparison of the bytes): a few times cheaper
    than hashing every row, which is what a lookup costs."""
    n = len(strings)
    if not n or strings.null_count or strings.type != pa.string():
        return None
    _, offsets_buf, data = strings.buffers()
    offsets = np.frombuffer(offsets_buf, np.int32, count=n + 1, offset=strings.offset * 4)
    start, size = int(offsets[0]), int(offsets[1] - offsets[0])
    if not size or int(offsets[-1]) - start != size * n or (np.diff(offsets) != size).any():
        return None
    first = data[start : start + size].to_pybytes()
    if data[start : start + size * n].to_pybytes() != first * n:
        return None
    return str(first, "utf-8")
