"""IPFIX NAT event records (RFC 8158) as rows: what the flow decoder hands to
:mod:`.ipfix_nat`.

The decoder (:mod:`mamori.ingest.netflow.batch`) finds the records of templates with natEvent
(IE 230) and reads their fields as columns; this module decides what those fields mean as a NAT
event — which information elements, when the event happened — and makes one row of
:data:`NAT_EVENTS` per record, unchecked: :mod:`.ipfix_nat` validates the rows and pairs port-block
allocations with their de-allocations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mamori.ingest.netflow import fields as ie

__all__ = ["NAT_EVENTS", "NAT_FIELDS", "nat_event_rows"]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

NAT_EVENTS: Final = pa.schema(
    [
        pa.field("exporter", pa.string(), nullable=False),
        pa.field("domain", pa.uint32()),
        pa.field("ts", pa.int64(), nullable=False),  # ms; the export time where the record has none
        pa.field("event", pa.uint16(), nullable=False),  # natEvent
        pa.field("inside", pa.string()),  # sourceIPv4/IPv6Address; null: not in the template
        pa.field("outside", pa.string()),  # postNATSourceIPv4/IPv6Address
        pa.field("port_start", pa.int64()),  # portRangeStart .. NumPorts; null: not there
        pa.field("port_end", pa.int64()),
        pa.field("port_step", pa.int64()),
        pa.field("port_count", pa.int64()),
        pa.field("pool_id", pa.uint32()),
        pa.field("instance_id", pa.uint32()),
    ]
)
"""NAT event records (RFC 8158) as the decoder hands them over, one row per record, unchecked:
:mod:`.ipfix_nat` validates them and turns port blocks into allocations."""

#: the unsigned fields a NAT event row is made of (addresses are read by the decoder)
NAT_FIELDS: Final = (
    ie.NAT_EVENT,
    ie.OBSERVATION_TIME_MILLISECONDS,
    ie.OBSERVATION_TIME_SECONDS,
    ie.PORT_RANGE_START,
    ie.PORT_RANGE_END,
    ie.PORT_RANGE_STEP_SIZE,
    ie.PORT_RANGE_NUM_PORTS,
    ie.NAT_POOL_ID,
    ie.NAT_INSTANCE_ID,
)

_I64_MAX: Final = int(np.iinfo(np.int64).max)
# Observation times outside 1990..2100 are a broken clock or a missing field, not an event time.
_TS_MIN_MS: Final = 631_152_000_000
_TS_MAX_MS: Final = 4_102_444_800_000


def nat_event_rows(
    fields: Mapping[int, U64],
    *,
    exporter: pa.Array,
    domain: I64,
    export_ms: I64,
    inside: pa.Array | None,
    outside: pa.Array | None,
    counters: Counter[str],
) -> pa.Table:
    """The records of one NAT template → rows of :data:`NAT_EVENTS`.

    ``fields``: the template's :data:`NAT_FIELDS` by IE id, as unsigned integers (natEvent must be
    there); ``domain``: the observation domain per record (-1: none); ``export_ms``: the export
    time of each record's message, used where the record has no plausible observation time
    (counted as ``nat.time_from_export``); ``inside`` / ``outside``: the inside and public
    addresses as text, or None when the template has none."""
    n = len(export_ms)

    def col(fid: int) -> pa.Array:
        values = fields.get(fid)
        if values is None:
            return pa.nulls(n, pa.int64())
        return pa.array(np.minimum(values, np.uint64(_I64_MAX)).astype(np.int64))

    ts: I64 | None = None
    if ie.OBSERVATION_TIME_MILLISECONDS in fields:
        ts = fields[ie.OBSERVATION_TIME_MILLISECONDS].astype(np.int64)
    elif ie.OBSERVATION_TIME_SECONDS in fields:
        ts = fields[ie.OBSERVATION_TIME_SECONDS].astype(np.int64) * 1000
    bad = np.ones(n, dtype=np.bool_) if ts is None else ~((ts > _TS_MIN_MS) & (ts < _TS_MAX_MS))
    fallback = int(bad.sum())
    if fallback:
        counters["nat.time_from_export"] += fallback
        ts = export_ms if ts is None else np.where(bad, export_ms, ts)
    assert ts is not None
    counters["nat.records"] += n
    return pa.table(
        [
            exporter,
            pa.array(domain.astype(np.uint32), pa.uint32(), mask=domain < 0),
            pa.array(ts, pa.int64()),
            pa.array(np.minimum(fields[ie.NAT_EVENT], 0xFFFF), pa.uint16()),
            inside if inside is not None else pa.nulls(n, pa.string()),
            outside if outside is not None else pa.nulls(n, pa.string()),
            col(ie.PORT_RANGE_START),
            col(ie.PORT_RANGE_END),
            col(ie.PORT_RANGE_STEP_SIZE),
            col(ie.PORT_RANGE_NUM_PORTS),
            col(ie.NAT_POOL_ID).cast(pa.uint32(), safe=False),
            col(ie.NAT_INSTANCE_ID).cast(pa.uint32(), safe=False),
        ],
        schema=NAT_EVENTS,
    )
