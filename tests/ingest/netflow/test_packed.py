"""decode_packed (the vectorised datagram walk) gives exactly what the per-datagram path
(decode_reference) gives: the same rows (in any order), counters and decoder state."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamori.ingest.netflow import Datagram, FlowDecoder, PackedDatagrams
from mamori.ingest.netflow import fields as ie
from tests.ingest.netflow.packets import (
    bin_datagrams,
    ip4,
    ipfix,
    ipfix_options_template,
    ipfix_template,
    pcap_datagrams,
    set_,
    v5,
    v5_record,
    v9,
    v9_options_template,
    v9_template,
)
from tests.ingest.netflow.test_decoder import mutate

DATA = Path(__file__).resolve().parents[2] / "data" / "netflow"
PCAPS = sorted(p.name for p in DATA.glob("*.pcap"))
BINS = ["softflowd_v9_packets.bin.gz", "softflowd_v10_packets.bin.gz"]


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in table.column_names])


def _state(dec: FlowDecoder) -> tuple[object, int]:
    return dec.state(), len(dec.pending)


def assert_same(batches: Sequence[Sequence[Datagram]], **kw: object) -> Counter[str]:
    """Decode the batches with both paths (each with its own decoder, state carried between
    batches) and compare every batch's rows and counters, and the final state."""
    packed = FlowDecoder(**kw)  # type: ignore[arg-type]
    reference = FlowDecoder(**kw)  # type: ignore[arg-type]
    total: Counter[str] = Counter()
    for batch in batches:
        got = packed.decode_packed(PackedDatagrams.pack(batch))
        want = reference.decode_reference(batch)
        assert got.flows.schema == want.flows.schema
        assert _sorted(got.flows).equals(_sorted(want.flows))
        assert got.counters == want.counters
        got.flows.validate(full=True)
        total += got.counters
    assert _state(packed) == _state(reference)
    total.update({f"path.{k}": v for k, v in packed.path_stats.items()})
    return total


@pytest.mark.parametrize("name", PCAPS)
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_router_captures(name: str, size: int) -> None:
    dgs = pcap_datagrams(name)
    assert_same([dgs[i : i + size] for i in range(0, len(dgs), size)])


@pytest.mark.parametrize("name", BINS)
@pytest.mark.parametrize("size", [pytest.param(7, marks=pytest.mark.slow), 4096])
def test_softflowd_streams(name: str, size: int) -> None:
    dgs = bin_datagrams(name) * 3
    total = assert_same([dgs[i : i + size] for i in range(0, len(dgs), size)])
    assert total["errors.internal"] == 0
    assert total["records.v9"] + total["records.ipfix"] > 100_000
    # the common case takes the vectorised path: no datagram, and only options data sets, one
    # by one; every template set after the first few only refreshes
    assert total["path.datagrams.per_datagram"] == 0
    assert total["path.datagrams.vector"] == len(dgs)
    assert total["path.sets.data_python"] == total["records.options"]
    assert total["path.sets.template"] - total["path.sets.template_refresh_only"] == 5


def test_mixed_exporters_and_v5() -> None:
    v9s = bin_datagrams("softflowd_v9_packets.bin.gz", exporter="192.0.2.1")[:200]
    ipx = bin_datagrams("softflowd_v10_packets.bin.gz", exporter="192.0.2.2")[:200]
    rec = v5_record("10.0.0.1", "10.0.0.2", 1234, 80)
    v5s = [
        Datagram(e, v5([rec] * k, sampling=s), 1.7e9)
        for e, k, s in (("192.0.2.3", 3, 0x4000 | 10), ("192.0.2.4", 30, 0), ("192.0.2.3", 0, 0))
    ]
    mixed = [d for trio in zip(v9s, ipx, v5s * 70, strict=False) for d in trio]
    assert_same([mixed])


FIELDS4 = [
    (ie.SOURCE_IPV4_ADDRESS, 4),
    (ie.DESTINATION_IPV4_ADDRESS, 4),
    (ie.PROTOCOL_IDENTIFIER, 1),
]
FIELDS4B = [*FIELDS4, (ie.SOURCE_TRANSPORT_PORT, 2), (ie.DESTINATION_TRANSPORT_PORT, 2)]


def _data4(tid: int, n: int, extra: bytes = b"") -> bytes:
    rec = ip4("10.1.1.1") + ip4("10.2.2.2") + b"\x06" + extra
    return set_(tid, rec * n)


def test_template_changes_within_a_batch_and_a_datagram() -> None:
    e = "192.0.2.9"
    dgs = [
        Datagram(e, v9([_data4(300, 2)]), 1.0),  # before its template: held
        Datagram(e, v9([v9_template(300, FIELDS4), _data4(300, 3)]), 2.0),  # released
        Datagram(e, v9([_data4(300, 4)]), 3.0),
        Datagram(
            e, v9([_data4(300, 1), v9_template(300, FIELDS4B), _data4(300, 5, b"\0\1\0\2")]), 4.0
        ),
        Datagram(e, v9([_data4(300, 6, b"\0\1\0\2")]), 5.0),
        Datagram(e, v9([v9_template(300, FIELDS4)]), 6.0),  # back
        Datagram(e, v9([_data4(300, 7)]), 7.0),
        Datagram(e, v9([_data4(300, 2)], source_id=5), 8.0),  # other domain: unknown
        Datagram(
            e,
            ipfix([ipfix_template(400, FIELDS4), _data4(400, 2), set_(2, b"\x01\x90\0\0")]),
            9.0,
        ),  # template, data, withdrawal
        Datagram(e, ipfix([_data4(400, 3)]), 10.0),  # withdrawn: held
    ]
    total = assert_same([dgs, dgs])
    assert total["templates.replaced"] >= 2 and total["templates.withdrawn"] == 2


