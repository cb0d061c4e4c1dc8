"""Public entry point: decode batches of NetFlow v5 / v9 / IPFIX datagrams into flow records.

::

    decoder = FlowDecoder()
    result = decoder.decode([Datagram("192.0.2.1", payload, time.time()), ...])
    result.flows      # pyarrow.Table with exactly mamori.schemas.FLOWS.arrow
    result.counters   # Counter: packets.v9, records.ipfix, errors.truncated, ...

    # the fast path: payloads concatenated, with per-datagram arrays (no object per datagram)
    result = decoder.decode_packed(PackedDatagrams(data, offsets, lengths, exporter, exporters,
                                                   received))

:meth:`FlowDecoder.decode_packed` walks the whole batch with NumPy (:mod:`.vector`) and gives the
same rows (possibly in another order), counters and state as the per-datagram Python walk,
which stays available as :meth:`FlowDecoder.decode_reference`; :meth:`FlowDecoder.decode` packs
its datagrams and calls ``decode_packed``.

The version is told apart by content (the first two bytes); sFlow v5 datagrams are counted as
handed to :func:`mamori.ingest.sflow.decode_sflow` (counters prefixed ``sflow.``) and anything else counted as ``errors.unknown_version``. Decoding never
raises on bad input: every problem is counted by kind and logged at a limited rate.

The ``sampling_rate`` of a row is what the exporter reported, nothing else: a rate carried in the
record itself, else the rate of the sampler / selector id the record names (from options records),
else the exporter's rate for the observation domain (v5 header, or an options record without
sampler id), else null (0 counts as none). Operator overrides and defaults are applied afterwards,
in one place for every protocol, by :class:`mamori.ingest.sampling.SamplingPolicy` (which also
counts the rows left without a rate).

Records of one template are decoded together: see :mod:`mamori.ingest.netflow.batch`.
Output rows are grouped by template, not in arrival order.

Counters (all per :meth:`FlowDecoder.decode` / ``decode_packed`` call; absent means 0):

* ``packets.v5|v9|ipfix|sflow``: datagrams by version; ``records.sflow``: sFlow samples decoded.
* ``records.v5|v9|ipfix``: data records decoded; ``records.out``: rows in the result;
  ``records.options``: options records read (sampling, system init time);
  ``records.pending_released``: records decoded from data held until their template came;
  ``records.varlen_walk``: records walked one by one (IPFIX variable-length fields);
  ``records.time_fallback``: rows whose times could not be computed and are the export time;
  ``records.no_address``: records of a template without addresses (not stored).
* ``nat.records``: IPFIX NAT event records (RFC 8158: templates with natEvent), handed over as
  :attr:`DecodeResult.nat`, never as flows; ``nat.time_from_export``: of those, records without
  a usable observationTime (the export time is used); ``nat.errors.bad_field``: records of a
  template whose natEvent cannot be read (not kept).
* ``templates.new|refreshed|replaced|withdrawn|expired``; ``templates.unknown``: data sets
  without a template (held); ``templates.evicted``: the least recently announced, dropped for a
  new one past the per-exporter / global bound; ``templates.zero_fields|zero_length|bad_id``:
  unusable templates.
* ``records.refused.export_clock|before_export|after_export``: flow records refused by the
  decoder's :class:`TimeBounds` (set by the collector): the packet's export time far from its
  receive time, or the record's times far before / after its export time.
* ``sets.pending``: data sets held; ``sets.pending_dropped`` (bound) / ``sets.pending_expired``
  (age): held sets given up. ``sampling.learnt``: sampling rates learnt from options records.
* ``errors.unknown_version|truncated|trailing|bad_length|set_length|bad_template|reserved_set|
  bad_count|truncated_record``: malformed input, by kind; ``errors.internal``: a decoder bug
  (logged with its traceback, rate-limited); the rest of the batch is still decoded.
"""

from __future__ import annotations

import collections
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mamori.ingest.netflow.batch import ADDR4, NAT_EVENTS, Batch, TimeBounds
from mamori.ingest.netflow.ipfix import parse_ipfix
from mamori.ingest.netflow.templates import (
    MAX_TEMPLATES,
    MAX_TEMPLATES_PER_EXPORTER,
    ParsedSets,
    PendingSets,
    TemplateRegistry,
)
from mamori.ingest.netflow.v5 import parse_v5
from mamori.ingest.netflow.v9 import parse_v9
from mamori.ingest.netflow.vector import walk
from mamori.ingest.ratelog import RateLimitedLog
from mamori.ingest.sflow import decode_sflow

