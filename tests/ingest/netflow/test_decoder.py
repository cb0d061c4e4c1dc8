from __future__ import annotations

import logging
import random
from pathlib import Path

import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamori.ingest import netflow
from mamori.ingest.netflow import Datagram, DecodeResult, FlowDecoder
from mamori.schemas import FLOWS
from tests.ingest.netflow.packets import bin_datagrams, pcap_datagrams

FIXTURES = [
    "100-IPFIXv10-CISCO__traffic-00.pcap",
    "101-NFv9-CISCO-cust_primitives__traffic-00.pcap",
    "104-IPFIXv10-IPv6-CISCO-sampling_option__traffic-00.pcap",
    "106-IPFIXv10-HUAWEI-vrf_name__traffic-00.pcap",
    "112-IPFIXv10-CISCO-options-map-reassignment__traffic-00.pcap",
    "decoders_netflowlegacy_netflow_test.pcap",
    "decoders_netflow_netflow_test.pcap",
]
REAL = [dg.payload for name in FIXTURES for dg in pcap_datagrams(name)]
SOFTFLOWD = bin_datagrams("softflowd_v9_packets.bin.gz")[:60]


def test_public_surface() -> None:
    assert netflow.__all__ == ["Datagram", "DecodeResult", "FlowDecoder"]


def test_empty_batch_has_the_flows_schema() -> None:
    r = FlowDecoder().decode([])
    assert isinstance(r, DecodeResult) and r.flows.num_rows == 0
    assert r.flows.schema == FLOWS.arrow


def test_versions_told_apart_by_content() -> None:
    sflow = b"\x00\x00\x00\x05" + b"\x00" * 40
    r = FlowDecoder().decode(
        [Datagram("192.0.2.1", p, 0.0) for p in (sflow, b"\x00\x07garbage", b"", b"\x01")]
    )
    assert r.counters["packets.sflow"] == 1
    assert r.counters["errors.unknown_version"] == 3


def test_sflow_datagrams_decode_with_netflow_in_one_batch() -> None:
    from tests.ingest.netflow.packets import bin_datagrams

    sflow = (
        Path(__file__).resolve().parents[2] / "data" / "pmacct_sfprobe_marked.bin"
    ).read_bytes()
    sdgs, pos = [], 0
    while pos < len(sflow):
        n = int.from_bytes(sflow[pos : pos + 2], "big")
        sdgs.append(Datagram("192.0.2.1", sflow[pos + 2 : pos + 2 + n], 1.0))
        pos += 2 + n
    nf = bin_datagrams("softflowd_v9_packets.bin.gz")[:50]
    r = FlowDecoder().decode([*sdgs[:30], *nf, *sdgs[30:]])
    assert r.counters["packets.sflow"] == len(sdgs)
    assert r.counters["records.sflow"] == r.counters["sflow.flows"] > 300
    assert r.flows.schema == FLOWS.arrow
    assert r.flows.num_rows == r.counters["records.sflow"] + r.counters["records.v9"]
    assert r.counters["records.out"] == r.flows.num_rows


def test_sflow_rate_is_what_the_agent_sent() -> None:
    # Overrides are applied after decoding, for every protocol alike: tests/ingest/test_sampling.py
    sflow = (
        Path(__file__).resolve().parents[2] / "data" / "pmacct_sfprobe_marked.bin"
    ).read_bytes()
    n = int.from_bytes(sflow[:2], "big")
    r = FlowDecoder().decode([Datagram("192.0.2.1", sflow[2 : 2 + n], 1.0)])
    assert r.flows.num_rows
    assert set(r.flows.column("sampling_rate").to_pylist()) == {1}  # pmacct sent rate 1


def mutate(rng: random.Random, payload: bytes) -> bytes:
    b = bytearray(payload)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if op < 0.5 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.7:
            b = b[: rng.randrange(len(b) + 1)]
        elif op < 0.85 and len(b) > 4:  # corrupt a length-looking 16-bit word
            i = rng.randrange(len(b) - 1)
            b[i : i + 2] = rng.choice([b"\0\0", b"\xff\xff", b"\0\x04", b"\0\x01"])
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.binary(max_size=200), max_size=5),
    st.sampled_from([b"", b"\0\x05", b"\0\x09", b"\0\x0a"]),
)
def test_random_bytes_never_raise(blobs: list[bytes], prefix: bytes) -> None:
    r = FlowDecoder().decode([Datagram("192.0.2.1", prefix + b, 0.0) for b in blobs])
    assert r.flows.schema == FLOWS.arrow
    assert r.counters["errors.internal"] == 0


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_mutated_real_packets_never_raise(rng: random.Random) -> None:
    dgs = [
        Datagram(f"192.0.2.{rng.randrange(3)}", mutate(rng, rng.choice(REAL)), 0.0)
        for _ in range(10)
    ]
    r = FlowDecoder().decode(dgs)
    assert r.flows.schema == FLOWS.arrow
    assert r.counters["errors.internal"] == 0
    r.flows.validate(full=True)


