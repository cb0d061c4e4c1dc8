"""Loading mail-server logs into ``auth_events``: whole files, or a live log followed as it grows.

Rows are written through governance under M11, the measure that may keep all four fields; where
M11 is switched off they are written under M12 with only the columns M12 may keep (no sender, no
recipient counts). Nothing else of a line is kept.

A file is read in blocks (the last, partial line of a block is carried into the next), so memory
stays bounded whatever the file's size. Following (:class:`MailFollower`) reads what was appended
since the last poll, notices rotation (a new file under the name, or a shorter one) and reads the
new file from its start.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from mamori.governance import Governance
from mamori.ingest.mail.lines import split_lines
from mamori.ingest.mail.parse import Extracted, MailFormat, MailParser, ParseCounts
from mamori.schemas import AUTH_EVENTS

__all__ = [
    "FollowBatch",
    "MailFollower",
    "MailIngestReport",
    "ingest_mail_file",
    "measure_for_logs",
    "parse_blocks",
    "store_events",
]

BLOCK_BYTES = 32 << 20


class MailIngestReport(BaseModel):
    """What loading one file did; ``examples`` holds the first few problems of each kind, with
    line numbers."""

    format: str
    file: str
    lines: int = 0
    failures: int = Field(default=0, description="AUTH failures (Dovecot: lines, not attempts)")
    successes: int = Field(default=0, description="successful AUTH: logins and queued messages")
    messages: int = Field(default=0, description="messages queued after a successful AUTH")
    skipped: int = Field(default=0, description="AUTH failures that are not password guesses")
    malformed: int = 0
    other: int = Field(default=0, description="lines that are not about AUTH")
    rows_stored: int = 0
    measure: str | None = None
    seconds: float = 0.0
    examples: dict[str, list[str]] = Field(default_factory=dict)

    @classmethod
    def from_counts(cls, fmt: str, file: str, counts: ParseCounts) -> MailIngestReport:
        return cls(
            format=fmt,
            file=file,
            lines=counts.lines,
            failures=counts.failures,
            successes=counts.successes,
            messages=counts.messages,
            skipped=counts.skipped,
            malformed=counts.malformed,
            other=counts.other,
            examples={k: list(v) for k, v in counts.examples.items()},
        )


def measure_for_logs(gov: Governance) -> str:
    """The measure mail logs are loaded under: M11 (all four fields), else M12 (no sender)."""
    for m in ("M11", "M12"):
        if gov.config.measure_enabled(m):
            return m
    raise ValueError("M11 and M12 are both switched off: mail logs have no purpose to be read for")


def store_events(gov: Governance, events: pa.Table, *, actor: str, server: str | None) -> int:
    """Write parser events (:data:`~mamori.ingest.mail.parse.EVENTS`) as ``auth_events`` rows;
    returns the rows stored."""
    if events.num_rows == 0:
        return 0
    measure = measure_for_logs(gov)
    allowed = gov.catalogue[measure].may_write(AUTH_EVENTS.name)
    host = server or gov.config.mail.server or socket.gethostname()
    cols = {c: events.column(c) for c in events.column_names if c in allowed}
    if "server" in allowed:
        cols["server"] = pa.array([host[:253]] * events.num_rows, pa.string())
    table = pa.table(cols)
    gov.write(
        measure,
        AUTH_EVENTS.name,
        table,
        actor,
        detail={
            "failures": int(pc.sum(pc.invert(events.column("success"))).as_py() or 0),
            "successes": int(pc.sum(events.column("success")).as_py() or 0),
        },
    )
    return int(table.num_rows)


def ingest_mail_file(
    gov: Governance,
    path: Path,
    fmt: MailFormat,
    *,
    actor: str,
    reference: datetime | None = None,
    server: str | None = None,
    dry_run: bool = False,
    block_bytes: int = BLOCK_BYTES,
    workers: int | None = None,
) -> MailIngestReport:
    """Load one log file. ``reference`` dates year-less syslog stamps (default: the file's last
    change). Blocks are parsed on ``workers`` threads (default: the CPUs)."""
    t0 = time.perf_counter()
    ref = reference or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    parser = MailParser(fmt, tz=gov.config.mail.timezone, reference=ref)
    stored = 0
    with path.open("rb") as fh:
        chunks = iter(lambda: fh.read(block_bytes), b"")
        for events in parse_blocks(parser, chunks, workers=workers):
            if not dry_run:
                stored += store_events(
                    gov, events.drop_columns(["line"]), actor=actor, server=server
                )
    report = MailIngestReport.from_counts(fmt, str(path), parser.counts)
    report.rows_stored = stored
    report.measure = None if dry_run else measure_for_logs(gov)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _complete_lines(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Blocks of whole lines (a block's last, partial line is carried into the next; the file's
    last line may lack its line end), each with whether it is the last."""
    carry = b""
    it = iter(chunks)
    chunk = next(it, b"")
    while True:
        following = next(it, b"") if chunk else b""
        data = carry + chunk
        if not following:
            if data and not data.endswith(b"\n"):
                data += b"\n"
            yield data, True
            return
        cut = data.rfind(b"\n") + 1
        data, carry = data[:cut], data[cut:]
        yield data, False
        chunk = following


