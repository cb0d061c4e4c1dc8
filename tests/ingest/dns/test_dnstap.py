"""dnstap: Frame Streams files, damaged input, and a real Unbound writing to our socket."""

from __future__ import annotations

import io
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from mamori.governance import Governance
from mamori.ingest.dns import DnstapListener, ingest_dnstap_file
from mamori.ingest.dns.dnstap import DecodeStats, decode_messages, question
from mamori.ingest.dns.fstrm import (
    ACCEPT,
    FINISH,
    READY,
    START,
    STOP,
    ControlFrame,
    FrameError,
    control_frame,
    read_frames,
)
from mamori.sim.dnstap import client_query, dns_query, write_frame_stream
from tests.conftest import until
from tests.unbound_harness import DOMAIN, running_unbound

TS = pa.timestamp("ms", tz="UTC")
T = datetime(2026, 11, 2, 0, 0, tzinfo=UTC).timestamp()
CLIENTS = {"127.0.0.2": "sub-in", "127.0.0.3": "sub-out"}


def _msg(client: str, name: str, qtype: str = "A", port: int = 40000, ts: float = T) -> bytes:
    return client_query(
        ts,
        socket.inet_aton(client),
        port,
        socket.inet_aton("127.0.0.1"),
        name,
        qtype,
        7,
        b"id",
        b"v",
    )


@pytest.fixture
def consent_gov(gov: Governance) -> Governance:
    gov.write_registry(
        "allocations",
        pa.table(
            {
                "start": pa.array([datetime(2020, 1, 1, tzinfo=UTC)] * 2, TS),
                "addr": list(CLIENTS),
                "subscriber_id": list(CLIENTS.values()),
            }
        ),
        "test",
        source="csv",
    )
    gov.consent.set("sub-out", "M7", False, actor="test", channel="cli")
    return gov


def _stored(gov: Governance) -> list[tuple[str, str, int]]:
    rows = gov.open("M4", "dns_queries", ["client_addr", "qname", "qtype"], "test").arrow()
    return sorted(zip(*(rows.column(c).to_pylist() for c in rows.column_names), strict=True))


@pytest.mark.parametrize(
    ("name", "qtype", "expected"),
    [
        ("WWW.Example.COM", "A", ("www.example.com", 1)),
        ("example.com.", "AAAA", ("example.com", 28)),
        ("x.example", "TXT", ("x.example", 16)),
    ],
)
def test_question(name: str, qtype: str, expected: tuple[str, int]) -> None:
    assert question(dns_query(1, name, qtype)) == expected


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"\0" * 11, "shorter"),
        (struct.pack(">HHHHHH", 1, 0, 0, 0, 0, 0) + b"\0\0\1\0\1", "without a question"),
        (struct.pack(">HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1", "compressed"),
        (struct.pack(">HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x3fabcdefgh", "cut"),
    ],
)
def test_bad_messages_are_counted_not_fatal(wire: bytes, why: str) -> None:
    from mamori.sim.dnstap import _bytes, _uint

    bad = _uint(15, 1) + _bytes(
        14, _uint(1, 5) + _bytes(4, b"\x7f\0\0\2") + _uint(8, 1) + _bytes(10, wire)
    )
    stats = DecodeStats()
    batch = decode_messages(
        [_msg("127.0.0.2", "a.example"), bad, b"\xff\xff", _msg("127.0.0.2", "b.example")], stats
    )
    assert batch.qname == ["a.example", "b.example"]
    assert stats.malformed == 2
    assert why in stats.examples[0] and "frame 2" in stats.examples[0]
    assert "frame 3" in stats.examples[1]


def test_file_is_consent_filtered(consent_gov: Governance, tmp_path: Path) -> None:
    path = tmp_path / "r.dnstap"
    write_frame_stream(
        path,
        [
            _msg("127.0.0.2", "cc1.test.example", port=1111),
            _msg("127.0.0.3", "private.example", port=2222),
            _msg("127.0.0.2", "www.example", "AAAA"),
        ],
    )
    report = ingest_dnstap_file(consent_gov, path, "test")
    assert (report.queries, report.stored, report.malformed) == (3, 2, 0)
    assert _stored(consent_gov) == [
        ("127.0.0.2", "cc1.test.example", 1),
        ("127.0.0.2", "www.example", 28),
    ]


def test_cut_file_keeps_the_queries_before_the_damage(
    consent_gov: Governance, tmp_path: Path
) -> None:
    path = tmp_path / "cut.dnstap"
    write_frame_stream(path, [_msg("127.0.0.2", f"n{i}.example") for i in range(3)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])  # cut inside the last data frame + STOP
    report = ingest_dnstap_file(consent_gov, path, "test")
    assert report.error is not None and "cut inside a data frame" in report.error
    assert report.stored == 2


