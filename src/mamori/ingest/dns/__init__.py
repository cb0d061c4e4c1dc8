"""Resolver query logs into ``dns_queries``: dnstap files, a live dnstap socket, Unbound text logs.

Rows are stored under M7 through :meth:`Governance.write`, which drops the queries of subscribers
who are out (and of pool addresses no allocation covers) before anything reaches the disk. Queries
that do not fit the schema (a name longer than 253 characters) are counted and left out; a broken
frame or line is counted and logged with its position, never the end of the good data around it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mamori.governance import Governance
from mamori.ingest.dns.dnstap import CONTENT_TYPE, DecodeStats, QueryBatch, decode_messages
from mamori.ingest.dns.fstrm import FrameError, SocketReader, read_frames
from mamori.ingest.dns.unbound_log import parse_unbound_log
from mamori.schemas import FQDN_LEN

__all__ = [
    "DnsIngestReport",
    "DnstapListener",
    "ingest_dnstap_file",
    "ingest_unbound_log",
    "store_queries",
]

log = logging.getLogger(__name__)

MEASURE = "M7"  # the measure the catalogue lets write dns_queries (M4 reads them)


@dataclass
class DnsIngestReport:
    source: str
    queries: int = 0  # client queries decoded
    stored: int = 0  # after consent filtering
    malformed: int = 0
    too_long: int = 0
    other: int = 0
    examples: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def store_queries(gov: Governance, table: pa.Table, actor: str, *, source: str) -> tuple[int, int]:
    """Store query rows (consent-filtered by governance). Returns (stored, too_long)."""
    long_ = pc.fill_null(pc.greater(pc.utf8_length(table.column("qname")), FQDN_LEN), False)
    too_long = pc.sum(long_).as_py() or 0
    if too_long:
        table = table.filter(pc.invert(long_))
    if table.num_rows == 0:
        return 0, too_long
    gov.write(MEASURE, "dns_queries", table, actor, detail={"source": source[:200]})
    # governance reports what it kept in the audit entry it just wrote
    return _rows_stored(gov, actor, source[:200]), too_long


def _rows_stored(gov: Governance, actor: str, source: str) -> int:
    """``rows_stored`` of the newest dns_queries write by ``actor`` for ``source`` (looking back a
    few entries, in case another process appended in between)."""
    path = gov.audit.path
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - (1 << 18)))
        lines = fh.read().rstrip(b"\n").split(b"\n")[-50:]
    for raw in reversed(lines):
        try:
            entry = json.loads(raw)
            detail = json.loads(entry.get("detail") or "{}")
        except ValueError:
            continue
        if (
            entry.get("event") == "write"
            and entry.get("dataset") == "dns_queries"
            and entry.get("actor") == actor
            and detail.get("source") == source
        ):
            return int(detail.get("rows_stored", 0))
    log.warning("dns: could not find the audit entry of the write just made")
    return 0


def ingest_dnstap_file(gov: Governance, path: Path, actor: str) -> DnsIngestReport:
    """Load one Frame Streams file of dnstap messages."""
    report = DnsIngestReport(source=str(path))
    stats = DecodeStats()
    batch = QueryBatch()
    with path.open("rb") as fh:
        try:
            data_frames = (f for f in read_frames(fh) if isinstance(f, bytes))
            decode_messages(data_frames, stats, batch)
        except FrameError as exc:
            # everything before the damage is kept
            report.error = f"{path}: {exc}"
            log.error("dnstap: %s (keeping the %d queries before it)", report.error, len(batch))
    table = batch.table()
    report.queries, report.malformed, report.other = stats.queries, stats.malformed, stats.other
    report.examples = stats.examples
    report.stored, report.too_long = store_queries(gov, table, actor, source=str(path))
    return report


def ingest_unbound_log(
    gov: Governance, path: Path, actor: str, *, resolver: str | None = None
) -> DnsIngestReport:
    """Load one Unbound log file (``log-queries``/``log-replies`` lines)."""
    table, stats = parse_unbound_log(path.read_bytes(), resolver=resolver, name=str(path))
    report = DnsIngestReport(source=str(path))
    report.queries, report.malformed, report.other = stats.queries, stats.malformed, stats.other
    report.examples = stats.examples
    report.stored, report.too_long = store_queries(gov, table, actor, source=str(path))
    return report


#: frames a connection decodes at once when they pile up between flushes
DECODE_BATCH = 10_000


class DnstapListener:
    """Listens on a unix socket for resolvers' dnstap connections (Unbound:
    ``dnstap-socket-path``) and stores their client queries every ``flush_interval_s``.

    Connections are read on their own threads; only the caller's thread (``run``) touches the
    store, so governance and its database connection are used from one thread.
    """

    def __init__(
        self,
        gov: Governance,
        path: Path,
        actor: str,
        *,
        flush_interval_s: float = 1.0,
        on_flush: Callable[[DnsIngestReport], None] | None = None,
    ) -> None:
        self.gov = gov
        self.path = path
        self.actor = actor
        self.flush_interval_s = flush_interval_s
        self.on_flush = on_flush
        self.stats = DecodeStats()
        self.totals = DnsIngestReport(source=f"unix:{path}")
        self._queue: queue.Queue[QueryBatch] = queue.Queue()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._pending: list[bytes] = []  # frames received, not decoded yet
        self._pending_lock = threading.Lock()

    def start(self) -> None:
        if self.path.exists():
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        t = threading.Thread(target=self._accept, name="dnstap-accept", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="dnstap-conn", daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        reader = SocketReader(conn, CONTENT_TYPE)
        # frames are decoded in batches (the decoder works on many messages at once): here when
        # many have piled up, otherwise by the next flush, so a resolver that goes quiet does not
        # leave its last queries waiting for another frame
        try:
            for frame in reader.frames():
                with self._pending_lock:
                    self._pending.append(frame)
                    full = len(self._pending) >= DECODE_BATCH
                    if full:
                        frames, self._pending = self._pending, []
                if full:
                    self._decode(frames)
        except (FrameError, OSError) as exc:
            log.warning("dnstap connection ended: %s", exc)
        finally:
            conn.close()

    def _decode(self, frames: list[bytes]) -> None:
        with self._lock:
            batch = decode_messages(frames, self.stats, where="socket ")
        if len(batch):
            self._queue.put(batch)

    def flush(self) -> DnsIngestReport | None:
        """Store what arrived since the last flush (call from the thread that owns ``gov``)."""
        with self._pending_lock:
            frames, self._pending = self._pending, []
        if frames:
            self._decode(frames)
        batches: list[QueryBatch] = []
        while True:
            try:
                batches.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not batches:
            return None
        merged = QueryBatch()
        for b in batches:
            merged.extend(b)
        report = DnsIngestReport(source=self.totals.source, queries=len(merged))
        report.stored, report.too_long = store_queries(
            self.gov, merged.table(), self.actor, source=self.totals.source
        )
        with self._lock:
            report.malformed = self.stats.malformed - self.totals.malformed
            report.other = self.stats.other - self.totals.other
            self.totals.malformed, self.totals.other = self.stats.malformed, self.stats.other
        self.totals.queries += report.queries
        self.totals.stored += report.stored
        self.totals.too_long += report.too_long
        if self.on_flush is not None:
            self.on_flush(report)
        return report

    def run(self, stop: threading.Event | None = None) -> None:
        """Flush every ``flush_interval_s`` until ``stop`` (or :meth:`request_stop`)."""
        stop = stop or self._stop
        while not (stop.is_set() or self._stop.is_set()):
            stop.wait(self.flush_interval_s)
            self.flush()
        self.close()

    def request_stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for t in self._threads:
            t.join(timeout=2)
        self.flush()
        self.path.unlink(missing_ok=True)