def test_sampling_options_within_a_batch() -> None:
    e = "192.0.2.10"
    opts = v9_options_template(
        256, [(1, 4)], [(ie.SAMPLING_INTERVAL, 4), (ie.SAMPLING_ALGORITHM, 1)]
    )
    ipx_opts = ipfix_options_template(
        257, [(ie.SAMPLER_ID, 1)], [(ie.SAMPLER_ID, 1), (ie.SAMPLING_INTERVAL, 4)]
    )
    fields = [*FIELDS4, (ie.SAMPLER_ID, 1)]
    dgs = [
        Datagram(e, v9([v9_template(300, FIELDS4), _data4(300, 2)]), 1.0),
        Datagram(e, v9([opts, set_(256, b"\0\0\0\0" + (100).to_bytes(4, "big") + b"\x01")]), 2.0),
        Datagram(e, v9([_data4(300, 3)]), 3.0),
        Datagram(
            e, v9([set_(256, b"\0\0\0\0" + (50).to_bytes(4, "big") + b"\x01"), _data4(300, 1)]), 4.0
        ),
        Datagram(e, ipfix([ipfix_template(300, fields), ipx_opts]), 5.0),
        Datagram(e, ipfix([_data4(300, 2, b"\x07")]), 6.0),
        Datagram(e, ipfix([set_(257, b"\x07\x07" + (64).to_bytes(4, "big"))]), 7.0),
        Datagram(e, ipfix([_data4(300, 2, b"\x07"), _data4(300, 1, b"\x08")]), 8.0),
    ]
    assert_same([dgs, dgs[2:], dgs])


def test_templates_expire_within_a_batch() -> None:
    e = "192.0.2.11"
    dgs = [
        Datagram(e, v9([v9_template(300, FIELDS4), _data4(300, 2)]), 1000.0),
        Datagram(e, v9([_data4(300, 3)]), 1005.0),
        Datagram(e, v9([_data4(300, 4)]), 1020.0),  # expired
        Datagram(e, v9([v9_template(300, FIELDS4), _data4(300, 1)]), 1021.0),
    ]
    assert_same([dgs, dgs[1:], [dgs[2]]], template_timeout_s=10.0)


def test_sflow_in_packed_batches() -> None:
    sflow = (DATA.parent / "pmacct_sfprobe_marked.bin").read_bytes()
    sdgs, pos = [], 0
    while pos < len(sflow):
        n = int.from_bytes(sflow[pos : pos + 2], "big")
        sdgs.append(Datagram("192.0.2.1", sflow[pos + 2 : pos + 2 + n], 1.0))
        pos += 2 + n
    nf = bin_datagrams("softflowd_v9_packets.bin.gz")[:50]
    total = assert_same([[*sdgs[:30], *nf, *sdgs[30:]]])
    assert total["packets.sflow"] == len(sdgs)


def test_pack_layout() -> None:
    dgs = [Datagram("a", b"xy", 1.0), Datagram("b", b"", 2.0), Datagram("a", b"zzz", 3.0)]
    p = PackedDatagrams.pack(dgs)
    assert p.data == b"xyzzz" and list(p.offsets) == [0, 2, 2] and list(p.lengths) == [2, 0, 3]
    assert [p.exporters[i] for i in p.exporter] == ["a", "b", "a"]
    assert p.received.dtype == np.float64 and list(p.received) == [1.0, 2.0, 3.0]
    assert FlowDecoder().decode_packed(PackedDatagrams.pack([])).flows.num_rows == 0
    with pytest.raises(ValueError):
        FlowDecoder().decode_packed(
            PackedDatagrams(b"x", p.offsets, p.lengths, p.exporter, p.exporters, p.received)
        )


REAL = [dg.payload for name in PCAPS for dg in pcap_datagrams(name)]
STREAMS = [bin_datagrams(name)[:120] for name in BINS]


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_mutated_batches(rng: random.Random) -> None:
    stream = rng.choice(STREAMS)
    start = rng.randrange(len(stream))
    base = [d.payload for d in stream[start : start + rng.randint(1, 60)]]
    base += [rng.choice(REAL) for _ in range(rng.randint(0, 10))]
    rng.shuffle(base) if rng.random() < 0.3 else None
    dgs = []
    for payload in base:
        if rng.random() < 0.2:
            payload = mutate(rng, payload)
        dgs.append(Datagram(f"192.0.2.{rng.randrange(3)}", payload, 1.7e9 + rng.random() * 50))
    cut = rng.randrange(len(dgs) + 1)
    timeout = rng.choice([1800.0, 20.0])
    assert_same([dgs[:cut], dgs[cut:], dgs], template_timeout_s=timeout)
