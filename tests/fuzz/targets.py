"""Fuzz harnesses: one per decoder and log parser Mamori feeds outside bytes to.

Each harness takes the bytes of one input and raises only when it finds a bug: an exception the
code under test does not document for bad input (the documented ones — ``FrameError`` for a cut
Frame Streams file, ``ValueError`` for a file that as a whole is not the format — are the
answer, not a bug), a decoder's own ``errors.internal`` counter (a bug it caught and counted), a
result of the wrong shape, a line number outside the file, or two decoders that should agree and
do not (the vectorised NetFlow and dnstap paths against their per-record references).

Datagram inputs are a sequence of [2-byte big-endian length][UDP payload] (softflowd's
``*_packets.bin`` layout), so one input carries a template and the data that needs it.

The same harnesses run two ways: ``tests/fuzz/test_fuzz.py`` (pytest, a fixed example budget of
seed mutations, every CI run) and ``tests/fuzz/run_atheris.py`` (coverage-guided, for as long as
one wants). Seeds: ``tests/data/fuzz`` and the fixtures of each format's own tests.
"""

from __future__ import annotations

import atexit
import collections
import io
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from mamori.ingest.allocations import read_allocations
from mamori.ingest.dns.dnstap import (
    DecodeStats,
    QueryBatch,
    decode_messages,
    decode_messages_scalar,
)
from mamori.ingest.dns.fstrm import FrameError, read_frames
from mamori.ingest.dns.unbound_log import parse_unbound_log
from mamori.ingest.netflow.decoder import Datagram, FlowDecoder
from mamori.ingest.pcapfile import read_udp
from mamori.ingest.reports import REPORT_SCHEMA, parse_report
from mamori.ingest.reputation import FeedError, parse_feed
from mamori.ingest.sflow import decode_sflow
from mamori.ingest.textlines import NotText
from mamori.schemas import DNS_QUERIES, FLOWS, REPUTATION

__all__ = ["TARGETS", "Target", "datagrams"]

DATA = Path(__file__).resolve().parents[1] / "data"
SEEDS = DATA / "fuzz"
EXPORTER = "192.0.2.1"
RECEIVED = 1_793_577_600.0  # a fixed receive time: every run decodes alike
_LINE = re.compile(r"^line (\d+)")


@dataclass(frozen=True)
class Target:
    name: str
    check: Callable[[bytes], None]
    seeds: tuple[Path, ...]
    examples: int = 100  # the pytest run's budget: what fits the CI's minute with the others

    def seed_bytes(self) -> list[bytes]:
        return [p.read_bytes() for p in self.seeds]


def datagrams(data: bytes) -> list[bytes]:
    """The payloads of a [length][payload]… input; a length past the end takes the rest."""
    out, pos = [], 0
    while pos + 2 <= len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def _rows(table: pa.Table) -> list[str]:
    """A table's rows, sorted, to compare two decoders that may order rows differently."""
    return sorted(repr(tuple(r.values())) for r in table.to_pylist())


# --------------------------------------------------------------------------- decoders


def netflow(data: bytes) -> None:
    """NetFlow v5 / v9 / IPFIX (and sFlow, told apart by content) through the collector's
    decoder; the vectorised walk must give what the per-datagram reference gives."""
    dgs = [Datagram(EXPORTER, p, RECEIVED + i / 1000) for i, p in enumerate(datagrams(data))]
    fast = FlowDecoder().decode(dgs)
    assert fast.counters["errors.internal"] == 0, fast.counters
    assert fast.flows.schema == FLOWS.arrow
    ref = FlowDecoder().decode_reference(dgs)
    assert ref.counters["errors.internal"] == 0, ref.counters
    assert _rows(fast.flows) == _rows(ref.flows)
    assert _rows(fast.nat) == _rows(ref.nat)
    assert +fast.counters == +ref.counters, (fast.counters, ref.counters)


def sflow(data: bytes) -> None:
    dgs = [(EXPORTER, p, RECEIVED + i / 1000) for i, p in enumerate(datagrams(data))]
    table, counters = decode_sflow(dgs)
    assert counters["errors.internal"] == 0, counters
    assert table.schema == FLOWS.arrow


def dnstap(data: bytes) -> None:
    """A Frame Streams file of dnstap messages: the frames up to any damage, decoded by the
    vectorised decoder and by the per-message reference alike."""
    frames: list[bytes] = []
    try:
        for f in read_frames(io.BytesIO(data)):
            if isinstance(f, bytes):
                frames.append(f)
    except FrameError:
        pass  # the documented answer to a cut or impossible stream; the frames before are kept
    fast_stats, ref_stats = DecodeStats(), DecodeStats()
    fast = decode_messages(frames, fast_stats, QueryBatch()).table()
    ref = decode_messages_scalar(frames, ref_stats, QueryBatch()).table()
    assert fast.schema == DNS_QUERIES.arrow
    assert _rows(fast) == _rows(ref)
    counts = ("frames", "queries", "other", "malformed")
    assert [getattr(fast_stats, c) for c in counts] == [getattr(ref_stats, c) for c in counts]


