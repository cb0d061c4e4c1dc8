"""The flow collector (measure M1): UDP listeners or a pcap in, header-only Parquet out.

The receive path is dumb and fast: a child process does nothing but read the UDP sockets and pass
the datagrams to this process in chunks of about a megabyte (a thread would fight the decoder for
the interpreter lock and lose packets). The main loop decodes whatever has arrived in batches
(NetFlow v5/v9, IPFIX and sFlow told apart by content) and streams the records, row group by row
group, into hidden files that governance makes visible every ``flush_interval_s``; memory stays
flat whatever the rate. SIGTERM/SIGINT flush everything received; a kill -9 loses at most the last
flush interval and never leaves a half file where readers look.

IPFIX NAT event records (RFC 8158: templates with natEvent) are not flows: port block allocations
and de-allocations become CGNAT allocation rows (``source`` ``cgnat-ipfix``, see
:mod:`mamori.ingest.allocations.ipfix_nat`), stored in the ``allocations`` registry with each
flush once the block is closed (at most every ``NAT_STORE_EVERY_S``, and when stopping); blocks
still open are saved with the collector's state.

Sampling rates are settled by :class:`mamori.ingest.sampling.SamplingPolicy` (operator overrides
and defaults against what the exporter reported), the same way for every protocol and for pcap
replay, before records are held for writing.

Templates are saved per exporter as they change (:mod:`mamori.ingest.template_state`), so a
restart decodes data at once instead of waiting minutes for the next template, without reading
them all before it listens. Counters (packets, records, errors by kind, socket drops) are saved
beside them for ``mamori collect stats``; they are labelled by exporter, never by subscriber
address.

Hostile input must not stop it: record times far from the exporter's clock, or an exporter clock
far from ours, are refused (:class:`TimeBounds`); templates and open files are bounded; SIGTERM
ends the receiver child within ``stop_timeout_s`` whatever state it is in, and an error ends it
at once; what a killed collector was writing is removed at the next start.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.config import CollectorConfig
from mamori.governance import Governance, GovernanceError
from mamori.ingest.allocations.ipfix_nat import SOURCE as NAT_SOURCE
from mamori.ingest.allocations.ipfix_nat import PortBlockTracker
from mamori.ingest.netflow.decoder import Datagram, FlowDecoder, PackedDatagrams, TimeBounds
from mamori.ingest.pcapfile import read_udp
from mamori.ingest.receiver import Chunk, Receiver, join_chunks
from mamori.ingest.sampling import SamplingPolicy
from mamori.ingest.template_state import TemplateState

__all__ = [
    "Collector",
    "CollectorSettings",
    "Listen",
    "decoder_for",
    "load_stats",
    "parse_listen",
    "replaying",
]

log = logging.getLogger("mamori.ingest.collector")

ACTOR = "collector"
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
ROW_GROUP = 131_072  # decoded records held before they are written out as one row group
BATCH_WAIT_S = 0.02  # longest a received datagram waits for its batch to fill
# Closed CGNAT port blocks are stored at most this often (and when the collector stops): one
# small registry file per flush would pile up thousands a day. Until then they stay in the saved
# open-block state, so a kill -9 loses none.
NAT_STORE_EVERY_S = 60.0
DISK_FULL_LOG_EVERY_S = 60.0  # while the store stays full, one reminder a minute, not one a flush
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """A write refused for want of space (or quota): the one store error a collector rides out."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