__all__ = ["Datagram", "DecodeResult", "FlowDecoder", "PackedDatagrams", "TimeBounds"]

log = logging.getLogger("mamori.ingest.netflow")


@dataclass(frozen=True)
class Datagram:
    exporter: str  # exporter address (text)
    payload: bytes  # UDP payload
    received: float  # unix seconds when received


@dataclass(frozen=True)
class PackedDatagrams:
    """A batch of datagrams without a Python object per datagram (what the receiver hands
    over): payloads concatenated, with per-datagram arrays."""

    data: bytes  # UDP payloads concatenated
    offsets: npt.NDArray[np.int64]  # start of each payload in data
    lengths: npt.NDArray[np.int64]  # length of each payload
    exporter: npt.NDArray[np.int32]  # index into exporters
    exporters: Sequence[str]  # exporter address text
    received: npt.NDArray[np.float64]  # unix seconds per datagram

    @classmethod
    def pack(cls, datagrams: Sequence[Datagram]) -> PackedDatagrams:
        lengths = np.fromiter((len(d.payload) for d in datagrams), np.int64, len(datagrams))
        index: dict[str, int] = {}
        exporter = np.fromiter(
            (index.setdefault(d.exporter, len(index)) for d in datagrams),
            np.int32,
            len(datagrams),
        )
        return cls(
            b"".join(d.payload for d in datagrams),
            np.cumsum(lengths) - lengths,
            lengths,
            exporter,
            list(index),
            np.fromiter((d.received for d in datagrams), np.float64, len(datagrams)),
        )


@dataclass
class DecodeResult:
    flows: pa.Table  # exactly mamori.schemas.FLOWS.arrow
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    # IPFIX NAT event records (RFC 8158), exactly batch.NAT_EVENTS: not flows
    nat: pa.Table = field(default_factory=NAT_EVENTS.empty_table)
    # row for row with flows: the IPv4 addresses as the decoder read them (batch.ADDR4; null
    # where IPv6 or sFlow), for a stream observer; never stored. None: not known
    addr4: pa.Table | None = None


