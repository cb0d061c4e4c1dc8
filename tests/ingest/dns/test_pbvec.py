"""The vectorised dnstap decoder (pbvec + decode_messages) against the scalar reference decoder.

Every test compares the two on the same frames: rows, counters and logged examples must be equal,
whatever the input (random bytes, cut or repeated fields, odd varints, escaped names, IPv6).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamori.ingest.dns import dnstap
from mamori.ingest.dns.dnstap import DecodeStats, decode_messages, decode_messages_scalar
from mamori.sim.dnstap import _bytes, _key, _uint, _varint, client_query, dns_query

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _compare(frames: list[bytes], where: str = "") -> DecodeStats:
    s_vec, s_ref = DecodeStats(), DecodeStats()
    vec = decode_messages(frames, s_vec, where=where).raw().to_pylist()
    ref = decode_messages_scalar(frames, s_ref, where=where).raw().to_pylist()
    assert vec == ref
    assert s_vec == s_ref
    return s_vec


def _wire(name_wire: bytes, qtype: int = 1, qdcount: int = 1) -> bytes:
    return (
        struct.pack(">HHHHHH", 7, 0x0100, qdcount, 0, 0, 0)
        + name_wire
        + struct.pack(">HH", qtype, 1)
    )


def _labels(*labels: bytes) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\0"


def _frame(inner: bytes, outer_extra: bytes = b"") -> bytes:
    return _bytes(1, b"id") + outer_extra + _uint(15, 1) + _bytes(14, inner)


def _query(
    client: bytes = b"\x0a\0\0\1",
    wire: bytes | None = None,
    *,
    sec: bytes | None = None,
    extra: bytes = b"",
) -> bytes:
    wire = dns_query(1, "www.example.com") if wire is None else wire
    sec = _uint(8, 1_790_000_000) if sec is None else sec
    inner = (
        _uint(1, 5) + _bytes(4, client) + _bytes(5, b"\x7f\0\0\1") + _uint(6, 5353) + sec
        + _key(9, 5) + struct.pack("<I", 123_000) + _bytes(10, wire) + extra
    )  # fmt: skip
    return _frame(inner)


V6 = [
    "2001:db8::1",
    "::",
    "::1",
    "::ffff:192.0.2.1",  # IPv4-mapped: its text differs between Python versions
    "2001:db8:0:0:1:0:0:1",
    "fe80::1:0:0:0",
]


@pytest.mark.parametrize(
    ("label", "frames"),
    [
        ("plain", [_query()]),
        ("ipv6 clients", [_query(ipaddress.IPv6Address(a).packed) for a in V6]),
        ("ipv6 resolver", [_frame(_uint(1, 5) + _bytes(4, b"\1\2\3\4") + _bytes(5, bytes(16))
                                  + _uint(8, 9) + _bytes(10, dns_query(1, "a")))]),
        ("upper case", [_query(wire=dns_query(1, "WWW.Example.COM", "AAAA"))]),
        ("root name", [_query(wire=_wire(b"\0"))]),
        ("escaped bytes", [_query(wire=_wire(_labels(x))) for x in
                           (b"a b", b"a.b", b"a\\b", b"@", b"\xc3\xa9t\xc3\xa9", b"x\0y", b"$", b"_srv")]),
        ("name at 255 bytes", [_query(wire=_wire(_labels(*[b"a" * 63] * 3, b"b" * 61)))]),
        ("name over 255 bytes", [_query(wire=_wire(_labels(*[b"a" * 63] * 4)))]),
        ("compressed", [_query(wire=_wire(b"\xc0\x0c"))]),
        ("no question", [_query(wire=_wire(_labels(b"a"), qdcount=0))]),
        ("cut name", [_query(wire=_wire(b"\x3fabc")[:20])]),
        ("cut qtype", [_query(wire=_wire(_labels(b"abcd"))[:-3])]),
        ("short wire", [_query(wire=b"\0" * 16)]),
        ("huge time", [_query(sec=_uint(8, 1 << 62))]),
        ("time just in range", [_query(sec=_uint(8, 9_223_372_035))]),
        ("fixed64 time", [_query(sec=_key(8, 1) + struct.pack("<Q", 1_790_000_000))]),
        ("time as bytes", [_query(sec=_bytes(8, b"x"))]),
        ("no address", [_query(client=b"\1\2\3")]),
        ("repeated fields, last wins", [_query(extra=_uint(6, 1) + _bytes(4, b"\1\1\1\1")
                                               + _uint(6, 70000) + _uint(1, 5))]),
        ("type overwritten", [_query(extra=_uint(1, 6))]),
        ("message overwritten by varint", [_query() + _uint(14, 3)]),
        ("non-minimal varints", [_frame(b"\x88\x00\x85\x80\x80\x00" + _bytes(4, b"\1\2\3\4")
                                        + _uint(8, 5) + _bytes(10, dns_query(1, "a.b")))]),
        ("varint of 11 bytes", [_query(extra=_key(6, 0) + b"\xff" * 10 + b"\x01")]),
        ("varint of 2**64", [_query(extra=_key(6, 0) + b"\x80" * 9 + b"\x02")]),
        ("key of 2**64", [_query(extra=b"\x80" * 9 + b"\x02" + b"\x00")]),
        ("wire type 3", [_query(extra=_key(20, 3))]),
        ("cut fixed32", [_query(extra=_key(9, 5) + b"\1\2")]),
        ("length past the end", [_query(extra=_key(11, 2) + _varint(1000) + b"ab")]),
        ("empty frame", [b""]),
        ("not a message", [b"\xff\xff", b"\x00", _uint(14, 1)]),
        ("response", [_frame(_uint(1, 6) + _bytes(4, b"\1\2\3\4"))]),
    ],
)  # fmt: skip
def test_cases(label: str, frames: list[bytes]) -> None:
    good = _query(wire=dns_query(9, "good.example"))
    _compare([good, *frames, good])


def test_counts_of_a_mixed_stream() -> None:
    frames = [_query(), b"\xff", _query(ipaddress.IPv6Address("2001:db8::5").packed), _query()]
    stats = _compare(frames, where="f.dnstap ")
    assert (stats.frames, stats.queries, stats.malformed) == (4, 3, 1)
    assert stats.examples[0].startswith("f.dnstap frame 2: ")


def test_chunks_number_frames_across_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnstap, "CHUNK_FRAMES", 3)
    frames = [_query(), b"\xff"] * 5
    stats = _compare(frames)
    assert [e.split(":")[0] for e in stats.examples] == [f"frame {i}" for i in (2, 4, 6, 8, 10)]


def test_a_failing_stream_keeps_the_frames_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnstap, "CHUNK_FRAMES", 4)

    def frames() -> Iterator[bytes]:
        for i in range(6):
            yield _query(wire=dns_query(1, f"n{i}.example"))
        raise ValueError("stream cut")

    batch = dnstap.QueryBatch()
    with pytest.raises(ValueError, match="stream cut"):
        decode_messages(frames(), DecodeStats(), batch)
    assert batch.qname == [f"n{i}.example" for i in range(6)]


def test_simulator_messages() -> None:
    frames = [
        client_query(
            1.79e9 + i / 7,
            socket.inet_aton(f"10.{i % 256}.{i // 256 % 256}.{i % 7}"),
            i * 13 % 65536,
            socket.inet_aton("192.0.2.53"),
            f"h{i}.Example.org",
            ("A", "AAAA", "TXT", "MX")[i % 4],
            i,
            b"r",
            b"v",
        )
        for i in range(3000)
    ]
    stats = _compare(frames)
    assert stats.queries == 3000


# ---- random and damaged input (hypothesis) ----

LABEL = st.one_of(
    st.from_regex(rb"\A[a-zA-Z0-9_-]{1,20}\Z"),
    st.binary(min_size=1, max_size=63),
)
NAME_WIRE = st.one_of(
    st.lists(LABEL, max_size=6).map(lambda ls: _labels(*ls)),
    st.binary(max_size=40),
)
DNS_WIRE = st.builds(
    lambda name, qtype, qd, cut: _wire(name, qtype, qd)[: cut if cut is not None else None],
    NAME_WIRE,
    st.integers(0, 65535),
    st.sampled_from([1, 1, 1, 0, 2]),
    st.one_of(st.none(), st.integers(0, 60)),
)
# IPv6 addresses rich in zero groups (where the text compresses) and IPv4-mapped ones
GROUP = st.one_of(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0x10, 0xABC]), st.integers(0, 0xFFFF))
IPV6 = st.one_of(
    st.lists(GROUP, min_size=8, max_size=8).map(lambda g: struct.pack(">8H", *g)),
    st.binary(min_size=4, max_size=4).map(lambda a: bytes(10) + b"\xff\xff" + a),
)
ADDR = st.one_of(
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=16, max_size=16),
    IPV6,
    st.sampled_from([ipaddress.IPv6Address(a).packed for a in V6]),
    st.binary(max_size=20),
)
BIG = st.integers(0, (1 << 70) - 1)
VARINT_OF = st.one_of(st.integers(0, 70_000), BIG, st.just(5))


def _field(num: int, wire: int, value: int | bytes) -> bytes:
    if wire == 0:
        assert isinstance(value, int)
        return _key(num, 0) + _varint(value)
    if wire == 5:
        assert isinstance(value, int)
        return _key(num, 5) + struct.pack("<I", value & 0xFFFFFFFF)
    if wire == 1:
        assert isinstance(value, int)
        return _key(num, 1) + struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)
    assert isinstance(value, bytes)
    return _bytes(num, value)


FIELD = st.one_of(
    st.builds(lambda v: _field(1, 0, v), st.sampled_from([5, 5, 5, 6, 1, 1 << 66])),
    st.builds(lambda a: _field(4, 2, a), ADDR),
    st.builds(lambda a: _field(5, 2, a), ADDR),
    st.builds(lambda v: _field(6, 0, v), VARINT_OF),
    st.builds(lambda v: _field(8, 0, v), st.one_of(st.integers(0, 2**34), BIG)),
    st.builds(lambda w, v: _field(8, w, v), st.sampled_from([1, 5]), st.integers(0, 2**64 - 1)),
    st.builds(lambda v: _field(9, 5, v), st.integers(0, 2**32 - 1)),
    st.builds(lambda v: _field(9, 0, v), VARINT_OF),
    st.builds(lambda w: _field(10, 2, w), DNS_WIRE),
    st.builds(
        lambda n, w, v: _field(n, w, v if w != 2 else v.to_bytes(3, "big")),
        st.sampled_from([1, 2, 3, 7, 10, 11, 15, 17, 100, 4000]),
        st.sampled_from([0, 1, 2, 5]),
        st.integers(0, 2**24 - 1),
    ),
)
MESSAGE = st.lists(FIELD, max_size=14).map(b"".join)


@st.composite
def frames_(draw: st.DrawFn) -> bytes:
    inner = draw(MESSAGE)
    outer = draw(st.sampled_from(["normal", "twice", "none", "raw"]))
    if outer == "normal":
        frame = _frame(inner)
    elif outer == "twice":  # the last message field wins
        frame = _bytes(14, draw(MESSAGE)) + _frame(inner)
    elif outer == "none":
        frame = _bytes(1, inner)
    else:
        frame = inner
    damage = draw(st.sampled_from(["none", "none", "cut", "flip"]))
    if damage == "cut" and frame:
        frame = frame[: draw(st.integers(0, len(frame) - 1))]
    elif damage == "flip" and frame:
        i = draw(st.integers(0, len(frame) - 1))
        frame = frame[:i] + bytes([frame[i] ^ draw(st.integers(1, 255))]) + frame[i + 1 :]
    return frame


@pytest.mark.slow
@SETTINGS
@given(st.lists(frames_(), max_size=20))
def test_random_messages(frames: list[bytes]) -> None:
    _compare(frames)


@pytest.mark.slow
@SETTINGS
@given(st.lists(st.binary(max_size=60), max_size=20))
def test_random_bytes(frames: list[bytes]) -> None:
    _compare(frames)


@pytest.mark.slow
@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([0, 1]), DNS_WIRE), max_size=20))
def test_random_questions(items: list[tuple[int, bytes]]) -> None:
    _compare([_query(wire=w) if cut == 0 else _query(wire=w)[:-1] for cut, w in items])


@pytest.mark.parametrize(
    ("frames", "by_scalar"),
    [
        ([_query()] * 3, 0),
        ([_query(ipaddress.IPv6Address("2001:db8::1").packed), _query(b"\1\2\3\4")], 0),
        ([_query(wire=dns_query(1, "A-B_c.Example"))], 0),
        ([_query(wire=_wire(b"\0")), _query(sec=_key(8, 1) + struct.pack("<Q", 5))], 0),
        ([_query(extra=_uint(6, 1) + _uint(1, 5)), _frame(_uint(1, 6))], 0),
        ([_query(wire=_wire(_labels(b"a b"))), _query(), b"\xff"], 2),
        ([_query(extra=_key(6, 0) + b"\xff" * 10 + b"\x01"), _query(sec=_uint(8, 1 << 40))], 2),
    ],
)
def test_usual_messages_skip_the_scalar_decoder(
    monkeypatch: pytest.MonkeyPatch, frames: list[bytes], by_scalar: int
) -> None:
    calls: list[bytes] = []
    scalar = dnstap._decode_one

    def counted(frame: bytes) -> object:
        calls.append(frame)
        return scalar(frame)

    monkeypatch.setattr(dnstap, "_decode_one", counted)
    decode_messages(frames, DecodeStats())
    assert len(calls) == by_scalar


@pytest.mark.slow
@SETTINGS
@given(st.lists(IPV6, min_size=1, max_size=30))
def test_random_ipv6_clients(addrs: list[bytes]) -> None:
    stats = _compare([_query(a) for a in addrs])
    assert stats.queries == len(addrs)


def test_chunks_are_bounded_in_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [_query(wire=dns_query(1, f"n{i}.example")) for i in range(7)]
    monkeypatch.setattr(dnstap, "CHUNK_BYTES", len(frames[0]) + 1)  # two frames a chunk
    batch = decode_messages(iter(frames), DecodeStats())
    assert [c.num_rows for c in batch.chunks] == [2, 2, 2, 1]
    assert batch.qname == [f"n{i}.example" for i in range(7)]


def test_a_defect_of_the_vectorised_path_costs_no_data(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise IndexError("a bug")

    frames = [_query(), b"\xff", _query(wire=dns_query(1, "b.example"))]
    expected = DecodeStats()
    rows = decode_messages_scalar(frames, expected).raw()
    monkeypatch.setattr(dnstap.pbvec, "walk", broken)
    stats = DecodeStats()
    assert decode_messages(frames, stats).raw().equals(rows)
    assert stats == expected
    assert "vectorised decoding failed" in caplog.text
