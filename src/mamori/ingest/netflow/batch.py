"""Collect the data sets of a batch of datagrams, then decode them template by template.

The per-datagram parsers (:mod:`.v5`, :mod:`.v9`, :mod:`.ipfix`) walk headers and set headers only;
they hand every data set to :meth:`Batch.add_data`. The vectorised walk (:mod:`.vector`) hands the
data sets of a whole batch at once, per template, to :meth:`Batch.add_bulk` (records already
gathered, per-set context as arrays). Data sets of the same template are gathered
into one :class:`_Group` (identical template sets, from any exporter, share one :class:`Template`
object, so they share a group too), and :meth:`Batch.finish` turns each group
into Arrow columns at once: the set bodies are joined, viewed through a NumPy structured dtype built
from the template (big-endian fields), and every column is computed with array operations. No Python
object is made per record, except for IPFIX variable-length fields, whose records must be walked one
by one (counted as ``records.varlen_walk``), and options records (sampling), which are rare.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mamori.ingest.allocations.nat_events import NAT_EVENTS, NAT_FIELDS, nat_event_rows
from mamori.ingest.netflow import fields as ie
from mamori.ingest.netflow.templates import (
    FieldSpec,
    HeldSet,
    ParsedSets,
    PendingSets,
    SamplingState,
    Template,
    TemplateKey,
    TemplateRegistry,
)
from mamori.ingest.ratelog import RateLimitedLog
from mamori.schemas import FLOWS

__all__ = ["NAT_EVENTS", "Batch", "Bulk", "TimeBounds"]

log = logging.getLogger("mamori.ingest.netflow")

U64 = npt.NDArray[np.uint64]
Uint = npt.NDArray[np.unsignedinteger[Any]]  # any width
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_SCHEMA: Final = FLOWS.arrow
# The addresses as the decoder read them, before they became text (null: IPv6), row for row
# with the flows: what the collector hands a stream observer (``collect --detect-ddos``) so it
# need not parse the text back. Never stored.
ADDR4: Final = pa.schema([("src_addr_v4", pa.uint32()), ("dst_addr_v4", pa.uint32())])
_WITH_ADDR4: Final = pa.schema([*_SCHEMA, *ADDR4])
_TS: Final = pa.timestamp("ms", tz="UTC")
_MASK32: Final = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class TimeBounds:
    """How far a flow record's times may lie from its exporter's clock (the export time of its
    packet), and that clock from ours (the receive time), before the record is refused as
    garbage: random bytes and broken clocks give times from 1970 to 2106, which would be stored
    in thousands of hour partitions. All in milliseconds."""

    before_export_ms: int = 86_400_000  # start or end earlier than export time - this
    after_export_ms: int = 300_000  # start or end later than export time + this
    export_skew_ms: int = 86_400_000  # |export time - receive time| larger than this

    @classmethod
    def from_seconds(cls, before: float, after: float, skew: float) -> TimeBounds:
        return cls(round(before * 1000), round(after * 1000), round(skew * 1000))


@dataclass
class _Group:
    """Data sets sharing one template, with per-set context in parallel lists."""

    template: Template
    bodies: list[bytes | memoryview] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    exporter: list[int] = field(default_factory=list)
    domain: list[int] = field(default_factory=list)  # -1: none (v5)
    export_ms: list[int] = field(default_factory=list)
    uptime_ms: list[int] = field(default_factory=list)  # -1: unknown
    rate: list[int] = field(default_factory=list)  # 0: unknown
    received_ms: list[int] = field(default_factory=list)
    snapshot: list[int] = field(default_factory=list)
    bulk: list[Bulk] = field(default_factory=list)

    def columns(self) -> tuple[bytes | npt.NDArray[np.uint8], dict[str, npt.NDArray[Any]]]:
        """Record bytes and per-set context arrays of the sets added one by one and in bulk."""
        names = ("counts", "exporter", "domain", "export_ms", "uptime_ms", "rate", "received_ms")
        types: tuple[Any, ...] = (
            np.int64,
            np.int32,
            np.int64,
            np.int64,
            np.int64,
            np.uint64,
            np.int64,
        )
        cols: dict[str, npt.NDArray[Any]] = {}
        for name, dtype in (*zip(names, types, strict=True), ("snapshot", np.int64)):
            parts = [np.asarray(getattr(self, name), dtype=dtype)]
            parts += [np.asarray(getattr(b, name), dtype=dtype) for b in self.bulk]
            cols[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if not self.bulk:
            return b"".join(self.bodies), cols
        if not self.bodies and len(self.bulk) == 1:
            return self.bulk[0].records, cols  # no copy
        return b"".join([*self.bodies, *(b.records.tobytes() for b in self.bulk)]), cols


@dataclass
class Bulk:
    """Data sets of one template decoded by the vectorised datagram walk: their records joined,
    and the per-set context as arrays (see :class:`_Group`)."""

    records: npt.NDArray[np.uint8]  # (records, record length), C-contiguous
    counts: npt.NDArray[np.int64]
    exporter: npt.NDArray[np.int32]  # Batch exporter index
    domain: npt.NDArray[np.int64]
    export_ms: npt.NDArray[np.int64]
    uptime_ms: npt.NDArray[np.int64]
    rate: npt.NDArray[np.uint64]
    received_ms: npt.NDArray[np.int64]
    snapshot: npt.NDArray[np.int64]  # Batch snapshot index


class Batch:
    """State of one :meth:`FlowDecoder.decode` call: groups of data sets, counters, and the
    long-lived registry / pending store it updates."""

    def __init__(
        self,
        registry: TemplateRegistry,
        pending: PendingSets,
        counters: Counter[str],
        problems: RateLimitedLog,
        parsed_sets: ParsedSets | None = None,
        time_bounds: TimeBounds | None = None,
    ) -> None:
        self.parsed_sets = parsed_sets if parsed_sets is not None else ParsedSets()
        self.time_bounds = time_bounds
        self.registry = registry
        self.pending = pending
        self.counters = counters
        self.problems = problems
        self._groups: dict[int, _Group] = {}  # by id() of a Template (kept alive by its group)
        self._exporters: list[str] = []
        self._exporter_index: dict[str, int] = {}
        self._snapshots: list[SamplingState] = []
        self._snapshot_index: dict[int, int] = {}
        self._packed: dict[Template, Template] = {}
        self._addr4: pa.Table = ADDR4.empty_table()
        self._nat: list[pa.Table] = []

    # ----------------------------------------------------------------------------- collection
    def problem(self, kind: str, exporter: str, detail: str = "") -> None:
        self.counters[kind] += 1
        self.problems.warn(kind, "netflow: %s from exporter %s %s", kind, exporter, detail)

    def internal_error(self, exporter: str) -> None:
        """A decoder bug (called from an ``except`` block): counted and logged, never raised."""
        self.counters["errors.internal"] += 1
        self.problems.warn(
            "errors.internal",
            "netflow: internal error decoding a datagram from %s",
            exporter,
            exc_info=True,
        )

    def add_template(self, exporter: str, domain: int, template: Template, received: float) -> None:
        key = (exporter, template.version, domain, template.template_id)
        if not template.fields or template.record_length == 0:
            self.problem("templates.zero_length", exporter, f"template {template.template_id}")
            return
        evicted = self.counters["templates.evicted"]
        self.registry.put(key, template, received, self.counters)
        if self.counters["templates.evicted"] > evicted:
            self.problems.warn(
                "templates.evicted",
                "netflow: template bound reached (exporter %s): least recently announced evicted",
                exporter,
            )
        for held in self.pending.release(key):
            n = self.add_data(
                exporter,
                domain,
                held.key[1],
                held.key[3],
                held.body,
                held.export_ms,
                held.uptime_ms,
                held.received,
            )
            self.counters["records.pending_released"] += n

    def add_data(
        self,
        exporter: str,
        domain: int,
        version: int,
        template_id: int,
        body: bytes | memoryview,
        export_ms: int,
        uptime_ms: int,
        received: float,
    ) -> int:
        """Queue one data set (v9 / IPFIX). Returns the number of records queued now."""
        key: TemplateKey = (exporter, version, domain, template_id)
        template = self.registry.get(key, received, self.counters)
        if template is None:
            self.counters["templates.unknown"] += 1
            self.pending.hold(
                HeldSet(key, bytes(body), export_ms, uptime_ms, received), self.counters
            )
            return 0
        dkey = (exporter, version, domain)
        if template.options:
            return self._options_records(template, body, dkey)
        if version == 10 and uptime_ms < 0:
            init = self.registry.init_ms(dkey)
            if init is not None:
                uptime_ms = max(export_ms - init, 0)
        sampling = self.registry.sampling(dkey)
        return self.add_fixed(
            template,
            body,
            exporter,
            domain,
            export_ms,
            uptime_ms,
            sampling.default or 0,
            sampling,
            received,
        )

    def exporter_index(self, exporter: str) -> int:
        idx = self._exporter_index.get(exporter)
        if idx is None:
            idx = self._exporter_index[exporter] = len(self._exporters)
            self._exporters.append(exporter)
        return idx

    def snapshot_index(self, sampling: SamplingState) -> int:
        sidx = self._snapshot_index.get(id(sampling))
        if sidx is None:
            sidx = self._snapshot_index[id(sampling)] = len(self._snapshots)
            self._snapshots.append(sampling)
        return sidx

    def add_bulk(self, template: Template, bulk: Bulk) -> None:
        """Queue data sets of one fixed-length data template decoded in bulk."""
        n = len(bulk.records)
        if n == 0:
            return
        group = self._groups.get(id(template))
        if group is None:
            group = self._groups[id(template)] = _Group(template)
        group.bulk.append(bulk)
        self.counters[f"records.{_VERSION_NAMES.get(template.version, 'other')}"] += n

    def add_fixed(
        self,
        template: Template,
        body: bytes | memoryview,
        exporter: str,
        domain: int,
        export_ms: int,
        uptime_ms: int,
        rate: int,
        sampling: SamplingState,
        received: float,
    ) -> int:
        if template.variable:
            template, body, n = self._pack(template, body)
        else:
            n = len(body) // template.record_length
            body = body[: n * template.record_length]
        if n == 0:
            return 0
        group = self._groups.get(id(template))
        if group is None:
            group = self._groups[id(template)] = _Group(template)
        idx = self.exporter_index(exporter)
        sidx = self.snapshot_index(sampling)
        group.bodies.append(body)
        group.counts.append(n)
        group.exporter.append(idx)
        group.domain.append(domain)
        group.export_ms.append(export_ms)
        group.uptime_ms.append(uptime_ms)
        group.rate.append(rate)
        group.received_ms.append(int(received * 1000))
        group.snapshot.append(sidx)
        self.counters[f"records.{_VERSION_NAMES.get(template.version, 'other')}"] += n
        return n

    def _pack(self, template: Template, body: bytes | memoryview) -> tuple[Template, bytes, int]:
        """Walk records with variable-length fields; keep the fixed-length fields only."""
        packed = self._packed.get(template)
        if packed is None:
            packed = Template(
                template.version,
                template.template_id,
                tuple(f for f in template.fields if not f.variable),
                template.options,
            )
            self._packed[template] = packed
        out: list[bytes | memoryview] = []
        n = 0
        for record in _walk(template, body, self.counters):
            out.extend(v for f, v in record if not f.variable)
            n += 1
        self.counters["records.varlen_walk"] += n
        return packed, b"".join(out), n

    def _options_records(
        self, template: Template, body: bytes | memoryview, dkey: tuple[str, int, int]
    ) -> int:
        n = 0
        for record in _walk(template, body, self.counters):
            n += 1
            values: dict[int, int] = {}
            for f, raw in record:
                if (
                    f.enterprise == 0
                    and f.id in ie.OPTION_FIELDS
                    and not (f.scope and template.version == 9)
                    and 1 <= len(raw) <= 8
                    and f.id not in values
                ):
                    values[f.id] = int.from_bytes(raw, "big")
            self._apply_options(dkey, values)
        self.counters["records.options"] += n
        return 0

    def _apply_options(self, dkey: tuple[str, int, int], v: dict[int, int]) -> None:
        init = v.get(ie.SYSTEM_INIT_TIME_MILLISECONDS)
        if init:
            self.registry.set_init_ms(dkey, init)
        rate = 0
        size, population = v.get(ie.SAMPLING_SIZE, 0), v.get(ie.SAMPLING_POPULATION, 0)
        interval, space = v.get(ie.SAMPLING_PACKET_INTERVAL, 0), v.get(ie.SAMPLING_PACKET_SPACE)
        if size and population:
            rate = population // size
        elif v.get(ie.SAMPLING_INTERVAL):
            rate = v[ie.SAMPLING_INTERVAL]
        elif v.get(ie.SAMPLER_RANDOM_INTERVAL):
            rate = v[ie.SAMPLER_RANDOM_INTERVAL]
        elif interval:
            # RFC 5476: interval packets selected, then space skipped. Without a space (as Cisco
            # sends it) the interval is the 1-in-N rate.
            rate = (interval + space) // interval if space is not None else interval
        if rate <= 0 or rate > 0xFFFFFFFF:
            return
        sampler = v.get(ie.SAMPLER_ID, v.get(ie.SELECTOR_ID))
        self.registry.set_sampling(dkey, sampler, rate)
        self.counters["sampling.learnt"] += 1

    # ----------------------------------------------------------------------------- decoding
    def finish_nat(self) -> pa.Table:
        """The NAT event records decoded by :meth:`finish` (call it after)."""
        nat, self._nat = self._nat, []
        if not nat:
            return NAT_EVENTS.empty_table()
        return pa.concat_tables(nat)

    def finish(self) -> pa.Table:
        """The flows decoded (exactly :data:`FLOWS`); :meth:`finish_addr4` has their IPv4
        addresses as integers."""
        batches = []
        for group in self._groups.values():
            rb = self._decode(group)
            if rb is not None and rb.num_rows:
                batches.append(rb)
        self._groups.clear()
        if not batches:
            self._addr4 = ADDR4.empty_table()
            return _SCHEMA.empty_table()
        table = pa.Table.from_batches(batches, schema=_WITH_ADDR4)
        self._addr4 = table.select(ADDR4.names)
        return table.select(_SCHEMA.names)

    def finish_addr4(self) -> pa.Table:
        """Row for row with what :meth:`finish` returned: the addresses as integers
        (:data:`ADDR4`)."""
        return self._addr4

    def _decode(self, g: _Group) -> pa.RecordBatch | None:
        t = g.template
        buf, cols = g.columns()
        counts = cols["counts"]
        n = int(counts.sum())
        rec = np.frombuffer(buf, dtype=t.dtype, count=n)
        offs = t.offsets
        if t.nat:
            self._nat_records(g, rec, cols, n)
            return None

        def rep(name: str) -> Any:
            return np.repeat(cols[name], counts)

        def col(fid: int) -> Uint | None:
            if fid not in offs:
                return None
            return _native(rec[f"f{fid}"])

        def first(*fids: int) -> Uint | None:
            for fid in fids:
                c = col(fid)
                if c is not None:
                    return c
            return None

        # Records without addresses (e.g. MPLS- or L2-only templates) cannot be stored.
        if not (
            _has(offs, ie.SOURCE_IPV4_ADDRESS, ie.SOURCE_IPV6_ADDRESS)
            and _has(offs, ie.DESTINATION_IPV4_ADDRESS, ie.DESTINATION_IPV6_ADDRESS)
        ):
            self.counters["records.no_address"] += n
            self.problems.warn(
                "records.no_address", "netflow: template %d has no addresses", t.template_id
            )
            return None

        export = rep("export_ms")
        uptime = rep("uptime_ms")
        start = _time(rec, offs, export, uptime, start=True)
        end = _time(rec, offs, export, uptime, start=False)
        if start is None and end is None:
            start = end = (export, np.ones(n, dtype=np.bool_))
        elif start is None:
            start = end
        elif end is None:
            end = start
        assert start is not None and end is not None
        s_ms, s_bad = start
        e_ms, e_bad = end
        bad = s_bad | e_bad
        fallback = int(bad.sum())
        if fallback:
            self.counters["records.time_fallback"] += fallback
            s_ms = np.where(bad, export, s_ms)
            e_ms = np.where(bad, export, e_ms)
        if self.time_bounds is not None:
            keep = self._sane_times(self.time_bounds, cols, export, s_ms, e_ms)
            if keep is not None:
                # Per-set context stays per set: only the counts of the sets change.
                set_of = np.repeat(np.arange(len(counts)), counts)
                counts = np.bincount(set_of[keep], minlength=len(counts)).astype(np.int64)
                cols = {**cols, "counts": counts}
                rec, s_ms, e_ms = rec[keep], s_ms[keep], e_ms[keep]
                n = len(rec)
                if n == 0:
                    return None

        src, src4 = _address(rec, offs, ie.SOURCE_IPV4_ADDRESS, ie.SOURCE_IPV6_ADDRESS)
        dst, dst4 = _address(rec, offs, ie.DESTINATION_IPV4_ADDRESS, ie.DESTINATION_IPV6_ADDRESS)
        assert src is not None and dst is not None
        protocol = col(ie.PROTOCOL_IDENTIFIER)
        sport = first(ie.SOURCE_TRANSPORT_PORT, ie.UDP_SOURCE_PORT, ie.TCP_SOURCE_PORT)
        dport = first(
            ie.DESTINATION_TRANSPORT_PORT, ie.UDP_DESTINATION_PORT, ie.TCP_DESTINATION_PORT
        )
        icmp = first(ie.ICMP_TYPE_CODE_IPV4, ie.ICMP_TYPE_CODE_IPV6)
        dport_null: Bools | None = None
        if icmp is not None and protocol is not None:
            is_icmp = (protocol == 1) | (protocol == 58)
            if dport is None:
                dport = np.where(is_icmp, icmp, 0).astype(np.uint64)
                dport_null = ~is_icmp
            else:
                dport = np.where(is_icmp & (dport == 0), icmp, dport)

        rate = self._sampling(cols, rec, offs, counts)

        domain = rep("domain")
        exporters = self._exporter_column(cols, n)
        arrays = [
            pa.array(s_ms, _TS),
            pa.array(e_ms, _TS),
            src,
            dst,
            _arrow(sport, pa.uint16(), n),
            _arrow(dport, pa.uint16(), n, dport_null),
            _arrow(protocol, pa.uint8(), n),
            _arrow(_low_byte(col(ie.TCP_CONTROL_BITS)), pa.uint8(), n),
            _arrow(col(ie.IP_CLASS_OF_SERVICE), pa.uint8(), n),
            _arrow(
                first(ie.PACKET_DELTA_COUNT, ie.PACKET_TOTAL_COUNT, ie.OUT_PKTS), pa.uint64(), n
            ),
            _arrow(first(ie.OCTET_DELTA_COUNT, ie.OCTET_TOTAL_COUNT, ie.OUT_BYTES), pa.uint64(), n),
            exporters,
            _arrow(col(ie.INGRESS_INTERFACE), pa.uint32(), n),
            _arrow(col(ie.EGRESS_INTERFACE), pa.uint32(), n),
            pa.array(rate.astype(np.uint32), pa.uint32(), mask=rate == 0),
            pa.array(domain.astype(np.uint32), pa.uint32(), mask=domain < 0),
            src4,
            dst4,
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=_WITH_ADDR4)

    def _sane_times(
        self,
        bounds: TimeBounds,
        cols: Mapping[str, npt.NDArray[Any]],
        export: I64,
        s_ms: I64,
        e_ms: I64,
    ) -> Bools | None:
        """Which records to keep (None: all) by :class:`TimeBounds`; the others are counted by
        kind, the first that applies: ``records.refused.export_clock`` (the packet's export time
        is far from its receive time), ``.before_export``, ``.after_export``."""
        counts = cols["counts"]
        set_export = cols["export_ms"]
        clock = np.abs(set_export - cols["received_ms"]) > bounds.export_skew_ms
        if not clock.any():
            # The usual batch: every record within the bounds of every export time of the batch
            # (a few seconds apart) — four reductions instead of a pass per condition.
            lo = min(int(s_ms.min()), int(e_ms.min()))
            hi = max(int(s_ms.max()), int(e_ms.max()))
            if (
                lo >= int(set_export.max()) - bounds.before_export_ms
                and hi <= int(set_export.min()) + bounds.after_export_ms
            ):
                return None
        old = (s_ms < export - bounds.before_export_ms) | (e_ms < export - bounds.before_export_ms)
        ahead = (s_ms > export + bounds.after_export_ms) | (e_ms > export + bounds.after_export_ms)
        if not (clock.any() or old.any() or ahead.any()):
            return None
        clock_r = np.repeat(clock, counts)
        old &= ~clock_r
        ahead &= ~(clock_r | old)
        c = self.counters
        for kind, mask in (
            ("export_clock", clock_r),
            ("before_export", old),
            ("after_export", ahead),
        ):
            refused = int(mask.sum())
            if refused:
                c[f"records.refused.{kind}"] += refused
                self.problems.warn(
                    f"records.refused.{kind}",
                    "netflow: %d record(s) refused (records.refused.%s): times far from the "
                    "exporter's clock or its clock far from ours",
                    refused,
                    kind,
                )
        keep: Bools = ~(clock_r | old | ahead)
        return keep

    def _exporter_column(self, cols: Mapping[str, npt.NDArray[Any]], n: int) -> pa.Array:
        ex = cols["exporter"]
        if (ex == ex[0]).all():  # one exporter (the usual case): no per-row take
            return pa.repeat(pa.scalar(self._exporters[int(ex[0])], pa.string()), n)
        return pa.array(self._exporters, pa.string()).take(np.repeat(ex, cols["counts"]))

    def _nat_records(
        self, g: _Group, rec: npt.NDArray[Any], cols: Mapping[str, npt.NDArray[Any]], n: int
    ) -> None:
        """NAT event records of one template → rows of :data:`NAT_EVENTS` (not checked here)."""
        t = g.template
        offs = t.offsets
        counts = cols["counts"]
        if ie.NAT_EVENT not in offs:  # natEvent of a length that cannot be an unsigned8
            self.counters["nat.errors.bad_field"] += n
            self.problems.warn(
                "nat.errors.bad_field",
                "netflow: IPFIX NAT template %d has an unreadable natEvent field",
                t.template_id,
            )
            return
        self._nat.append(
            nat_event_rows(
                {fid: _uint(rec[f"f{fid}"]) for fid in NAT_FIELDS if fid in offs},
                exporter=self._exporter_column(cols, n),
                domain=np.repeat(cols["domain"], counts),
                export_ms=np.repeat(cols["export_ms"], counts),
                inside=_address(rec, offs, ie.SOURCE_IPV4_ADDRESS, ie.SOURCE_IPV6_ADDRESS)[0],
                outside=_address(
                    rec, offs, ie.POST_NAT_SOURCE_IPV4_ADDRESS, ie.POST_NAT_SOURCE_IPV6_ADDRESS
                )[0],
                counters=self.counters,
            )
        )

    def _sampling(
        self,
        cols: Mapping[str, npt.NDArray[Any]],
        rec: npt.NDArray[Any],
        offs: Mapping[int, tuple[int, int]],
        counts: npt.NDArray[np.int64],
    ) -> U64:
        """The rate the exporter reported for each record (0: none); operator overrides and
        defaults are applied later, by mamori.ingest.sampling."""
        rate: U64 = np.repeat(cols["rate"], counts)
        # Records may name their sampler by samplerId (48) and / or selectorId (302); the
        # options records map either to a rate. Both are tried, selectorId last.
        sampler_fids = [f for f in (ie.SAMPLER_ID, ie.SELECTOR_ID) if f in offs]
        if sampler_fids:
            snaps = cols["snapshot"]
            used = [int(s) for s in np.unique(snaps) if self._snapshots[s].by_sampler]
            if used:
                snap = np.repeat(snaps, counts)
                for fid in sampler_fids:
                    sid = _uint(rec[f"f{fid}"])
                    for s in used:
                        in_snap = snap == s
                        for sampler, r in self._snapshots[s].by_sampler.items():
                            rate[in_snap & (sid == sampler)] = r
        # A rate carried in the data record itself is the most specific.
        own: U64 | None = None
        if ie.SAMPLING_SIZE in offs and ie.SAMPLING_POPULATION in offs:
            size = _uint(rec[f"f{ie.SAMPLING_SIZE}"])
            pop = _uint(rec[f"f{ie.SAMPLING_POPULATION}"])
            own = np.where(size > 0, pop // np.maximum(size, 1), 0).astype(np.uint64)
        else:
            for fid in (ie.SAMPLING_INTERVAL, ie.SAMPLER_RANDOM_INTERVAL):
                if fid in offs:
                    own = _uint(rec[f"f{fid}"])
                    break
        if own is not None:
            own = np.where(own > 0xFFFFFFFF, 0, own).astype(np.uint64)
            rate = np.where(own > 0, own, rate).astype(np.uint64)
        return rate


_VERSION_NAMES: Final = {5: "v5", 9: "v9", 10: "ipfix"}


def _walk(
    template: Template, body: bytes | memoryview, counters: Counter[str]
) -> Iterator[list[tuple[FieldSpec, bytes | memoryview]]]:
    """Yield each record of a set as (field, raw bytes) pairs; handles variable-length fields."""
    view = memoryview(body)
    size = len(view)
    minimum = template.record_length
    pos = 0
    while size - pos >= minimum:
        record: list[tuple[FieldSpec, bytes | memoryview]] = []
        p = pos
        ok = True
        for f in template.fields:
            length = f.length
            if f.variable:
                if p >= size:
                    ok = False
                    break
                length = view[p]
                p += 1
                if length == 255:
                    if p + 2 > size:
                        ok = False
                        break
                    length = (view[p] << 8) | view[p + 1]
                    p += 2
            if p + length > size:
                ok = False
                break
            record.append((f, view[p : p + length]))
            p += length
        if not ok:
            counters["errors.truncated_record"] += 1
            return
        if p == pos:  # cannot happen with minimum > 0, but never loop forever
            return
        pos = p
        yield record


def _uint(col: npt.NDArray[Any]) -> U64:
    if col.ndim == 1:
        return col.astype(np.uint64)
    out = np.zeros(col.shape[0], dtype=np.uint64)
    for i in range(col.shape[1]):
        out = (out << np.uint64(8)) | col[:, i].astype(np.uint64)
    return out


def _ipv4_text(values: Uint) -> pa.Array:
    encoded = pa.array(values.astype(np.uint32, copy=False), pa.uint32()).dictionary_encode()
    text = [
        f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
        for v in encoded.dictionary.to_pylist()
    ]
    return pa.array(text, pa.string()).take(encoded.indices)


def _ipv6_text(col: npt.NDArray[Any]) -> pa.Array:
    raw = np.ascontiguousarray(col)
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(raw), [None, pa.py_buffer(raw.tobytes())]
    )
    encoded = fixed.dictionary_encode()
    text = [ipaddress.IPv6Address(b).compressed for b in encoded.dictionary.to_pylist()]
    return pa.array(text, pa.string()).take(encoded.indices)


def _has(offs: Mapping[int, tuple[int, int]], v4: int, v6: int) -> bool:
    return v4 in offs or v6 in offs


def _address(
    rec: npt.NDArray[Any], offs: Mapping[int, tuple[int, int]], v4: int, v6: int
) -> tuple[pa.Array | None, pa.Array]:
    """The address column as text, and its IPv4 values as integers (null where IPv6)."""
    has4, has6 = v4 in offs, v6 in offs
    n = len(rec)
    if has4 and has6:
        a4 = _native(rec[f"f{v4}"])
        raw6 = np.ascontiguousarray(rec[f"f{v6}"])
        nonzero6 = raw6.view(np.uint8).reshape(len(raw6), 16).any(axis=1)
        # Prefer the family whose field comes first in the template; the other where it is 0.
        use6 = (a4 == 0) & nonzero6 if offs[v4][0] < offs[v6][0] else nonzero6 | (a4 == 0)
        text = pc.if_else(pa.array(use6), _ipv6_text(raw6), _ipv4_text(a4))
        return text, pa.array(a4.astype(np.uint32, copy=False), pa.uint32(), mask=use6)
    if has4:
        a4 = _native(rec[f"f{v4}"])
        return _ipv4_text(a4), pa.array(a4.astype(np.uint32, copy=False), pa.uint32())
    if has6:
        return _ipv6_text(rec[f"f{v6}"]), pa.nulls(n, pa.uint32())
    return None, pa.nulls(n, pa.uint32())


_TIME_FIELDS: Final = (
    # (start id, end id, kind)
    (ie.FLOW_START_MILLISECONDS, ie.FLOW_END_MILLISECONDS, "ms"),
    (ie.FLOW_START_MICROSECONDS, ie.FLOW_END_MICROSECONDS, "ntp"),
    (ie.FLOW_START_NANOSECONDS, ie.FLOW_END_NANOSECONDS, "ntp"),
    (ie.FLOW_START_SECONDS, ie.FLOW_END_SECONDS, "s"),
    (ie.FLOW_START_SYS_UP_TIME, ie.FLOW_END_SYS_UP_TIME, "uptime"),
    (ie.FLOW_START_DELTA_MICROSECONDS, ie.FLOW_END_DELTA_MICROSECONDS, "delta"),
)


def _time(
    rec: npt.NDArray[Any],
    offs: Mapping[int, tuple[int, int]],
    export: I64,
    uptime: I64,
    *,
    start: bool,
) -> tuple[I64, Bools] | None:
    """Flow start or end in Unix ms, and a mask of records where it could not be computed."""
    for s_id, e_id, kind in _TIME_FIELDS:
        fid = s_id if start else e_id
        if fid not in offs:
            continue
        v = _uint(rec[f"f{fid}"])
        ok = np.ones(len(v), dtype=np.bool_)
        if kind == "ms":
            ms = v.astype(np.int64)
        elif kind == "s":
            ms = v.astype(np.int64) * 1000
        elif kind == "ntp":
            secs = (v >> np.uint64(32)).astype(np.int64)
            frac = ((v & _MASK32) * np.uint64(1000)) >> np.uint64(32)
            ms = (secs - ie.NTP_UNIX_OFFSET_S) * 1000 + frac.astype(np.int64)
        elif kind == "delta":
            ms = export - (v // np.uint64(1000)).astype(np.int64)
        else:  # uptime-relative, with 32-bit wrap: the signed distance back from export time
            up = uptime
            if ie.SYSTEM_INIT_TIME_MILLISECONDS in offs:
                init = _uint(rec[f"f{ie.SYSTEM_INIT_TIME_MILLISECONDS}"]).astype(np.int64)
                up = np.where(init > 0, np.maximum(export - init, 0), uptime)
            ok = up >= 0
            diff = ((up - v.astype(np.int64)) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
            ms = export - diff.astype(np.int64)
        # Reject zero / absurd values (before 1990 or far future) instead of storing them.
        ok &= (ms > 631_152_000_000) & (ms < 4_102_444_800_000)
        return ms, ~ok
    return None


def _native(col: npt.NDArray[Any]) -> Uint:
    """A field as unsigned integers of its own width, native byte order (no widening)."""
    if col.ndim == 1:
        out: Uint = col.astype(col.dtype.newbyteorder("="))
        return out
    return _uint(col)


def _low_byte(values: Uint | None) -> Uint | None:
    """tcpControlBits may be 2 bytes (RFC 7125): the classic flags are the low byte."""
    if values is None:
        return None
    low: Uint = values & values.dtype.type(0xFF)
    return low


def _arrow(values: Uint | None, type_: pa.DataType, n: int, null: Bools | None = None) -> pa.Array:
    if values is None:
        return pa.nulls(n, type_)
    if type_.bit_width < values.dtype.itemsize * 8:  # wider field: saturate
        values = np.minimum(values, values.dtype.type((1 << type_.bit_width) - 1))
    return pa.array(values.astype(type_.to_pandas_dtype()), type_, mask=null)