def pcap(data: bytes) -> None:
    counters: collections.Counter[str] = collections.Counter()
    for dg in read_udp(io.BytesIO(data), counters):
        assert 0 <= dg.sport <= 65535 and 0 <= dg.dport <= 65535


# --------------------------------------------------------------------------- log parsers

_WORK = Path(tempfile.mkdtemp(prefix="mamori-fuzz-"))  # the parsers read files: one, rewritten
atexit.register(shutil.rmtree, _WORK, True)


def _file(data: bytes) -> Path:
    path = _WORK / "input"
    path.write_bytes(data)
    return path


def _lines(data: bytes) -> int:
    """Lines in the file as the line formats count them (a last line without its end counts)."""
    body = data.removeprefix(b"\xef\xbb\xbf")
    return body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)


def allocations(fmt: str) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        try:
            rows, report = read_allocations(_file(data), fmt)  # type: ignore[arg-type]
        except ValueError:
            return  # not the format as a whole (a header without its columns, not text)
        assert report.sessions == rows.num_rows, report
        for examples in report.examples.values():
            for ex in examples:
                m = _LINE.match(ex)
                assert m is None or 1 <= int(m.group(1)) <= _lines(data), (ex, report)

    return check


def reputation(fmt: str) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        try:
            table, report = parse_feed(_file(data), fmt)
        except (FeedError, NotText):
            return
        assert table.schema == REPUTATION.arrow
        assert report.rows_loaded == table.num_rows
        if not report.format.endswith("json") and fmt not in ("stix", "misp"):
            assert all(1 <= e.line <= _lines(data) for e in report.errors), report.errors

    return check


def report(fmt: str) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        try:
            parsed = parse_report(_file(data), fmt)
        except ValueError:
            return
        assert parsed.table.schema == REPORT_SCHEMA
        assert parsed.good + len(parsed.bad) >= 0
        if fmt in ("csv", "shadowserver"):
            assert all(1 <= b.line <= _lines(data) + 1 for b in parsed.bad), parsed.bad

    return check


def unbound(data: bytes) -> None:
    try:
        table, stats = parse_unbound_log(data)
    except NotText:
        return
    assert table.schema == DNS_QUERIES.arrow
    assert stats.queries == table.num_rows
    assert stats.queries + stats.skipped_replies + stats.malformed + stats.other == stats.lines


# --------------------------------------------------------------------------- the table


def _seeds(*globs: str) -> tuple[Path, ...]:
    found = tuple(sorted(p for g in globs for p in DATA.glob(g)))
    assert found, globs
    return found


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("netflow", netflow, _seeds("fuzz/netflow/*")),
        Target("sflow", sflow, _seeds("fuzz/sflow/*")),
        Target("dnstap", dnstap, _seeds("fuzz/dnstap/*")),
        Target("pcap", pcap, _seeds("fuzz/pcap/*")),
        Target("radius", allocations("radius"), _seeds("allocations/radius-detail")),
        Target("kea", allocations("kea"), _seeds("allocations/kea-leases4.csv")),
        Target("cgnat-syslog", allocations("cgnat-syslog"), _seeds("allocations/cgnat.log")),
        Target("allocations-csv", allocations("csv"), _seeds("allocations/allocations.csv")),
        Target("feodo", reputation("feodo"), _seeds("reputation/feodo-*")),
        Target("urlhaus", reputation("urlhaus"), _seeds("reputation/urlhaus.csv")),
        Target("threatfox", reputation("threatfox"), _seeds("reputation/threatfox.*")),
        Target("plain", reputation("plain"), _seeds("reputation/plain-blocklist.txt")),
        Target("stix", reputation("stix"), _seeds("reputation/stix-bundle.json"), examples=40),
        Target("misp", reputation("misp"), _seeds("reputation/misp-event.json"), examples=60),
        Target("shadowserver", report("shadowserver"), _seeds("reports/*.csv")),
        Target("report-csv", report("csv"), _seeds("reports/*.csv")),
        Target("report-json", report("json"), _seeds("reports/plain.json")),
        Target("xarf", report("xarf"), _seeds("reports/xarf.jsonl"), examples=60),
        Target("unbound", unbound, _seeds("fuzz/unbound/*")),
    )
}
