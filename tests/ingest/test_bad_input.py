"""Every file format Mamori ingests answers damage alike — one table, through the command line.

The rules (README, "Loading files"):

* a line that is not UTF-8 text, holds a NUL byte, or is longer than 1 MiB is bad: it is counted
  with its line number (an entry of a JSON document: its entry number) and the rest is kept;
* a UTF-8 byte-order mark is accepted;
* exit 0 when something was read; 1 when nothing could be — an empty file, a file that is not
  text (binary, UTF-16), or one in which no record is usable; 2 when the file as a whole is not
  of the format (tested by each format's own tests).

Each format is given a small good file and one record in it to damage (``poison``, at ``at``);
each case derives its file from the good one, and the expected answer from the good file's.
"""

from __future__ import annotations

import json
import random
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
from typer.testing import CliRunner

from mamori.cli import app
from mamori.ingest.dns.fstrm import START, STOP, control_frame
from mamori.sim.dnstap import client_query

DATA = Path(__file__).resolve().parents[1] / "data"
TEN_MB = 10 * 1024 * 1024
runner = CliRunner()


@dataclass(frozen=True)
class Answer:
    """What the command said: exit status, records read, bad records and where they are."""

    code: int
    kept: int
    bad: int
    where: frozenset[int]
    text: str


def _json_out(stdout: str) -> Any:
    return json.loads(stdout[stdout.index("{") :]) if "{" in stdout else None


def _alloc(code: int, stdout: str, text: str) -> Answer:
    r = _json_out(stdout)
    if r is None:
        return Answer(code, 0, 0, frozenset(), text)
    where = {int(m) for ex in r["examples"].get("malformed", []) for m in _LINE.findall(ex)}
    return Answer(code, r["sessions"], r["malformed"], frozenset(where), text)


def _feed(code: int, stdout: str, text: str) -> Answer:
    r = _json_out(stdout)
    if r is None:
        return Answer(code, 0, 0, frozenset(), text)
    where = frozenset(e["line"] for e in r["errors"])
    return Answer(code, r["rows_loaded"], r["rows_bad"], where, text)


def _report(code: int, stdout: str, text: str) -> Answer:
    r = _json_out(stdout)
    if r is None:
        return Answer(code, 0, 0, frozenset(), text)
    where = frozenset(b["line"] for b in r["bad"])
    return Answer(code, r["stored"] + r["duplicates"], len(r["bad"]), where, text)


def _dns(code: int, stdout: str, text: str) -> Answer:
    r = _json_out(stdout)
    if r is None:
        return Answer(code, 0, 0, frozenset(), text)
    where = {int(m) for ex in r["examples"] for m in _POS.findall(ex)}
    return Answer(code, r["queries"], r["malformed"], frozenset(where), text)


_LINE = re.compile(r"^line (\d+)")
_POS = re.compile(r"^(?:line|frame) (\d+)")


# --------------------------------------------------------------------------- good files


def _unbound_log() -> bytes:
    lines = [
        "[1793577600] unbound[1:0] notice: init module 0: validator",
        "[1793577600] unbound[1:0] info: 10.0.0.1 a.example. A IN",
        "[1793577601] unbound[1:0] info: 10.0.0.2 b.example. AAAA IN",
        "[1793577602] unbound[1:0] info: 10.0.0.3 c.example. MX IN",
        "[1793577603] unbound[1:0] info: 10.0.0.4 cut.exam",
        "[1793577604] unbound[1:0] info: 10.0.0.5 e.example. A IN",
    ]
    return ("\n".join(lines) + "\n").encode()


def _dnstap() -> bytes:
    ct = b"protobuf:dnstap.Dnstap"
    frames = [
        client_query(
            1793577600.0 + i,
            socket.inet_aton(f"10.0.0.{i + 1}"),
            40000 + i,
            socket.inet_aton("127.0.0.1"),
            f"q{i}.example",
            "A",
            7,
            b"id",
            b"v",
        )
        for i in range(4)
    ]
    body = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    return control_frame(START, (ct,)) + body + control_frame(STOP)


