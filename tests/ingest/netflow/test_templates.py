from __future__ import annotations

import json
import struct

import pytest

from mamori.ingest.netflow import Datagram, FlowDecoder
from tests.ingest.netflow.packets import (
    bin_datagrams,
    ip4,
    ipfix,
    ipfix_options_template,
    ipfix_template,
    pcap_datagrams,
    set_,
)

T0 = 1_700_000_000


def restarted(dec: FlowDecoder) -> FlowDecoder:
    fresh = FlowDecoder()
    fresh.restore(json.loads(json.dumps(dec.state())))
    return fresh


def test_restart_keeps_templates_sampling_and_init_time() -> None:
    exp = "192.0.2.7"
    before = FlowDecoder()
    before.decode(
        [
            Datagram(
                exp,
                ipfix(
                    [
                        ipfix_options_template(400, [(302, 4)], [(305, 4)]),
                        set_(400, struct.pack("!II", 3, 100)),
                        ipfix_options_template(401, [(149, 4)], [(160, 8)]),
                        set_(401, struct.pack("!IQ", 5, (T0 - 60) * 1000)),
                        ipfix_template(300, [(8, 4), (12, 4), (302, 4), (22, 4), (21, 4)]),
                    ],
                    domain=5,
                ),
                T0,
            )
        ]
    )
    data = ipfix(
        [set_(300, ip4("10.0.0.1") + ip4("10.0.0.2") + struct.pack("!III", 3, 0, 1000))], domain=5
    )
    after = restarted(before)
    r = after.decode([Datagram(exp, data, T0 + 1)])
    (row,) = r.flows.to_pylist()
    assert row["sampling_rate"] == 100 and row["observation_domain"] == 5
    assert row["time_start"].timestamp() == T0 - 60 and row["time_end"].timestamp() == T0 - 59
    assert r.counters["templates.unknown"] == 0


@pytest.mark.parametrize("split", [10, 11])
def test_restart_mid_capture_decodes_like_one_run(split: int) -> None:
    dgs = pcap_datagrams("112-IPFIXv10-CISCO-options-map-reassignment__traffic-00.pcap")
    whole = FlowDecoder().decode(dgs).flows
    first = FlowDecoder()
    a = first.decode(dgs[:split]).flows
    b = restarted(first).decode(dgs[split:]).flows
    assert a.num_rows + b.num_rows == whole.num_rows
    key = ["src_addr", "dst_addr", "src_port", "dst_port", "time_start"]
    rows = sorted(a.to_pylist() + b.to_pylist(), key=lambda r: [r[k] for k in key])
    assert rows == sorted(whole.to_pylist(), key=lambda r: [r[k] for k in key])


def test_restart_on_softflowd_stream_without_templates() -> None:
    dgs = bin_datagrams("softflowd_v10_packets.bin.gz")
    first = FlowDecoder()
    first.decode(dgs[:50])
    # Keep only the data sets (set id >= 256) of the remaining packets.
    stripped = []
    for dg in dgs[50:]:
        p = dg.payload
        pos, sets = 16, []
        while pos < len(p):
            sid, n = struct.unpack_from("!HH", p, pos)
            if sid >= 256:
                sets.append(p[pos : pos + n])
            pos += n
        stripped.append(
            Datagram(dg.exporter, ipfix(sets, export=int.from_bytes(p[4:8], "big")), dg.received)
        )
    r = restarted(first).decode(stripped)
    expected = FlowDecoder().decode(dgs[50:])
    assert r.counters["templates.unknown"] == 0
    assert r.flows.num_rows == expected.flows.num_rows > 30_000
    assert r.flows.column("sampling_rate").null_count == 0


def test_restore_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="format"):
        FlowDecoder().restore({"format": 99})


def test_registry_bounds_templates_evicting_the_least_recently_announced() -> None:
    from collections import Counter

    from mamori.ingest.netflow.templates import FieldSpec, Template, TemplateRegistry

    reg = TemplateRegistry(max_per_exporter=10, max_total=25)
    counters: Counter[str] = Counter()
    t = Template(10, 256, (FieldSpec(8, 4),))
    for exporter in range(5):
        for tid in range(256, 268):
            reg.put((f"192.0.2.{exporter}", 10, 0, tid), t, float(exporter), counters)
    assert len(reg) == 25
    assert counters["templates.new"] == 60 and counters["templates.evicted"] == 35
    held = {
        (f"192.0.2.{e}", tid)
        for e in range(5)
        for tid in range(256, 268)
        if reg.entry((f"192.0.2.{e}", 10, 0, tid)) is not None
    }
    expected = {(f"192.0.2.{e}", tid) for e in (3, 4) for tid in range(258, 268)}
    expected |= {("192.0.2.2", tid) for tid in range(263, 268)}
    assert held == expected
    # A refresh makes a template recent again: the next new one evicts another.
    reg.put(("192.0.2.2", 10, 0, 263), t, 9.0, counters)
    reg.put(("192.0.2.9", 10, 0, 256), t, 9.0, counters)
    assert reg.entry(("192.0.2.2", 10, 0, 263)) is not None
    assert reg.entry(("192.0.2.2", 10, 0, 264)) is None


def test_sampling_state_goes_with_the_last_template_of_its_domain() -> None:
    from collections import Counter

    from mamori.ingest.netflow.templates import FieldSpec, Template, TemplateRegistry

    reg = TemplateRegistry(max_per_exporter=1)
    counters: Counter[str] = Counter()
    t = Template(10, 256, (FieldSpec(8, 4),))
    reg.put(("192.0.2.1", 10, 1, 256), t, 0.0, counters)
    reg.set_sampling(("192.0.2.1", 10, 1), None, 100)
    assert reg.sampling(("192.0.2.1", 10, 1)).default == 100
    reg.put(("192.0.2.1", 10, 2, 256), t, 0.0, counters)  # evicts domain 1's only template
    assert reg.sampling(("192.0.2.1", 10, 1)).default is None


def test_pending_bounded_in_bytes() -> None:
    from collections import Counter

    from mamori.ingest.netflow.templates import HeldSet, PendingSets

    pending = PendingSets(limit=1000, max_age_s=60, max_bytes=10_000)
    counters: Counter[str] = Counter()
    for i in range(30):
        pending.hold(HeldSet(("192.0.2.1", 10, 0, 256 + i), bytes(1000), 0, -1, 0.0), counters)
    assert len(pending) == 10 and counters["sets.pending_dropped"] == 20
    assert list(pending.release(("192.0.2.1", 10, 0, 256))) == []  # oldest went first
    assert len(list(pending.release(("192.0.2.1", 10, 0, 285)))) == 1