def parse_blocks(
    parser: MailParser, chunks: Iterable[bytes], *, workers: int | None = None
) -> Iterator[pa.Table]:
    """Parse a log given as byte chunks: each block's lines are extracted on a pool of threads
    (Arrow's kernels release the GIL), then combined in order; yields each block's events."""
    n = workers or min(4, os.cpu_count() or 1)
    line = 1
    with ThreadPoolExecutor(max_workers=n) as pool:
        inflight: deque[tuple[Future[Extracted], int, bool]] = deque()
        for data, last in _complete_lines(chunks):
            lines = split_lines(data)
            inflight.append((pool.submit(parser.extract, lines, line), len(lines), last))
            line += len(lines)
            # at most one block per worker ahead of the one being combined: memory stays bounded
            while len(inflight) > n:
                fut, _, final = inflight.popleft()
                yield parser.combine(fut.result(), final=final)
        while inflight:
            fut, _, final = inflight.popleft()
            yield parser.combine(fut.result(), final=final)


@dataclass
class FollowBatch:
    """What one poll of a followed log read."""

    lines: int
    events: pa.Table
    stored: int
    rotated: bool = False


class MailFollower:
    """Follows a live log (``tail -F``): each :meth:`poll` parses the lines appended since the
    last one and stores their events. Starts at the end of the file unless ``from_start``."""

    def __init__(
        self,
        gov: Governance,
        path: Path,
        fmt: MailFormat,
        *,
        actor: str,
        from_start: bool = False,
        server: str | None = None,
        hold_s: float = 10.0,
    ) -> None:
        self.gov, self.path, self.fmt, self.actor, self.server = gov, path, fmt, actor, server
        self.parser = MailParser(fmt, tz=gov.config.mail.timezone, hold_s=hold_s)
        self._fh: IO[bytes] | None = None
        self._ino: int | None = None
        self._carry = b""
        self._line = 1
        self._open(at_end=not from_start)

    def _open(self, *, at_end: bool) -> None:
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            self._fh, self._ino = None, None
            return
        if at_end:
            fh.seek(0, os.SEEK_END)
        self._fh, self._ino = fh, os.fstat(fh.fileno()).st_ino

    def _rotated(self) -> bool:
        if self._fh is None:
            return self.path.exists()
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False  # between the rename and the new file: keep reading the old one
        return st.st_ino != self._ino or st.st_size < self._fh.tell()

    def poll(self) -> FollowBatch:
        rotated = self._rotated()
        data = self._carry
        if self._fh is not None:
            data += self._fh.read()  # what the old file still had, when it was rotated
        if rotated:
            if data and not data.endswith(b"\n"):
                data += b"\n"  # the old file's last line ends with the file
            if self._fh is not None:
                self._fh.close()
            self._open(at_end=False)
            if self._fh is not None:
                data += self._fh.read()
        cut = data.rfind(b"\n") + 1
        data, self._carry = data[:cut], data[cut:]
        lines = split_lines(data)
        # successes wait for their qmgr line at most hold_s
        now = datetime.now(UTC)
        self.parser.reference = now
        events = self.parser.feed(lines, self._line, now=now)
        self._line += len(lines)
        stored = store_events(
            self.gov, events.drop_columns(["line"]), actor=self.actor, server=self.server
        )
        return FollowBatch(len(lines), events, stored, rotated)

    def flush(self) -> FollowBatch:
        """Store what is held back (at shutdown)."""
        events = self.parser.feed(pa.array([], pa.string()), self._line, final=True)
        stored = store_events(
            self.gov, events.drop_columns(["line"]), actor=self.actor, server=self.server
        )
        return FollowBatch(0, events, stored)

    def run(
        self,
        *,
        interval_s: float | None = None,
        stop: Callable[[], bool] = lambda: False,
        on_batch: Callable[[FollowBatch], None] | None = None,
    ) -> None:
        """Poll every ``interval_s`` (default ``[mail] follow_interval_s``) until ``stop()``."""
        every = interval_s or self.gov.config.mail.follow_interval_s
        try:
            while not stop():
                t0 = time.monotonic()
                batch = self.poll()
                if on_batch is not None:
                    on_batch(batch)
                time.sleep(max(0.0, every - (time.monotonic() - t0)))
        finally:
            last = self.flush()
            if on_batch is not None and last.events.num_rows:
                on_batch(last)
            self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