def test_control_frames_round_trip() -> None:
    stream = control_frame(START, (b"protobuf:dnstap.Dnstap",)) + struct.pack(">I", 3) + b"abc"
    stream += control_frame(STOP)
    frames = list(read_frames(io.BytesIO(stream)))
    assert frames == [ControlFrame(START, (b"protobuf:dnstap.Dnstap",)), b"abc", ControlFrame(STOP)]
    with pytest.raises(FrameError, match="not Frame Streams"):
        list(read_frames(io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))


def test_listener_handshake(consent_gov: Governance, tmp_path: Path) -> None:
    """The bidirectional handshake a resolver performs: READY → ACCEPT, START, data, STOP → FINISH."""
    path = tmp_path / "tap.sock"
    listener = DnstapListener(consent_gov, path, "test", flush_interval_s=0.1)
    listener.start()
    try:
        with _started_stream(path) as s:
            for client in ("127.0.0.2", "127.0.0.3"):
                m = _msg(client, "x.example")
                s.sendall(struct.pack(">I", len(m)) + m)
            s.sendall(control_frame(STOP))
            assert _read_control(s) == ControlFrame(FINISH)
        until(
            lambda: (listener.flush() or True) and listener.totals.queries == 2,
            limit_s=20.0,
            step_s=0.1,
        )
    finally:
        listener.close()
    assert listener.totals.stored == 1
    assert _stored(consent_gov) == [("127.0.0.2", "x.example", 1)]
    assert not path.exists()


def test_a_quiet_connection_is_stored_at_the_next_flush(
    consent_gov: Governance, tmp_path: Path
) -> None:
    """Frames of a connection that stays open but goes quiet are stored by the next flush, not
    held until another frame arrives (they are decoded in batches)."""
    path = tmp_path / "tap.sock"
    listener = DnstapListener(consent_gov, path, "test", flush_interval_s=0.1)
    listener.start()
    try:
        with _started_stream(path) as s:
            m = _msg("127.0.0.2", "quiet.example")
            s.sendall(struct.pack(">I", len(m)) + m)
            # the connection stays open, nothing more is sent
            until(
                lambda: (listener.flush() or True) and listener.totals.stored == 1,
                limit_s=20.0,
                step_s=0.1,
            )
            assert _stored(consent_gov) == [("127.0.0.2", "quiet.example", 1)]
    finally:
        listener.close()


@contextmanager
def _started_stream(path: Path) -> Iterator[socket.socket]:
    """A connection that did the resolver's side of the handshake: READY → ACCEPT, START."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(control_frame(READY, (b"protobuf:dnstap.Dnstap",)))
        assert _read_control(s) == ControlFrame(ACCEPT, (b"protobuf:dnstap.Dnstap",))
        s.sendall(control_frame(START, (b"protobuf:dnstap.Dnstap",)))
        yield s


def _read_control(s: socket.socket) -> ControlFrame:
    frame = next(read_frames(s.makefile("rb")))
    assert isinstance(frame, ControlFrame)
    return frame


def test_unbound_dnstap_reaches_the_store_for_consenting_clients_only(
    consent_gov: Governance, tmp_path: Path
) -> None:
    sock = tmp_path / "dnstap.sock"
    listener = DnstapListener(consent_gov, sock, "test", flush_interval_s=0.2)
    listener.start()
    dnstap = f"""dnstap:
  dnstap-enable: yes
  dnstap-bidirectional: yes
  dnstap-socket-path: "{sock}"
  dnstap-send-identity: yes
  dnstap-send-version: yes
  dnstap-log-client-query-messages: yes
"""
    try:
        with running_unbound(tmp_path / "ub", "", extra=dnstap) as ub:
            # Unbound connects in the background; query until its messages arrive
            def arrived() -> bool:
                ub.answer(f"benign.{DOMAIN}", "127.0.0.3")
                ub.answer(f"cc1.{DOMAIN}", "127.0.0.2")
                listener.flush()
                return listener.totals.stored > 0

            until(arrived, limit_s=30, step_s=0.1)
    finally:
        listener.close()
    stored = _stored(consent_gov)
    assert stored and {c for c, _, _ in stored} == {"127.0.0.2"}
    assert {q for _, q, _ in stored} == {f"cc1.{DOMAIN}"}
    assert listener.totals.queries > listener.totals.stored  # 127.0.0.3's were dropped