@pytest.mark.slow
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_valid_packets_among_garbage_all_decode(rng: random.Random) -> None:
    expected = (
        FlowDecoder().decode([Datagram("127.0.0.1", p.payload, 1.7e9) for p in SOFTFLOWD]).flows
    )
    mixed: list[Datagram] = []
    for dg in SOFTFLOWD:
        mixed.append(dg)
        for _ in range(rng.randint(0, 2)):
            # garbage from other exporters, so it cannot overwrite this exporter's templates
            junk = mutate(rng, rng.choice(REAL))
            mixed.append(Datagram(f"198.51.100.{rng.randrange(4)}", junk, 1.7e9))
        # and plain random bytes from the same exporter
        noise = rng.choice([b"\0\x09", b"\0\x0a", b"\0\x05", b""]) + rng.randbytes(40)
        mixed.append(Datagram("127.0.0.1", noise, 1.7e9))
    got = FlowDecoder().decode(mixed).flows.filter(pc.field("exporter") == "127.0.0.1")
    key = [
        ("src_addr", "ascending"),
        ("dst_addr", "ascending"),
        ("src_port", "ascending"),
        ("dst_port", "ascending"),
        ("time_start", "ascending"),
        ("bytes", "ascending"),
    ]
    assert got.num_rows == expected.num_rows
    assert got.sort_by(key).equals(expected.sort_by(key))


def test_problems_are_logged_at_a_limited_rate(caplog: pytest.LogCaptureFixture) -> None:
    junk = [Datagram("192.0.2.1", b"\x00\x07" + bytes(30), 0.0)] * 500
    truncated = [Datagram("192.0.2.1", b"\x00\x09" + bytes(5), 0.0)] * 500
    with caplog.at_level(logging.WARNING, logger="mamori.ingest.netflow"):
        dec = FlowDecoder()
        r = dec.decode(junk + truncated)
        dec.decode(junk)
    assert r.counters["errors.unknown_version"] == 500
    assert r.counters["errors.truncated"] == 500
    assert len(caplog.records) == 2  # one per kind of problem, not one per packet


def test_records_without_addresses_are_counted_not_stored() -> None:
    from tests.ingest.netflow.packets import ipfix, ipfix_template, set_

    pkt = ipfix([ipfix_template(300, [(2, 4), (1, 4)]), set_(300, bytes(8) * 3)])
    r = FlowDecoder().decode([Datagram("192.0.2.1", pkt, 0.0)])
    assert r.flows.num_rows == 0 and r.counters["records.no_address"] == 3


def test_time_bounds_refuse_records_far_from_the_exporter_clock_by_kind() -> None:
    """With TimeBounds (the collector's), records far before / after their packet's export time,
    and every record of a packet whose export time is far from its receive time, are refused and
    counted by kind; the per-datagram and the vectorised walks agree."""
    from mamori.ingest.netflow.batch import TimeBounds
    from tests.ingest.netflow.packets import v5, v5_record

    now = 1_700_000_000
    uptime = 200_000_000
    day = 86_400_000

    def rec(port: int, back_ms: int) -> bytes:
        return v5_record(
            "10.0.0.1", "10.0.0.2", 1, port, first=uptime - back_ms, last=uptime - back_ms
        )

    ok = v5([rec(1, 5_000), rec(2, day - 60_000)], uptime=uptime, secs=now)
    old = v5([rec(3, day + 60_000)], uptime=uptime, secs=now)
    ahead = v5([rec(4, -600_000)], uptime=uptime, secs=now)  # 10 minutes after the export
    clock = v5([rec(5, 5_000)], uptime=uptime, secs=now - 3 * 86_400)
    dgs = [Datagram("192.0.2.1", p, float(now)) for p in (ok, old, ahead, clock)]
    bounds = TimeBounds.from_seconds(86_400, 300, 86_400)
    for result in (
        FlowDecoder(time_bounds=bounds).decode(dgs),
        FlowDecoder(time_bounds=bounds).decode_reference(dgs),
    ):
        assert sorted(result.flows.column("dst_port").to_pylist()) == [1, 2]
        refused = {k: v for k, v in result.counters.items() if k.startswith("records.refused.")}
        assert refused == {
            "records.refused.before_export": 1,
            "records.refused.after_export": 1,
            "records.refused.export_clock": 1,
        }
    assert FlowDecoder().decode(dgs).flows.num_rows == 5  # no bounds: every record
