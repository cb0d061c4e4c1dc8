"""The sampling rule (mamori.ingest.sampling): override > exporter's rate > default > null, with 0
from the exporter meaning unknown, the same for NetFlow v5, v9, IPFIX and sFlow, over UDP and in
pcap replay."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mamori.config import CollectorConfig, MamoriConfig
from mamori.governance import Governance
from mamori.ingest.collector import Collector, Listen
from mamori.ingest.netflow import Datagram, FlowDecoder
from mamori.ingest.sampling import SamplingPolicy
from mamori.schemas import FLOWS
from mamori.sim.pcap import UdpPacket, write_pcap
from tests.ingest.netflow import packets as pk
from tests.ingest.netflow.test_v9 import DATA_FIELDS, SYSTEM
from tests.ingest.netflow.test_v9 import record as v9_record
from tests.ingest.test_sflow import datagram, ether, flow_sample, ipv4, raw_header, udp

OTHER = "203.0.113.99"  # an exporter nothing is about

# --- the rule, on a decoded batch ----------------------------------------------------------------

# (exporter's rate: None = said nothing, overrides, defaults) → stored rate, counters
RULE: list[tuple[int | None, dict[str, int], dict[str, int], int | None, dict[str, int]]] = [
    (100, {}, {}, 100, {}),
    (None, {}, {}, None, {"records.sampling_unknown": 1}),
    (0, {}, {}, None, {"records.sampling_unknown": 1}),  # 0 is unknown, never 1
    (100, {"E": 1000}, {}, 1000, {"overridden": 1, "override_differs": 1}),  # the override wins
    (1000, {"E": 1000}, {}, 1000, {"overridden": 1}),
    (None, {"E": 1000}, {}, 1000, {"overridden": 1}),
    (0, {"E": 1000}, {}, 1000, {"overridden": 1}),
    (None, {}, {"E": 64}, 64, {"defaulted": 1}),
    (0, {}, {"E": 64}, 64, {"defaulted": 1}),
    (100, {}, {"E": 64}, 100, {}),  # a default never beats what the exporter says
    (None, {"E": 1000}, {"E": 64}, 1000, {"overridden": 1}),
    (100, {"E": 1000}, {"E": 64}, 1000, {"overridden": 1, "override_differs": 1}),
    (100, {OTHER: 7}, {OTHER: 8}, 100, {}),  # settings for another exporter
    (None, {OTHER: 7}, {OTHER: 8}, None, {"records.sampling_unknown": 1}),
]
RULE_IDS = [
    f"said={said}-over={bool(o)}-default={bool(d)}-other={OTHER in o}" for said, o, d, *_ in RULE
]


def policy(exporter: str, overrides: dict[str, int], defaults: dict[str, int]) -> SamplingPolicy:
    def named(table: dict[str, int]) -> dict[str, int]:
        return {exporter if k == "E" else k: v for k, v in table.items()}

    return SamplingPolicy(named(overrides), named(defaults))


def counters_named(short: dict[str, int]) -> dict[str, int]:
    return {k if k.startswith("records.") else f"records.sampling_{k}": v for k, v in short.items()}


def sampling_counters(c: Counter[str]) -> dict[str, int]:
    return {k: v for k, v in c.items() if k.startswith("records.sampling_") and v}


def flows(exporters: Sequence[str | None], rates: Sequence[int | None]) -> pa.Table:
    n = len(rates)
    columns: dict[str, Any] = {f.name: pa.nulls(n, f.type) for f in FLOWS.arrow}
    columns["src_addr"] = columns["dst_addr"] = pa.array(["10.0.0.1"] * n)
    columns["exporter"] = pa.array(exporters, pa.string())
    columns["sampling_rate"] = pa.array(rates, pa.uint32())
    return pa.Table.from_pydict(columns, schema=FLOWS.arrow)


@pytest.mark.parametrize(("said", "overrides", "defaults", "want", "counted"), RULE, ids=RULE_IDS)
def test_rule(
    said: int | None,
    overrides: dict[str, int],
    defaults: dict[str, int],
    want: int | None,
    counted: dict[str, int],
) -> None:
    c: Counter[str] = Counter()
    out = policy("192.0.2.1", overrides, defaults).apply(flows(["192.0.2.1"], [said]), c)
    assert out.schema == FLOWS.arrow
    assert out.column("sampling_rate").to_pylist() == [want]
    assert sampling_counters(c) == counters_named(counted)


def test_rows_of_many_exporters_in_one_batch() -> None:
    exporters = ["192.0.2.1", "192.0.2.2", None, "2001:db8::1", "192.0.2.1", "192.0.2.3"]
    rates = [100, None, None, 0, None, 5]
    pol = SamplingPolicy({"192.0.2.1": 1000, "2001:DB8:0::1": 50}, {"192.0.2.2": 64})
    c: Counter[str] = Counter()
    table = flows(exporters, rates)
    # several chunks, as the collector's concatenated NetFlow + sFlow tables have
    out = pol.apply(pa.concat_tables([table.slice(0, 2), table.slice(2)]), c)
    assert out.column("sampling_rate").to_pylist() == [1000, 64, None, 50, 1000, 5]
    assert out.drop_columns(["sampling_rate"]).equals(table.drop_columns(["sampling_rate"]))
    assert sampling_counters(c) == {
        "records.sampling_overridden": 3,
        "records.sampling_override_differs": 1,
        "records.sampling_defaulted": 1,
        "records.sampling_unknown": 1,
    }


def test_nothing_configured_leaves_the_table_as_it_is() -> None:
    table = flows(["192.0.2.1", "192.0.2.1"], [100, None])
    c: Counter[str] = Counter()
    assert SamplingPolicy().apply(table, c) is table
    assert c == Counter({"records.sampling_unknown": 1})
    empty = FLOWS.arrow.empty_table()
    assert SamplingPolicy({"192.0.2.1": 5}).apply(empty, c) is empty


EXPORTERS = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::1:0:0:1", None]


def reference_rule(
    exporter: str | None, said: int | None, pol: SamplingPolicy, counted: Counter[str]
) -> int | None:
    """The rule, one row at a time, as the module docstring states it."""
    said = said or None
    over = pol.overrides.get(exporter) if exporter else None
    if over is not None:
        counted["records.sampling_overridden"] += 1
        counted["records.sampling_override_differs"] += said is not None and said != over
        return over
    if said is None and exporter and exporter in pol.defaults:
        counted["records.sampling_defaulted"] += 1
        return pol.defaults[exporter]
    counted["records.sampling_unknown"] += said is None
    return said


@given(
    rows=st.lists(
        st.tuples(st.sampled_from(EXPORTERS), st.sampled_from([None, 0, 5, 100])),
        min_size=1,
        max_size=40,
    ),
    runs=st.integers(1, 8),  # long runs of one exporter: the per-batch shortcut
    overrides=st.dictionaries(st.sampled_from(EXPORTERS[:4]), st.sampled_from([5, 1000])),
    defaults=st.dictionaries(st.sampled_from(EXPORTERS[:4]), st.sampled_from([5, 64])),
    cuts=st.lists(st.integers(0, 320), max_size=4),
)
def test_vectorised_rule_equals_the_rule_row_by_row(
    rows: list[tuple[str | None, int | None]],
    runs: int,
    overrides: dict[str, int],
    defaults: dict[str, int],
    cuts: list[int],
) -> None:
    rows = [r for r in rows for _ in range(runs)]
    pol = SamplingPolicy(overrides, defaults)
    table = flows([e for e, _ in rows], [r for _, r in rows])
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    chunked = pa.concat_tables([table.slice(a, b - a) for a, b in itertools.pairwise(bounds)])
    want_counted: Counter[str] = Counter()
    want = [reference_rule(e, r, pol, want_counted) for e, r in rows]
    counted: Counter[str] = Counter()
    out = pol.apply(chunked, counted)
    assert out.column("sampling_rate").to_pylist() == want
    assert sampling_counters(counted) == {k: v for k, v in want_counted.items() if v}


@pytest.mark.parametrize("rate", [0, -1, 1 << 32])
def test_bad_rates_are_refused(rate: int) -> None:
    with pytest.raises(ValueError, match="sampling rate"):
        SamplingPolicy({"192.0.2.1": rate})
    with pytest.raises(ValueError):
        CollectorConfig(sampling_defaults={"192.0.2.1": rate})


def test_config_canonicalises_exporter_addresses() -> None:
    cfg = CollectorConfig(
        sampling_overrides={"2001:DB8:0::1": 10}, sampling_defaults={"192.0.2.1": 20}
    )
    assert SamplingPolicy.from_config(cfg) == SamplingPolicy({"2001:db8::1": 10}, {"192.0.2.1": 20})
    with pytest.raises(ValueError, match="not an exporter IP address"):
        CollectorConfig(sampling_defaults={"router-1": 20})


# --- per protocol: what each decoder reports, then the rule --------------------------------------

# Each builder: (the exporter as stored, datagrams (UDP source, payload)) for one flow record whose
# exporter reports ``rate`` (None: says nothing about sampling at all).
Builder = Callable[[int | None], tuple[str, list[tuple[str, bytes]]]]
NF_SOURCE = "192.0.2.1"
IPFIX_SOURCE = "2001:db8::1"
SFLOW_AGENT = "192.0.2.9"


def v5_packet(rate: int | None) -> tuple[str, list[tuple[str, bytes]]]:
    header = 0 if rate is None else 0x4000 | rate
    return NF_SOURCE, [
        (NF_SOURCE, pk.v5([pk.v5_record("10.0.0.1", "10.0.0.2", 1, 2)], sampling=header))
    ]


def v9_packet(rate: int | None) -> tuple[str, list[tuple[str, bytes]]]:
    sets = [pk.v9_template(300, DATA_FIELDS)]
    if rate is not None:  # an options record for sampler 1 (the data record names sampler 1)
        sets[:0] = [
            pk.v9_options_template(400, SYSTEM, [(48, 1), (50, 4)]),
            pk.set_(400, struct.pack("!IBI", 0, 1, rate)),
        ]
    sets.append(pk.set_(300, v9_record("10.0.0.1", "10.0.0.2", 1, 2, sampler=1)))
    return NF_SOURCE, [(NF_SOURCE, pk.v9(sets))]


def ipfix_packet(rate: int | None) -> tuple[str, list[tuple[str, bytes]]]:
    fields: list[pk.Field] = [(8, 4), (12, 4)]
    body = pk.ip4("10.0.0.1") + pk.ip4("10.0.0.2")
    if rate is not None:  # samplingInterval in the data record itself
        fields.append((34, 4))
        body += struct.pack("!I", rate)
    return IPFIX_SOURCE, [
        (IPFIX_SOURCE, pk.ipfix([pk.ipfix_template(300, fields), pk.set_(300, body)]))
    ]


def sflow_packet(rate: int | None) -> tuple[str, list[tuple[str, bytes]]]:
    # sFlow always carries a rate: "says nothing" is 0. The stored exporter is the agent
    # address, not the UDP source, and the rule goes by what is stored.
    sample = flow_sample([raw_header(ether(ipv4(17, udp(53, 5353))))], rate=rate or 0)
    agent = socket.inet_aton(SFLOW_AGENT)
    return SFLOW_AGENT, [("198.51.100.7", datagram([sample], agent=agent))]


PROTOCOLS: dict[str, Builder] = {
    "v5": v5_packet,
    "v9": v9_packet,
    "ipfix": ipfix_packet,
    "sflow": sflow_packet,
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("said", "overrides", "defaults", "want", "counted"), RULE, ids=RULE_IDS)
def test_rule_per_protocol(
    protocol: str,
    said: int | None,
    overrides: dict[str, int],
    defaults: dict[str, int],
    want: int | None,
    counted: dict[str, int],
) -> None:
    exporter, dgs = PROTOCOLS[protocol](said)
    decoded = FlowDecoder().decode([Datagram(src, p, 1.7e9) for src, p in dgs])
    assert decoded.flows.num_rows == 1
    # the decoder reports what the exporter said, nothing more (0: null)
    assert decoded.flows.column("sampling_rate").to_pylist() == [said or None]
    assert decoded.flows.column("exporter").to_pylist() == [exporter]
    c: Counter[str] = Counter()
    (row,) = policy(exporter, overrides, defaults).apply(decoded.flows, c).to_pylist()
    assert row["sampling_rate"] == want
    assert sampling_counters(c) == counters_named(counted)


# --- the collector: UDP and pcap replay ---------------------------------------------------------

# Every protocol reports rate 100 for one record, and each exporter is configured differently.
SAID = 100
OVERRIDES = {NF_SOURCE: 1000, SFLOW_AGENT: 1000}  # v5, v9 and sFlow
DEFAULTS = {SFLOW_AGENT: 7, "192.0.2.10": 64}
EXPECTED = Counter(
    {
        (NF_SOURCE, 1000): 2,  # v5 and v9: the override wins over the exporter's 100
        (SFLOW_AGENT, 1000): 1,  # sFlow: the same rule (it used to keep the agent's rate)
        (IPFIX_SOURCE, SAID): 1,  # nothing configured: the exporter's rate
        ("192.0.2.10", 64): 1,  # sFlow agent sending rate 0: its configured default
        ("192.0.2.11", None): 1,  # rate 0 and nothing configured: unknown, never 1
    }
)
# NetFlow exporters are named by the UDP source the collector sees (sFlow ones by agent address):
# over loopback UDP, and in a pcap of IPv4 frames.
UDP_NAMES = {NF_SOURCE: "127.0.0.1", IPFIX_SOURCE: "127.0.0.2"}
PCAP_NAMES = {IPFIX_SOURCE: "192.0.2.2"}


def renamed(names: dict[str, str]) -> tuple[CollectorConfig, Counter[tuple[str, int | None]]]:
    """Collector settings and the expected stored (exporter, rate) rows, under ``names``."""
    settings = CollectorConfig(
        sampling_overrides={names.get(e, e): r for e, r in OVERRIDES.items()},
        sampling_defaults={names.get(e, e): r for e, r in DEFAULTS.items()},
    )
    return settings, Counter({(names.get(e, e), r): n for (e, r), n in EXPECTED.items()})


def export_stream(names: dict[str, str]) -> list[tuple[str, bytes]]:
    """(UDP source, payload) of every datagram: each protocol saying SAID, and two sFlow agents
    saying 0."""
    out: list[tuple[str, bytes]] = []
    for build in PROTOCOLS.values():
        out += build(SAID)[1]
    sample = flow_sample([raw_header(ether(ipv4(17, udp(53, 5353))))], rate=0)
    for agent in ("192.0.2.10", "192.0.2.11"):
        out.append(("198.51.100.7", datagram([sample], agent=socket.inet_aton(agent))))
    return [(names.get(src, src), p) for src, p in out]


def stored_rates(store: Path) -> Counter[tuple[str, int | None]]:
    rows: Counter[tuple[str, int | None]] = Counter()
    for f in sorted((store / "flows").rglob("part-*.parquet")):
        t = pq.read_table(f, columns=["exporter", "sampling_rate"])
        rows.update(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True))
    return rows


SAMPLING_COUNTERS = {
    "records.sampling_overridden": 3,
    "records.sampling_override_differs": 3,
    "records.sampling_defaulted": 1,
    "records.sampling_unknown": 1,
}


def write_exports_pcap(path: Path) -> None:
    stream = export_stream(PCAP_NAMES)
    write_pcap(
        path,
        [
            UdpPacket(1.7e9 + i, src, 40000, "192.0.2.100", 2055, p)
            for i, (src, p) in enumerate(stream)
        ],
    )


@pytest.mark.slow
def test_udp_collector_applies_one_rule_to_netflow_and_sflow(config: MamoriConfig) -> None:
    settings, want = renamed(UDP_NAMES)
    # the packets are dated 2023 whatever today is: not a broken exporter clock here
    settings = settings.model_copy(update={"export_clock_skew_s": 20 * 365 * 86400.0})
    gov = Governance(config)
    try:
        c = Collector(gov, settings)
        c.start([Listen("127.0.0.1", 0)])
        port = c.bound()[0].port
        runner = threading.Thread(target=c.run)
        runner.start()
        try:
            senders: dict[str, socket.socket] = {}
            for src, payload in export_stream(UDP_NAMES):
                s = senders.get(src)
                if s is None:  # every source address but 127.0.0.1 is an sFlow agent's UDP source
                    s = senders[src] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind((src if src.startswith("127.") else "127.0.0.3", 0))
                s.sendto(payload, ("127.0.0.1", port))
            for s in senders.values():
                s.close()
        finally:
            c.request_stop()  # the receiver drains the socket before it stops
            runner.join(60)
        assert not runner.is_alive()
    finally:
        gov.close()
    assert stored_rates(config.store) == want
    assert {k: c.stats.counters[k] for k in SAMPLING_COUNTERS} == SAMPLING_COUNTERS
    assert c.stats.by_exporter["192.0.2.11"]["sampling_unknown"] == 1
    assert "sampling_unknown" not in c.stats.by_exporter["192.0.2.10"]


def test_pcap_replay_applies_the_same_rule(config: MamoriConfig, tmp_path: Path) -> None:
    settings, want = renamed(PCAP_NAMES)
    write_exports_pcap(tmp_path / "exports.pcap")
    gov = Governance(config)
    try:
        stats = Collector(gov, settings).replay_pcap(tmp_path / "exports.pcap")
    finally:
        gov.close()
    assert stored_rates(config.store) == want
    assert {k: stats.counters[k] for k in SAMPLING_COUNTERS} == SAMPLING_COUNTERS


@pytest.mark.slow
def test_cli_sampling_flag_and_configured_defaults(tmp_path: Path) -> None:
    """``mamori collect --pcap … --sampling EXPORTER=RATE``, defaults from the TOML file."""
    _, want = renamed(PCAP_NAMES)
    write_exports_pcap(tmp_path / "exports.pcap")
    toml = tmp_path / "mamori.toml"
    toml.write_text(
        "[collector.sampling_defaults]\n" + "".join(f'"{e}" = {r}\n' for e, r in DEFAULTS.items())
    )
    flags = [a for e, r in OVERRIDES.items() for a in ("--sampling", f"{e}={r}")]
    store = tmp_path / "store"
    pcap = str(tmp_path / "exports.pcap")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mamori.cli",
            "collect",
            "--pcap",
            pcap,
            "--store",
            str(store),
            *flags,
        ],
        capture_output=True,
        check=False,
        env={**os.environ, "MAMORI_CONFIG": str(toml)},
    )
    assert r.returncode == 0, r.stderr
    assert stored_rates(store) == want