def _frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of the data frames of a Frame Streams file."""
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        if n == 0:
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "big")
            continue
        out.append((pos + 4, n))
        pos += 4 + n
    return out


def _damage_dnstap(case: str, data: bytes) -> bytes:
    """Frame 3 made of bytes no message is ("non-utf8"), or a 10 MB frame before it."""
    start, n = _frames(data)[2]
    if case == "non-utf8":
        return data[:start] + b"\xff" * n + data[start + n :]
    if case == "long-line":
        return data[: start - 4] + TEN_MB.to_bytes(4, "big") + b"\0" * TEN_MB + data[start - 4 :]
    return CASES[case](FORMATS[-1], data)


def _read(rel: str) -> Callable[[], bytes]:
    return lambda: (DATA / rel).read_bytes()


# --------------------------------------------------------------------------- the formats


@dataclass(frozen=True)
class Format:
    id: str
    command: tuple[str, ...]  # the CLI words before the file
    good: Callable[[], bytes]  # the good file
    poison: bytes  # a piece of one good record, found once in the file
    at: int  # that record's line (JSON document: entry) number
    kept: int  # records read from the good file
    bad: int  # bad records in the good file (each format's fixtures have a few)
    read: Callable[[int, str, str], Answer]
    lost: int = 1  # records lost when ``poison`` is damaged
    binary: bool = False  # not a text format: the text rules do not apply
    document: bool = False  # one JSON document: entries, not lines (no line length)
    damage: Callable[[str, bytes], bytes] | None = None  # how a binary format is damaged
    also: frozenset[int] = field(default_factory=frozenset)  # also bad once damaged


def _alloc_cmd(fmt: str) -> tuple[str, ...]:
    return ("ingest", "allocations", "--format", fmt, "--json")


def _feed_cmd(fmt: str) -> tuple[str, ...]:
    return ("ingest", "reputation", "--format", fmt, "--json")


def _report_cmd(fmt: str) -> tuple[str, ...]:
    return ("ingest", "report", "--kind", "infected", "--format", fmt, "--json")


# fmt: off
FORMATS = [
    # allocations; a RADIUS record without its address is bad too (``also``)
    Format("radius", _alloc_cmd("radius"), _read("allocations/radius-detail"),
           b"Framed-IP-Address = 10.16.0.20", 90, 7, 2, _alloc, also=frozenset({85})),
    Format("kea", _alloc_cmd("kea"), _read("allocations/kea-leases4.csv"),
           b"02:5a:00:00:00:0d", 7, 4, 2, _alloc),
    Format("cgnat-syslog", _alloc_cmd("cgnat-syslog"), _read("allocations/cgnat.log"),
           b"100.64.0.48", 8, 4, 2, _alloc),
    Format("allocations-csv", _alloc_cmd("csv"), _read("allocations/allocations.csv"),
           b"192.0.2.11", 3, 4, 6, _alloc),
    # the subscriber directory
    Format("subscribers", ("ingest", "subscribers", "--json"), _read("allocations/subscribers.csv"),
           b"u0000003@isp", 4, 3, 1, _alloc),
    # reputation feeds
    Format("feodo-csv", _feed_cmd("feodo"), _read("reputation/feodo-ipblocklist.csv"),
           b"198.51.100.20", 11, 3, 3, _feed),
    Format("feodo-json", _feed_cmd("feodo"), _read("reputation/feodo-ipblocklist.json"),
           b"198.51.100.20", 2, 2, 2, _feed, document=True),
    Format("urlhaus", _feed_cmd("urlhaus"), _read("reputation/urlhaus.csv"),
           b"dl.first-stage.example", 11, 3, 1, _feed),
    Format("threatfox-csv", _feed_cmd("threatfox"), _read("reputation/threatfox.csv"),
           b"cc.bad-actor.example", 11, 3, 2, _feed),
    Format("threatfox-json", _feed_cmd("threatfox"), _read("reputation/threatfox.json"),
           b"cc.bad-actor.example", 2, 2, 1, _feed, document=True),
    Format("plain", _feed_cmd("plain"), _read("reputation/plain-blocklist.txt"),
           b"cnc.plain-list.example", 4, 5, 2, _feed),
    Format("stix", _feed_cmd("stix"), _read("reputation/stix-bundle.json"),
           b"a1000000-0000-4000-8000-000000000002", 5, 4, 2, _feed, document=True),
    Format("misp", _feed_cmd("misp"), _read("reputation/misp-event.json"),
           b"cc.emotet-epoch5.example", 3, 6, 1, _feed, document=True),
    # third-party reports
    Format("shadowserver", _report_cmd("shadowserver"), _read("reports/event4_sinkhole.csv"),
           b"10.16.0.94", 3, 3, 3, _report),
    Format("report-csv", _report_cmd("csv"), _read("reports/scan_dns.csv"),
           b"10.48.0.11", 3, 2, 1, _report),
    Format("report-json", _report_cmd("json"), _read("reports/plain.json"),
           b"10.16.0.94", 2, 3, 3, _report),
    Format("xarf", _report_cmd("xarf"), _read("reports/xarf.jsonl"),
           b"2b0a5b1e-8f0c-4b7e-9d39-1f6a1c0b6e01", 1, 2, 1, _report),
    # resolver logs
    Format("unbound", ("ingest", "dns", "--format", "unbound", "--json"), _unbound_log,
           b"c.example", 4, 4, 1, _dns),
    Format("dnstap", ("ingest", "dns", "--format", "dnstap", "--json"), _dnstap,
           b"q2", 3, 4, 0, _dns, binary=True, damage=_damage_dnstap),
]
# fmt: on


# --------------------------------------------------------------------------- the damage

NOT_UTF8 = b"\xff\xfe\xc3("


def _once(data: bytes, piece: bytes, by: bytes) -> bytes:
    assert data.count(piece) == 1, piece
    return data.replace(piece, by)


def _utf16(data: bytes) -> bytes:
    try:
        return data.decode("utf-8").encode("utf-16")
    except UnicodeDecodeError:  # a binary format: some text instead
        return "a text file, not this format\n".encode("utf-16")


def _noise(_: bytes) -> bytes:
    return random.Random(15).randbytes(4096)


CASES: dict[str, Callable[[Format, bytes], bytes]] = {
    "good": lambda f, d: d,
    "non-utf8": lambda f, d: _once(d, f.poison, f.poison[:2] + NOT_UTF8 + f.poison[2:]),
    "long-line": lambda f, d: _once(d, f.poison, f.poison + b"x" * TEN_MB),
    "bom": lambda f, d: b"\xef\xbb\xbf" + d,
    "utf16": lambda f, d: _utf16(d),
    "binary": lambda f, d: _noise(d),
    "empty": lambda f, d: b"",
}


@dataclass(frozen=True)
class Expect:
    code: int
    kept: int | None = None  # None: nothing read
    bad: int | None = None
    where: frozenset[int] = frozenset()
    says: str = ""  # in the message (stdout + stderr), case-insensitive


def expected(f: Format, case: str) -> Expect:
    """The rules, per case (see the module docstring)."""
    if case in ("good", "bom") and not (f.binary and case == "bom"):
        return Expect(0, f.kept, f.bad)
    if case in ("non-utf8", "long-line"):
        if f.binary:  # a frame of damaged bytes is a malformed message; a 10 MB one ends the
            # stream (its length is the only way to find the next frame), the frames before kept
            if case == "non-utf8":
                return Expect(0, f.kept - f.lost, f.bad + 1, frozenset({f.at}))
            return Expect(1, f.at - 1, says="at byte")
        why = "not utf-8 text" if case == "non-utf8" else "longer than"
        if f.document and case == "long-line":
            why = ""  # a huge value is just not a valid one
        return Expect(0, f.kept - f.lost, None, frozenset({f.at}) | f.also, says=why)
    if case == "empty":
        return Expect(1, says="empty")
    if f.binary:  # a text file, a BOM, noise: not Frame Streams
        return Expect(1, says="not frame streams" if case != "binary" else "")
    if case == "utf16":
        return Expect(1, says="utf-16")
    return Expect(1, says="nothing stored")


@pytest.fixture(scope="module", autouse=True)
def _command_built_once() -> Iterator[None]:
    """Typer builds the whole command tree again for every invoke (most of each call's time);
    the table makes 133 calls of the same tree."""
    patch = pytest.MonkeyPatch()
    command = typer.main.get_command(app)
    patch.setattr(typer.testing, "_get_command", lambda _app: command)
    yield
    patch.undo()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the table: each answer is read from the command's report, not the store
    (a report stored twice counts as duplicates, which are counted as read)."""
    return tmp_path_factory.mktemp("bad-input") / "store"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fmt", FORMATS, ids=[f.id for f in FORMATS])
def test_bad_input(fmt: Format, case: str, store: Path, tmp_path: Path) -> None:
    path = tmp_path / f"input-{fmt.id}"
    damaged = fmt.damage(case, fmt.good()) if fmt.damage else CASES[case](fmt, fmt.good())
    path.write_bytes(damaged)
    result = runner.invoke(app, ["--store", str(store), *fmt.command, str(path)])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception  # never a traceback
    got = fmt.read(result.exit_code, result.stdout, result.output)
    want = expected(fmt, case)
    assert got.code == want.code, result.output[-2000:]
    if want.kept is not None:
        assert got.kept == want.kept, result.output[-2000:]
    else:
        assert got.kept == 0
    if want.bad is not None:
        assert got.bad == want.bad, result.output[-2000:]
    elif want.code == 0:  # one more bad record; a line format may count its record too
        assert got.bad >= fmt.bad + 1, result.output[-2000:]
    assert want.where <= got.where, (sorted(got.where), result.output[-2000:])
    assert want.says in result.output.lower(), result.output[-2000:]
    assert "Traceback" not in result.output