_LISTEN_RE = re.compile(r"^udp://(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]]+)):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp://{host}:{self.port}"


def parse_listen(url: str) -> Listen:
    """``udp://HOST:PORT`` (``udp://[::1]:2055`` for IPv6) → :class:`Listen`."""
    m = _LISTEN_RE.match(url.strip())
    if not m:
        raise ValueError(f"cannot read listen address {url!r}; expected udp://HOST:PORT")
    port = int(m["port"])
    if port > 65535:  # 0 lets the system pick a free port (printed at start)
        raise ValueError(f"port {port} in {url!r} is out of range 0-65535")
    return Listen(m["v6"] or m["host"], port)


CollectorSettings = CollectorConfig


class StreamObserver(Protocol):
    """Streaming detection on the decoded batches: ``columns`` are those governance authorised
    it to see (:meth:`Governance.open_stream_read`); the collector hands it nothing else, but
    an authorised address column also as the decoder's integers (``src_addr_v4``,
    ``dst_addr_v4``: the same addresses, null where IPv6)."""

    columns: tuple[str, ...]

    def __call__(self, flows: pa.Table) -> None: ...


@dataclass
class _Socket:
    listen: Listen
    sock: socket.socket
    inode: int


@dataclass
class Stats:
    counters: Counter[str] = field(default_factory=Counter)
    by_exporter: dict[str, Counter[str]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    rows_written: int = 0
    files_written: int = 0
    flushes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "updated": time.time(),
            "rows_written": self.rows_written,
            "files_written": self.files_written,
            "flushes": self.flushes,
            "counters": dict(sorted(self.counters.items())),
            "by_exporter": {
                k: dict(sorted(v.items())) for k, v in sorted(self.by_exporter.items())
            },
        }


def _udp_drops(inodes: Iterable[int]) -> int:
    """Datagrams the kernel dropped for these sockets (``drops`` column of /proc/net/udp[6])."""
    wanted = set(inodes)
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 13 and parts[9].isdigit() and int(parts[9]) in wanted:
                total += int(parts[12])
    return total


class Collector:
    """Decode export packets and store them under measure M1.

    Inert until :meth:`start` (sockets) or :meth:`replay_pcap` (files); :meth:`run` flushes
    everything on its way out.
    """

    def __init__(
        self,
        gov: Governance,
        settings: CollectorSettings | None = None,
        group: str = "default",
        shard: int | None = None,
    ) -> None:
        self.gov = gov
        self.settings = settings or CollectorSettings()
        self.decoder = decoder_for(self.settings)
        self.sampling = SamplingPolicy.from_config(self.settings)
        self.stats = Stats()
        self.nat = PortBlockTracker(gov.config.attribution.session_timeout_s)
        self._nat_unstored: pa.Table | None = None  # closed blocks a failed store left behind
        self._stream = gov.open_stream(
            "M1", "flows", ACTOR, max_open=self.settings.max_open_partitions
        )
        # What a crashed collector was writing (never what a running one is).
        stale = self._stream.remove_stale()
        if stale:
            self.stats.counters["store.stale_temporary_removed"] += stale
            log.info("collector: removed %d temporary file(s) a stopped collector left", stale)
        self._held: list[pa.Table] = []
        self._held_rows = 0
        self._sockets: list[_Socket] = []
        self._receiver: Receiver | None = None
        self._stop = threading.Event()
        self._last_flush = time.monotonic()
        self._last_nat_store = time.monotonic()
        self._latest_received = 0.0  # receive time of the newest datagram decoded
        # A full store: since when (monotonic; 0 = not full), records dropped meanwhile, last log
        self._full_since = 0.0
        self._full_dropped = 0
        self._full_logged = 0.0
        # One of several decoding processes on one port (``collect --decoders``): the kernel
        # gives each exporter to one of them, which keeps its counters and NAT blocks apart;
        # templates stay in the group's directory, so that an exporter the kernel hands to
        # another shard after a restart still finds its own.
        self.shard = shard
        group_dir = self._group_dir = gov.state_dir(_state_name(group))
        self._state_dir = group_dir if shard is None else group_dir / f"shard-{shard}"
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self.templates = TemplateState(group_dir / "templates", legacy=group_dir / "templates.json")
        # called after each flush with its duration and the files it made visible (metrics)
        self.on_flush: Callable[[float, list[Path]], None] | None = None
        # called after each flush (final: the last): what was decoded is in the store now
        # (collect --detect-ddos reads the senders of outbound attacks from it)
        self.after_flush: list[Callable[[bool], None]] = []
        # called with each decoded batch, before it is stored (streaming detection, M13 — each
        # observer is authorised by governance when it is made: Governance.open_stream_read)
        self.observers: list[StreamObserver] = []
        self._restore()

    # ----------------------------------------------------------------- state

    @property
    def templates_path(self) -> Path:
        """The single template file of earlier versions (read once, then removed)."""
        return self._group_dir / "templates.json"

    @property
    def stats_path(self) -> Path:
        return self._state_dir / "stats.json"

    @property
    def nat_blocks_path(self) -> Path:
        return self._state_dir / "nat_blocks.arrow"

    def _restore(self) -> None:
        # Counters of another layout (one process, or other shards) would be summed with ours.
        stale = (
            self._group_dir.glob("shard-*/stats.json")
            if self.shard is None
            else [self._group_dir / "stats.json"]
        )
        for path in stale:
            path.unlink(missing_ok=True)
        nat_path = self.nat_blocks_path
        if self.shard == 0 and not nat_path.exists():
            nat_path = self._group_dir / "nat_blocks.arrow"  # left by a run of one process
        try:
            self.nat.load(nat_path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            self.stats.counters["nat.errors.state_unreadable"] += 1
            log.warning("collector: saved open NAT port blocks unreadable (%s); ignored", exc)
        # Lists the saved exporters, reads none of them: each is read at its first packet.
        self.templates.attach(self.decoder.registry)

    def _count_kernel_drops(self) -> None:
        """Read the kernel's drop counter while the sockets are open (it dies with them)."""
        if self._sockets:
            self.stats.counters["packets.dropped_by_kernel"] = _udp_drops(
                s.inode for s in self._sockets
            )

    def kernel_drops(self) -> int:
        """Datagrams the kernel has dropped for the open sockets, read now (the saved count once
        they are closed)."""
        sockets = list(self._sockets)
        if not sockets:
            return int(self.stats.counters.get("packets.dropped_by_kernel", 0))
        return _udp_drops(s.inode for s in sockets)

    def _save_state(self, *, final: bool = False) -> None:
        registry = self.decoder.registry
        if self._latest_received:
            registry.expire(self._latest_received, self.stats.counters)
        # Templates only announced again are rewritten a few times per timeout: often enough
        # that a restart finds them fresh, rarely enough to cost nothing.
        self.templates.save(
            registry,
            time.monotonic(),
            refresh_every_s=self.settings.template_timeout_s / 4,
            final=final,
        )
        self.stats.counters.update(self.templates.counters)
        self.templates.counters.clear()
        self.stats.counters["templates.held"] = len(registry)
        self.nat.save(self.nat_blocks_path)
        self._count_kernel_drops()
        _atomic_write_json(self.stats_path, self.stats.as_dict())

    # ----------------------------------------------------------------- decode and flush

    def _decode(self, batch: PackedDatagrams) -> None:
        if not len(batch.lengths):
            return
        result = self.decoder.decode_packed(batch)
        self.stats.counters.update(result.counters)
        latest = float(np.max(batch.received))
        self._latest_received = max(self._latest_received, latest)
        self.nat.advance(int(latest * 1000))
        if result.nat.num_rows:
            self.nat.add(result.nat, self.stats.counters)
            for item in result.nat.column("exporter").value_counts().to_pylist():
                key = str(item["values"])
                self.stats.by_exporter.setdefault(key, Counter())["nat_records"] += item["counts"]
        per = np.bincount(batch.exporter, minlength=len(batch.exporters))
        for exporter, n in zip(batch.exporters, per.tolist(), strict=True):
            if n:
                self.stats.by_exporter.setdefault(exporter, Counter())["packets"] += n
        flows = self.sampling.apply(result.flows, self.stats.counters)
        if flows.num_rows:
            for observe in self.observers:
                # only the columns governance authorised it for (Governance.open_stream_read)
                observe(_observed(flows, result.addr4, observe.columns))
            counts = flows.column("exporter").value_counts()
            for item in counts.to_pylist():
                key = str(item["values"])
                self.stats.by_exporter.setdefault(key, Counter())["records"] += item["counts"]
            self._count_unknown_rates(flows)
            self._held.append(flows)
            self._held_rows += flows.num_rows
        if self._held_rows >= ROW_GROUP:
            self._write_held()

    def _count_unknown_rates(self, flows: pa.Table) -> None:
        """Per exporter, the records stored without a sampling rate: which routers need a
        ``--sampling`` override or a default."""
        rate = flows.column("sampling_rate")
        if not rate.null_count:
            return
        unknown = flows.column("exporter").filter(pc.is_null(rate))
        for item in unknown.value_counts().to_pylist():
            key = str(item["values"])
            self.stats.by_exporter.setdefault(key, Counter())["sampling_unknown"] += item["counts"]

    def _write_held(self) -> None:
        if self._held:
            try:
                self._stream.write(pa.concat_tables(self._held))
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self._disk_full(exc)
                return
            self._held, self._held_rows = [], 0
            if self._stream.pending_rows >= self.settings.max_file_rows:
                self.flush()

    def _disk_full(self, exc: OSError) -> None:
        """The store ran out of space: drop what is not yet visible (the temporary files go, so
        nothing half-written is left and the space they took returns), count it, say so, and
        keep receiving. Every flush tries again; writing resumes by itself once space returns.
        Records already visible stay whole: a file becomes visible only after its fsync."""
        lost = self._held_rows + self._stream.pending_rows
        self._held, self._held_rows = [], 0
        self._stream.abort()
        counters = self.stats.counters
        counters["store.errors.disk_full"] += 1
        counters["records.dropped_disk_full"] += lost
        now = time.monotonic()
        self._full_dropped += lost
        if not self._full_since:
            self._full_since = self._full_logged = now
            log.error(
                "collector: the store is out of space (%s): %d record(s) not stored; receiving "
                "goes on, every flush tries again, and writing resumes when space returns. "
                "Free space under %s or run `mamori purge`.",
                exc.strerror or exc,
                lost,
                self.gov.config.store,
            )
        elif now - self._full_logged >= DISK_FULL_LOG_EVERY_S:
            self._full_logged = now
            log.error(
                "collector: the store is still out of space after %.0f s; %d record(s) dropped "
                "so far",
                now - self._full_since,
                self._full_dropped,
            )

    def _disk_recovered(self) -> None:
        if self._full_since:
            log.warning(
                "collector: space is back; writing resumed after %.0f s without it "
                "(%d record(s) dropped meanwhile)",
                time.monotonic() - self._full_since,
                self._full_dropped,
            )
            self._full_since, self._full_dropped = 0.0, 0

    def flush(self, *, final: bool = False) -> int:
        """Make everything decoded so far visible in the store; returns the records written.
        Closed CGNAT port blocks are stored every ``NAT_STORE_EVERY_S`` and when ``final``."""
        self._last_flush = time.monotonic()
        self._write_held()
        try:
            files, rows = self._stream.commit()
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self._disk_full(exc)
            files, rows = [], 0
        else:
            if files:
                self._disk_recovered()
        if self._stream.closed_early:
            self.stats.counters["store.files_closed_early"] = self._stream.closed_early
        if files:
            self.stats.rows_written += rows
            self.stats.files_written += len(files)
            self.stats.flushes += 1
        if final or self._last_flush - self._last_nat_store >= NAT_STORE_EVERY_S:
            self._last_nat_store = self._last_flush
            self._store_port_blocks()
        try:
            self._save_state(final=final)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # templates and counters are saved again at the next flush; nothing is lost by
            # waiting, and the collector must not stop over it
            self.stats.counters["state.errors.disk_full"] += 1
        if self.on_flush is not None:
            self.on_flush(time.monotonic() - self._last_flush, files)
        for after in self.after_flush:
            try:
                after(final)
            except Exception:  # a reader of the store must not stop collection
                log.exception("after-flush hook failed")
        return rows

    def _store_port_blocks(self) -> None:
        """Store the CGNAT port blocks closed since the last flush (IPFIX NAT events)."""
        counters = self.stats.counters
        blocks = self.nat.closed(counters)
        if self._nat_unstored is not None:
            blocks = pa.concat_tables([self._nat_unstored, blocks])
        if not blocks.num_rows:
            return
        try:
            self.gov.write_registry("allocations", blocks, ACTOR, source=NAT_SOURCE)
        except (GovernanceError, OSError) as exc:
            # kept and tried again at the next store (a full disk clears; attribution must not
            # lose the blocks)
            self._nat_unstored = blocks
            counters["nat.errors.store"] += 1
            log.error(
                "collector: %d closed port block(s) not stored yet (will retry): %s",
                blocks.num_rows,
                exc,
            )
            return
        self._nat_unstored = None
        counters["nat.blocks_stored"] += blocks.num_rows

    # ----------------------------------------------------------------- pcap

    def replay_pcap(self, path: Path, progress: Callable[[Stats], None] | None = None) -> Stats:
        """Decode the export packets captured in ``path`` (pcap or pcapng) and store them."""
        pcap_counters: Counter[str] = Counter()
        batch: list[Datagram] = []
        for dg in read_udp(path, pcap_counters):
            batch.append(Datagram(dg.src, dg.payload, dg.ts))
            if len(batch) >= self.settings.batch_packets:
                self._decode(PackedDatagrams.pack(batch))
                batch = []
                if time.monotonic() - self._last_flush >= self.settings.flush_interval_s:
                    self.flush()
                if progress:
                    progress(self.stats)
        self._decode(PackedDatagrams.pack(batch))
        self.stats.counters.update({f"pcap.{k}": v for k, v in pcap_counters.items()})
        self.flush(final=True)
        return self.stats

    # ----------------------------------------------------------------- sockets

    def start(self, listens: Iterable[Listen], *, reuse_port: bool = False) -> None:
        """Bind every listener (errors name the address) and start the receiver process.
        ``reuse_port``: share each port with the other decoding processes (SO_REUSEPORT: the
        kernel spreads exporters over the sockets, each exporter always to the same one)."""
        for listen in listens:
            family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            if reuse_port or self.settings.reuse_port:
                # several processes on one port: the kernel spreads exporters across them
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            _set_rcvbuf(sock, self.settings.rcvbuf_bytes)
            self.stats.counters["socket.rcvbuf_bytes"] = (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
            )
            try:
                sock.bind((listen.host, listen.port))
            except OSError as exc:
                sock.close()
                self.close_sockets()
                raise OSError(f"cannot listen on {listen}: {exc.strerror}") from None
            self._sockets.append(_Socket(listen, sock, os.fstat(sock.fileno()).st_ino))
        self._receiver = Receiver([s.sock for s in self._sockets])
        self._receiver.start()

    def bound(self) -> list[Listen]:
        """The addresses actually bound (port 0 resolved)."""
        return [Listen(*s.sock.getsockname()[:2]) for s in self._sockets]

    def run(
        self, status: Callable[[Stats], None] | None = None, status_every_s: float = 1.0
    ) -> None:
        """Decode and flush until :meth:`request_stop` (or SIGTERM/SIGINT once
        :meth:`install_signal_handlers` ran); then store everything received and return."""
        receiver = self._receiver
        if receiver is None:
            raise RuntimeError("start() the collector before run()")
        try:
            self._loop(receiver, status, status_every_s)
            self.flush(final=True)
        except BaseException:
            # Whatever went wrong (a full disk, a bug), the receiver child goes and the ports
            # are released now, not when somebody finds a hung process.
            receiver.kill(0.0)
            self.close_sockets()
            raise
        self.close_sockets()

    def _loop(
        self,
        receiver: Receiver,
        status: Callable[[Stats], None] | None,
        status_every_s: float,
    ) -> None:
        next_status = time.monotonic() + status_every_s
        stop_by = 0.0  # once stopping: when the receiver is killed if it has not handed over
        pending: list[Chunk] = []
        waiting = 0
        first_at = 0.0
        while True:
            if self._stop.is_set() and not stop_by:
                receiver.request_stop()  # it drains the sockets, then says it is done
                stop_by = time.monotonic() + self.settings.stop_timeout_s
            got, finished = receiver.take(
                self.settings.batch_packets, wait_s=0.005 if pending else 0.05
            )
            if got:
                if not pending:
                    first_at = time.monotonic()
                pending += got
                waiting += sum(len(c.lengths) for c in got)
            if stop_by and not finished and time.monotonic() > stop_by:
                log.error(
                    "collector: the receiver did not hand over within %.0f s of the stop; "
                    "killed (what it still held is lost)",
                    self.settings.stop_timeout_s,
                )
                self.stats.counters["receiver.killed_on_stop"] += 1
                receiver.kill(0.0)
                finished = True
            # Decode in batches of a useful size (per-batch costs are fixed), but never hold
            # datagrams longer than BATCH_WAIT_S.
            due = waiting >= self.settings.batch_packets // 4 or (
                pending and time.monotonic() - first_at >= BATCH_WAIT_S
            )
            if pending and (due or finished or stop_by):
                chunks, pending, waiting = pending, [], 0
                batch = join_chunks(chunks)
                self.stats.counters["packets.received"] += len(batch.lengths)
                dropped = sum(c.dropped for c in chunks)
                if dropped:
                    self.stats.counters["packets.dropped_by_receiver"] += dropped
                self._decode(batch)
            now = time.monotonic()
            if now - self._last_flush >= self.settings.flush_interval_s:
                self.flush()
            if status and now >= next_status:
                status(self.stats)
                next_status = now + status_every_s
            if finished:
                break
        receiver.join(max(0.0, stop_by - time.monotonic()) if stop_by else 10.0)

    def request_stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("collector: %s received, flushing", signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def close_sockets(self) -> None:
        if self._receiver is not None and self._receiver.kill(self.settings.stop_timeout_s):
            self.stats.counters["receiver.killed_on_stop"] += 1
        if self._sockets:
            self._count_kernel_drops()
            with contextlib.suppress(OSError):  # closing must not fail on a full disk
                _atomic_write_json(self.stats_path, self.stats.as_dict())
        for s in self._sockets:
            s.sock.close()
        self._sockets = []

    def close(self) -> None:
        """Drop what was never flushed (used after errors; :meth:`run` flushes itself)."""
        self.close_sockets()
        self._stream.abort()


ANY_TIME_S = 100 * 366 * 86400.0  # wider than any clock error: the time checks never refuse


def replaying(settings: CollectorSettings) -> CollectorSettings:
    """``settings`` for exports sent long after they were made (a simulated day, softflowd run
    on an old capture, a benchmark's recorded stream): their times are years from today's and
    from each other, which is right for them and would be refused as broken clocks otherwise."""
    return settings.model_copy(
        update={
            "record_before_export_s": ANY_TIME_S,
            "record_after_export_s": ANY_TIME_S,
            "export_clock_skew_s": ANY_TIME_S,
        }
    )


def decoder_for(settings: CollectorSettings) -> FlowDecoder:
    """The decoder the collector runs with these settings: template bounds, and record times
    checked against the exporter's clock and ours."""
    return FlowDecoder(
        template_timeout_s=settings.template_timeout_s,
        time_bounds=TimeBounds.from_seconds(
            settings.record_before_export_s,
            settings.record_after_export_s,
            settings.export_clock_skew_s,
        ),
        max_templates_per_exporter=settings.templates_per_exporter,
        max_templates=settings.templates_total,
    )


def _observed(flows: pa.Table, addr4: pa.Table | None, columns: tuple[str, ...]) -> pa.Table:
    """What a stream observer sees: the columns it was authorised for, and for an authorised
    address column the same addresses as the decoder's integers (``src_addr_v4``: null where
    IPv6), so it need not parse the text back (the sampling rule keeps every row in order)."""
    view = flows.select(list(columns))
    if addr4 is None or addr4.num_rows != flows.num_rows:
        return view
    for name in ("src_addr", "dst_addr"):
        if name in columns:
            view = view.append_column(name + "_v4", addr4.column(name + "_v4"))
    return view


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    """Ask for ``size`` bytes of receive buffer. SO_RCVBUFFORCE (root / CAP_NET_ADMIN) passes
    net.core.rmem_max; without the privilege the kernel caps SO_RCVBUF at rmem_max."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, default=str))
    os.replace(tmp, path)


def _state_name(group: str) -> str:
    """Each listener group (a process of its own) keeps its templates and counters apart;
    ``default`` keeps the name it always had."""
    return "collector" if group == "default" else f"collector_{group}"


def load_stats(gov: Governance, group: str = "default") -> dict[str, Any] | None:
    """The group's counters as of each process's last flush; with several decoding processes
    (``collect --decoders``), their sum."""
    group_dir = gov.state_dir(_state_name(group))
    parts = []
    for path in [group_dir / "stats.json", *sorted(group_dir.glob("shard-*/stats.json"))]:
        try:
            parts.append(json.loads(path.read_text()))
        except FileNotFoundError:
            continue
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else merge_stats(parts)


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' counters as one: counts add up (each process counts only the
    exporters the kernel gave it), ``started`` is the earliest and ``updated`` the latest."""
    counters: Counter[str] = Counter()
    by_exporter: dict[str, Counter[str]] = {}
    for part in parts:
        counters.update(part.get("counters", {}))
        for exporter, c in part.get("by_exporter", {}).items():
            by_exporter.setdefault(exporter, Counter()).update(c)
    return {
        "started": min(p["started"] for p in parts),
        "updated": max(p["updated"] for p in parts),
        "rows_written": sum(p["rows_written"] for p in parts),
        "files_written": sum(p["files_written"] for p in parts),
        "flushes": sum(p["flushes"] for p in parts),
        "counters": dict(sorted(counters.items())),
        "by_exporter": {k: dict(sorted(v.items())) for k, v in sorted(by_exporter.items())},
        "processes": len(parts),
    }


def iter_stat_lines(stats: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield "rows written", f"{stats['rows_written']:,}"
    yield "files written", f"{stats['files_written']:,}"
    for key, value in stats["counters"].items():
        yield key, f"{value:,}"
