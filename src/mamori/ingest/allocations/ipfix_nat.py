"""CGNAT port-block allocations from IPFIX NAT events (RFC 8158) received by the collector.

The collector's decoder hands over NAT event records (:data:`.nat_events.NAT_EVENTS`, from
templates with natEvent, IE 230). Port block allocation (natEvent 16) and de-allocation (17)
records carry the inside address (sourceIPv4Address 8 or sourceIPv6Address 27), the public address
(postNATSourceIPv4Address 225) and the block (portRangeStart 361 and portRangeEnd 362, or
portRangeStart with portRangeNumPorts 364), timed by observationTimeMilliseconds 323. They become
the same two-stage rows as the Juniper syslog path (public address + port block → inside_addr), paired
and closed by the shared :func:`.common.port_block_events` and :func:`.common.build_sessions`: an
allocation opens a block, its de-allocation closes it; without one it is closed by the next
allocation of the same public block or ``timeout_s`` after it was given.

Unlike a log file, the stream has no end: a block still open is kept here (:class:`PortBlockTracker`,
saved with the collector's state as an Arrow file when it changed) and stored once it is closed —
by its de-allocation, by the next allocation of its public block, or when the collector's clock
(the latest NAT event or datagram receive time) passes its timeout. Attribution sees a block from
then on.

Problems are counted (collector counters ``nat.*``) and logged with the exporter and, for records,
their sequence number (``record N``, counted from the first NAT record this collector state saw),
never raised; the good records around them are kept:

* ``nat.errors.unknown_event``: a natEvent value the IANA registry does not define;
* ``nat.errors.missing_field``: a port-block record without inside or public address or block;
* ``nat.errors.bad_range``: a block whose end is before its start, or past port 65535;
* ``nat.errors.stepped_block``: a block of every k-th port (portRangeStepSize > 1): the allocations
  dataset holds contiguous blocks only;
* ``nat.session_events_ignored`` (NAT44/NAT64 session create / delete, per-connection logging) and
  ``nat.other_events_ignored`` (BIB, address binding, exhaustion, quota, threshold events): valid,
  not port blocks, not stored;
* ``nat.block_events``: port-block records accepted; ``nat.blocks_stored``: allocation rows stored;
  ``nat.blocks_open``: blocks held open now; ``nat.release_without_allocation``: de-allocations of
  blocks whose allocation this collector never saw (skipped: when they began is unknown), or
  that came after the block was already closed by a later allocation of it;
  ``nat.overlaps``: blocks still held after another holder's allocation of the same block.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from mamori.ingest.allocations.common import (
    EVENT_SCHEMA,
    START,
    STOP,
    IngestReport,
    Issues,
    build_sessions,
    port_block_events,
)
from mamori.ingest.netflow import fields as ie

__all__ = ["SOURCE", "PortBlockTracker", "block_records"]

log = logging.getLogger(__name__)

SOURCE: Final = "cgnat-ipfix"
EXAMPLES: Final = 5
STATE_FORMAT: Final = 1
# A port-block record reduced to what pairing needs; kept for open blocks between batches.
RECORDS: Final = pa.schema(
    [
        ("ts", pa.int64()),
        ("kind", pa.int8()),
        ("addr", pa.string()),
        ("port_start", pa.uint16()),
        ("port_end", pa.uint16()),
        ("inside_addr", pa.string()),
        ("seq", pa.int64()),
    ]
)
_KNOWN: Final = np.zeros(256, dtype=np.bool_)
_KNOWN[list(ie.NAT_EVENT_NAMES)] = True
_SESSION: Final = np.zeros(256, dtype=np.bool_)
_SESSION[list(ie.NAT_SESSION_EVENTS)] = True
# the unspecified address in an address field means "not given" (a template with both families)
_UNSPECIFIED: Final = pa.array(["0.0.0.0", "::"], pa.string())  # noqa: S104 (not a bind)


def _count(counters: Counter[str], kind: str, n: int) -> None:
    if n:
        counters[kind] += n


def _report(counters: Counter[str], kind: str, mask: np.ndarray, nat: pa.Table, why: str) -> None:
    count = int(mask.sum())
    if not count:
        return
    counters[kind] += count
    idx = np.flatnonzero(mask)[:EXAMPLES]
    rows = nat.take(pa.array(idx)).select(["exporter", "seq", "event"]).to_pylist()
    examples = "; ".join(f"exporter {r['exporter']} record {r['seq']}" for r in rows)
    log.warning("ipfix nat: %d record(s) %s (%s) [%s]", count, why, kind, examples)


def block_records(nat: pa.Table, first_seq: int, counters: Counter[str]) -> pa.Table:
    """Decoded NAT event records → port-block records (:data:`RECORDS`); every other record is
    counted (and, when malformed, logged) and left out. Records are numbered from
    ``first_seq``."""
    n = nat.num_rows
    if not n:
        return RECORDS.empty_table()
    seq = np.arange(first_seq, first_seq + n, dtype=np.int64)
    nat = nat.append_column("seq", pa.array(seq))
    event = np.minimum(nat.column("event").to_numpy(), 255).astype(np.intp)
    _report(
        counters,
        "nat.errors.unknown_event",
        ~_KNOWN[event],
        nat,
        "with a natEvent value the IANA registry does not define",
    )
    block = (event == ie.NAT_PORT_BLOCK_ALLOCATION) | (event == ie.NAT_PORT_BLOCK_DEALLOCATION)
    _count(counters, "nat.session_events_ignored", int(_SESSION[event].sum()))
    _count(
        counters, "nat.other_events_ignored", int((_KNOWN[event] & ~_SESSION[event] & ~block).sum())
    )
    if not block.any():
        return RECORDS.empty_table()

    def present(name: str) -> pa.ChunkedArray:
        col = nat.column(name)
        return pc.and_(pc.is_valid(col), pc.invert(pc.is_in(col, value_set=_UNSPECIFIED)))

    start = nat.column("port_start")
    count = nat.column("port_count")
    step = pc.coalesce(nat.column("port_step"), 1)
    # portRangeEnd, else the last of NumPorts ports StepSize apart
    implied = pc.add(start, pc.multiply(pc.subtract(count, 1), step))
    end = pc.coalesce(
        nat.column("port_end"),
        pc.if_else(pc.greater(count, 0), implied, pa.scalar(None, pa.int64())),
    )

    def arr(x: Any) -> np.ndarray:
        return np.asarray(pc.fill_null(x, False).to_numpy(zero_copy_only=False), dtype=np.bool_)

    missing = block & ~(
        arr(present("inside"))
        & arr(present("outside"))
        & arr(pc.is_valid(start))
        & arr(pc.is_valid(end))
    )
    _report(
        counters,
        "nat.errors.missing_field",
        missing,
        nat,
        "without inside address, public address or port block",
    )
    ok = block & ~missing
    s = pc.fill_null(start, 0).to_numpy(zero_copy_only=False)
    e = pc.fill_null(end, 0).to_numpy(zero_copy_only=False)
    bad_range = ok & ((e < s) | (e > 65535))
    _report(
        counters,
        "nat.errors.bad_range",
        bad_range,
        nat,
        "whose port block ends before it starts or past port 65535",
    )
    ok &= ~bad_range
    stepped = ok & (pc.fill_null(step, 1).to_numpy(zero_copy_only=False) > 1)
    _report(
        counters,
        "nat.errors.stepped_block",
        stepped,
        nat,
        "with a stepped port block (portRangeStepSize > 1), which allocations cannot hold",
    )
    ok &= ~stepped
    _count(counters, "nat.block_events", int(ok.sum()))
    keep = pa.array(ok)
    good = nat.filter(keep)
    kind = np.where(good.column("event").to_numpy() == ie.NAT_PORT_BLOCK_ALLOCATION, START, STOP)
    return pa.table(
        [
            good.column("ts"),
            pa.array(kind.astype(np.int8)),
            good.column("outside"),
            pa.array(s[ok].astype(np.uint16)),
            pa.array(e[ok].astype(np.uint16)),
            good.column("inside"),
            good.column("seq"),
        ],
        schema=RECORDS,
    )


class PortBlockTracker:
    """Port blocks from a stream of NAT event records: :meth:`add` records as they are decoded,
    :meth:`closed` returns the allocation rows of the blocks closed since (to store) and keeps the
    open ones. :meth:`save` / :meth:`load` carry the open blocks over a restart.

    Only the open blocks a call can close are paired again: those of a public block that new
    records name, and those whose timeout has passed. The others (most of them, on a large CGN)
    stay as they are, so a flush costs what arrived, not how many blocks are open."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_ms = round(timeout_s * 1000)
        self._open_records = RECORDS.empty_table()  # the records of the open blocks
        self._open_due = np.zeros(0, dtype=np.int64)  # per open record: its block's timeout
        self._open = 0  # open blocks
        self._new: list[pa.Table] = []
        self._seq = 0
        self._now = 0  # ms: the latest NAT event or receive time seen
        self._dirty = False  # open blocks changed since the last save

    @property
    def open_blocks(self) -> int:
        return self._open

    def advance(self, now_ms: int) -> None:
        """The collector's clock moved (datagrams received at ``now_ms``)."""
        self._now = max(self._now, int(now_ms))

    def add(self, nat: pa.Table, counters: Counter[str]) -> None:
        """Take the NAT event records of one decoded batch."""
        if not nat.num_rows:
            return
        records = block_records(nat, self._seq + 1, counters)
        self._seq += nat.num_rows
        self._dirty = True
        self._now = max(self._now, int(pc.max(nat.column("ts")).as_py()))
        if records.num_rows:
            self._new.append(records)

    def closed(self, counters: Counter[str]) -> pa.Table:
        """Allocation rows (the allocations dataset's columns, without ``source``) of every block
        closed by now; open blocks stay."""
        touched = self._open_due <= self._now
        if not (self._new or touched.any()):
            return _empty_rows()
        new = pa.concat_tables(self._new) if self._new else RECORDS.empty_table()
        held = self._open_records
        if new.num_rows and held.num_rows:
            # open blocks of a public block the new records name
            cand = np.flatnonzero(
                pc.is_in(held.column("addr"), value_set=pc.unique(new.column("addr"))).to_numpy(
                    zero_copy_only=False
                )
            )
            if cand.size:
                sub = held.take(pa.array(cand))
                hit = pc.is_in(_slot(sub), value_set=pc.unique(_slot(new)))
                touched[cand[hit.to_numpy(zero_copy_only=False)]] = True
        mask = pa.array(touched)
        work = pa.concat_tables([held.filter(mask), new]).combine_chunks()
        rest = held.filter(pc.invert(mask))
        rest_due = self._open_due[~touched]
        reopened = int(pc.count_distinct(_slot(held.filter(mask))).as_py()) if touched.any() else 0

        events = port_block_events(
            work.column("ts").to_numpy(),
            work.column("kind").to_numpy(),
            work.column("addr"),
            work.column("port_start"),
            work.column("port_end"),
            work.column("inside_addr"),
            work.column("seq").to_numpy(),
            timeout_ms=self.timeout_ms,
        )
        still = self._still_open(events)
        report = IngestReport(format=SOURCE, file="collector")
        rows = build_sessions(events, Issues(report))
        _count(counters, "nat.release_without_allocation", report.skipped)
        _count(counters, "nat.overlaps", report.overlaps)
        done = rows.filter(pc.invert(pc.is_in(rows.column("session_id"), value_set=still)))
        kept = events.filter(pc.is_in(events.column("sid"), value_set=still))
        # a block times out once its last record stops vouching for it
        g = kept.group_by("sid").aggregate([("until", "max")])
        kept_due = pc.take(
            g.column("until_max"), pc.index_in(kept.column("sid"), value_set=g.column("sid"))
        ).to_numpy(zero_copy_only=False)
        self._open_records = pa.concat_tables([rest, _records_of(kept)])
        self._open_due = np.concatenate([rest_due, np.asarray(kept_due, dtype=np.int64)])
        self._open += len(still) - reopened
        self._new = []
        self._dirty = True
        counters["nat.blocks_open"] = self._open
        return done

    def _still_open(self, events: pa.Table) -> pa.Array:
        """Session ids of blocks not closed by now: no de-allocation, no later allocation of the
        same public block, and within the timeout of their last record."""
        g = events.group_by("sid").aggregate(
            [
                ("kind", "max"),
                ("until", "max"),
                ("ts", "min"),
                ("addr", "min"),
                ("port_start", "min"),
                ("port_end", "min"),
            ]
        )
        slot = pc.binary_join_element_wise(
            g.column("addr_min"),
            pc.cast(g.column("port_start_min"), pa.string()),
            pc.cast(g.column("port_end_min"), pa.string()),
            "|",
        )
        codes = pc.dictionary_encode(slot.combine_chunks()).indices.to_numpy()
        first = g.column("ts_min").to_numpy()
        latest = np.full(int(codes.max()) + 1, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(latest, codes, first)
        later = latest[codes] > first  # a later allocation of the same public block
        open_ = (
            (g.column("kind_max").to_numpy() != STOP)
            & ~later
            & (g.column("until_max").to_numpy() > self._now)
        )
        return g.column("sid").combine_chunks().filter(pa.array(open_))

    def save(self, path: Path) -> None:
        """Write the open blocks' records to ``path`` (Arrow IPC, replaced atomically), when they
        changed since the last save."""
        if not self._dirty and path.exists():
            return
        table = pa.concat_tables([self._open_records, *self._new]).replace_schema_metadata(
            {"format": str(STATE_FORMAT), "seq": str(self._seq), "now_ms": str(self._now)}
        )
        tmp = path.with_name(f".{path.name}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
        self._dirty = False

    def load(self, path: Path) -> None:
        """Take back what :meth:`save` wrote; the blocks are paired again at the next
        :meth:`closed`. Raises ``ValueError`` (or ``OSError``) on a file it cannot use."""
        try:
            with pa.OSFile(str(path), "rb") as source:
                table = ipc.open_file(source).read_all()
        except pa.ArrowInvalid as exc:
            raise ValueError(f"not an Arrow file: {exc}") from None
        meta = table.schema.metadata or {}
        if meta.get(b"format") != str(STATE_FORMAT).encode():
            raise ValueError(f"unknown NAT block state format {meta.get(b'format')!r}")
        if not table.schema.remove_metadata().equals(RECORDS):
            raise ValueError("NAT block state has other columns than expected")
        self._seq = int(meta[b"seq"])
        self._now = int(meta[b"now_ms"])
        self._open_records = RECORDS.empty_table()
        self._open_due = np.zeros(0, dtype=np.int64)
        self._open = 0
        self._new = [table.replace_schema_metadata(None)] if table.num_rows else []
        self._dirty = False


def _slot(records: pa.Table) -> pa.Array:
    """A public port block as text: address|first|last."""
    out = pc.binary_join_element_wise(
        records.column("addr"),
        pc.cast(records.column("port_start"), pa.string()),
        pc.cast(records.column("port_end"), pa.string()),
        "|",
    )
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _records_of(events: pa.Table) -> pa.Table:
    return pa.table(
        [
            events.column("ts"),
            events.column("kind"),
            events.column("addr"),
            events.column("port_start"),
            events.column("port_end"),
            events.column("inside_addr"),
            events.column("line"),
        ],
        schema=RECORDS,
    )


def _empty_rows() -> pa.Table:
    return build_sessions(EVENT_SCHEMA.empty_table(), Issues(IngestReport(format=SOURCE, file="")))