class FlowDecoder:
    """Stateful decoder: keeps templates, sampling rates and held data sets between calls."""

    def __init__(
        self,
        template_timeout_s: float = 1800.0,
        pending_limit: int = 100_000,
        *,
        time_bounds: TimeBounds | None = None,
        max_templates_per_exporter: int = MAX_TEMPLATES_PER_EXPORTER,
        max_templates: int = MAX_TEMPLATES,
    ) -> None:
        """``time_bounds``: refuse flow records whose times are implausible (see
        :class:`TimeBounds`); None keeps every record (a replayed capture of any age, tests)."""
        self.registry = TemplateRegistry(
            template_timeout_s, max_templates_per_exporter, max_templates
        )
        self.pending = PendingSets(pending_limit, template_timeout_s)
        self.time_bounds = time_bounds
        self._problems = RateLimitedLog(log)
        self._parsed_sets = ParsedSets()
        # How decode_packed took its datagrams and sets (not part of any result): see
        # mamori.ingest.netflow.vector.
        self.path_stats: collections.Counter[str] = collections.Counter()

    def decode(self, datagrams: Sequence[Datagram]) -> DecodeResult:
        """Decode a batch of datagrams (packs them and calls :meth:`decode_packed`)."""
        return self.decode_packed(PackedDatagrams.pack(datagrams))

    def decode_packed(self, p: PackedDatagrams) -> DecodeResult:
        """Decode a batch of packed datagrams: the whole batch is walked with NumPy (see
        :mod:`mamori.ingest.netflow.vector`); results and counters are those of
        :meth:`decode_reference` on the same datagrams (rows may come in another order)."""
        counters: collections.Counter[str] = collections.Counter()
        batch = self._batch(counters)
        sflow: list[tuple[str, bytes, float]] = []
        offsets = np.asarray(p.offsets, dtype=np.int64)
        lengths = np.asarray(p.lengths, dtype=np.int64)
        exporter = np.asarray(p.exporter, dtype=np.int32)
        received = np.asarray(p.received, dtype=np.float64)
        n = len(offsets)
        if not (len(lengths) == len(exporter) == len(received) == n):
            raise ValueError("PackedDatagrams: arrays of different lengths")
        if n and (
            int(offsets.min()) < 0
            or int(lengths.min()) < 0
            or int((offsets + lengths).max()) > len(p.data)
            or int(exporter.min()) < 0
            or int(exporter.max()) >= len(p.exporters)
        ):
            raise ValueError("PackedDatagrams: offsets, lengths or exporters out of range")

        def slow(i: int) -> None:
            start = int(offsets[i])
            payload = p.data[start : start + int(lengths[i])]
            self._one(payload, p.exporters[int(exporter[i])], float(received[i]), batch, sflow)

        stats = self.path_stats
        try:
            vectorised = walk(
                p.data, offsets, lengths, exporter, p.exporters, received, batch, slow, stats
            )
        except Exception:  # a decoder bug: count it, keep what was decoded
            vectorised = True
            counters["errors.internal"] += 1
            self._problems.warn(
                "errors.internal", "netflow: internal error walking a batch", exc_info=True
            )
        if not vectorised:
            stats["datagrams.batch_fallback"] += n
            for i in range(n):
                slow(i)
        return self._finish(batch, sflow, counters)

    def decode_reference(self, datagrams: Sequence[Datagram]) -> DecodeResult:
        """The per-datagram path (a Python walk of every datagram): the reference for
        :meth:`decode_packed` in tests."""
        counters: collections.Counter[str] = collections.Counter()
        batch = self._batch(counters)
        sflow: list[tuple[str, bytes, float]] = []
        for dg in datagrams:
            self._one(dg.payload, dg.exporter, dg.received, batch, sflow)
        return self._finish(batch, sflow, counters)

    def _batch(self, counters: collections.Counter[str]) -> Batch:
        return Batch(
            self.registry,
            self.pending,
            counters,
            self._problems,
            self._parsed_sets,
            self.time_bounds,
        )

    def _one(
        self,
        payload: bytes,
        exporter: str,
        received: float,
        batch: Batch,
        sflow: list[tuple[str, bytes, float]],
    ) -> None:
        version = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else -1
        try:
            if version == 9:
                parse_v9(payload, exporter, received, batch)
            elif version == 10:
                parse_ipfix(payload, exporter, received, batch)
            elif version == 5:
                parse_v5(payload, exporter, received, batch)
            elif version == 0 and payload[:4] == b"\x00\x00\x00\x05":
                sflow.append((exporter, payload, received))
            else:
                batch.problem("errors.unknown_version", exporter, f"version {version}")
        except Exception:  # a decoder bug must not lose the rest of the batch
            batch.internal_error(exporter)

    def _finish(
        self,
        batch: Batch,
        sflow: list[tuple[str, bytes, float]],
        counters: collections.Counter[str],
    ) -> DecodeResult:
        nat = NAT_EVENTS.empty_table()
        addr4: pa.Table | None = None
        try:
            flows = batch.finish()
            addr4 = batch.finish_addr4()
            nat = batch.finish_nat()
        except Exception:
            counters["errors.internal"] += 1
            self._problems.warn(
                "errors.internal", "netflow: internal error decoding a batch", exc_info=True
            )
            from mamori.schemas import FLOWS

            flows = FLOWS.arrow.empty_table()
            addr4 = None
        if sflow:
            extra = self._sflow(sflow, counters)
            flows = pa.concat_tables([flows, extra])
            if addr4 is not None:
                addr4 = pa.concat_tables([addr4, pa.table(
                    {n: pa.nulls(extra.num_rows, pa.uint32()) for n in ADDR4.names},
                    schema=ADDR4)])  # fmt: skip
        counters["records.out"] += flows.num_rows
        return DecodeResult(flows, counters, nat, addr4)

    def _sflow(self, datagrams: list[tuple[str, bytes, float]], counters: Counter[str]) -> pa.Table:
        """Decode sFlow v5 datagrams; counters are prefixed ``sflow.``."""
        table, sc = decode_sflow(datagrams)
        counters["packets.sflow"] += len(datagrams)
        counters["records.sflow"] += table.num_rows
        counters.update({f"sflow.{k}": v for k, v in sc.items()})
        return table

    def state(self) -> dict[str, Any]:
        """Templates, sampling rates and system-init times, as JSON-serialisable data."""
        return self.registry.state()

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load what :meth:`state` returned (e.g. after a restart)."""
        self.registry.restore(state, collections.Counter())
