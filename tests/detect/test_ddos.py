"""DDoS detection (M13): the streaming engine on replayed exports (sampling, active timeouts),
attack types, carpet bombing, outbound floods, unknown rates, the detector over stored flows,
and the collector's stream."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mamori.detect.base import Window
from mamori.detect.ddos import (
    Attack,
    DdosEngine,
    DdosParams,
    DdosStream,
    attack_findings,
    parse_v4,
)
from mamori.detect.registry import build
from mamori.governance import AccessRefused, Governance
from tests.detect.ddos_replay import EPOCH, Flood, export

INSIDE = [ipaddress.ip_network("10.0.0.0/16")]
VICTIM = "10.0.5.5"


def run(floods: list[Flood], *, sampling: int, timeout: float, seed: int = 0,
        rate_known: bool = True, **params: object) -> list[Attack]:  # fmt: skip
    engine = DdosEngine(DdosParams(**params), INSIDE)  # type: ignore[arg-type]
    out = []
    for now, batch in export(floods, sampling=sampling, active_timeout=timeout, seed=seed,
                             rate_known=rate_known):  # fmt: skip
        out += engine.feed(batch, now=now)
    return out


def test_parse_v4_matches_ipaddress() -> None:
    rng = np.random.default_rng(3)
    ints = rng.integers(0, 2**32, 2000, dtype=np.uint64)
    text = [str(ipaddress.IPv4Address(int(x))) for x in ints]
    v, ok = parse_v4(pa.array(text))
    assert ok.all() and (v == ints).all()
    bad = ["256.1.1.1", "1.2.3", "1..2.3", "1.2.3.4.5", "2001:db8::1", "1.2.3.4.", "", None]
    v, ok = parse_v4(pa.array(["10.0.0.1", *bad]))
    assert ok.tolist() == [True] + [False] * len(bad) and int(v[0]) == (10 << 24) + 1


def _with_integers(batch: pa.Table, *, drop_every: int = 0) -> pa.Table:
    """The batch as the collector hands it over: the decoder's integers beside the text (null
    where IPv6, or every ``drop_every``-th row, as for sFlow rows, left to the text)."""
    for name in ("src_addr", "dst_addr"):
        ints = []
        for i, t in enumerate(batch.column(name).to_pylist()):
            a = ipaddress.ip_address(t)
            ints.append(int(a) if a.version == 4 and not (drop_every and i % drop_every == 0)
                        else None)  # fmt: skip
        batch = batch.append_column(name + "_v4", pa.array(ints, pa.uint32()))
    return batch


WITH_INTEGERS = {
    "inbound amplification": [Flood(VICTIM, 40_000, duration=60, proto=17, sport=53)],
    "outbound and carpet": [Flood("10.0.7.7", 30_000, duration=40, outbound=True),
                            Flood("10.0.9.0", 60_000, duration=40, spread_prefix=24)],
    "botnet": [Flood("198.51.100.1", 30_000, duration=40, botnet=True, sources=400)],
}  # fmt: skip


@pytest.mark.parametrize("floods", WITH_INTEGERS.values(), ids=WITH_INTEGERS.keys())
@pytest.mark.parametrize("drop_every", [0, 3])
def test_the_collectors_integers_give_the_same_attacks_as_text(floods: list[Flood],
                                                               drop_every: int) -> None:  # fmt: skip
    batches = export(floods, sampling=100, active_timeout=5.0)
    by_text, by_int = DdosEngine(DdosParams(), INSIDE), DdosEngine(DdosParams(), INSIDE)
    a = [x for now, b in batches for x in by_text.feed(b, now=now)]
    b = [x for now, t in batches for x in by_int.feed(_with_integers(t, drop_every=drop_every),
                                                      now=now)]  # fmt: skip
    assert a and [x.as_json() for x in a] == [x.as_json() for x in b]


@pytest.mark.parametrize(
    ("pps", "sampling", "timeout", "found_by"),
    [
        (50_000, 1, 1.0, 11.0),  # unsampled, 1 s timeout: the first record decides
        (5_000, 1, 1.0, 11.0),
        (5_000, 1000, 60.0, 70.0),  # 1/1,000, 60 s: the first record (at 60 s) decides
        (5_000, 1000, 10.0, 30.0),
        (50_000, 1000, 1.0, 11.0),
    ],
)
def test_floods_above_threshold_are_found_at_the_first_records(
    pps: float, sampling: int, timeout: float, found_by: float
) -> None:
    for seed in range(3):
        attacks = run([Flood(VICTIM, pps, start=10, duration=120)], sampling=sampling,
                      timeout=timeout, seed=seed, threshold_pps=2000)  # fmt: skip
        hosts = [a for a in attacks if a.scope == "host"]
        assert [(a.target, a.direction, a.kind) for a in hosts] == [(VICTIM, "inbound", "udp")]
        assert hosts[0].detected - EPOCH <= found_by
        assert 0 <= hosts[0].start - EPOCH <= 25  # spread back to when it began


@pytest.mark.parametrize(("sampling", "timeout"), [(1, 1.0), (1000, 60.0), (1000, 1.0)])
def test_below_threshold_is_never_an_attack_even_thinly_sampled(
    sampling: int, timeout: float
) -> None:
    """1,500 pps against 2,000: 1/1,000 sampling leaves 1.5 sampled packets a second, whose
    noise must not make an alarm (confidence_z)."""
    for seed in range(5):
        assert run([Flood(VICTIM, 1500, duration=180)], sampling=sampling, timeout=timeout,
                   seed=seed, threshold_pps=2000) == []  # fmt: skip


def test_spread_over_duration_not_arrival() -> None:
    """A 60 s record of a 5,000 pps flood is 5,000 pps for 60 s, not 300,000 in one second: a
    threshold of 10,000 is never crossed."""
    assert run([Flood(VICTIM, 5000, duration=120)], sampling=1, timeout=60.0,
               threshold_pps=10_000) == []  # fmt: skip


@pytest.mark.parametrize(
    ("flood", "kind"),
    [
        (Flood(VICTIM, 30_000, proto=6, flags=0x02, duration=30), "syn"),
        (Flood(VICTIM, 30_000, proto=6, flags=0x12, duration=30), "mixed"),  # SYN-ACK: not SYN
        (Flood(VICTIM, 30_000, proto=17, sport=123, duration=30), "amplification"),
        (Flood(VICTIM, 30_000, proto=1, duration=30), "icmp"),
        (Flood(VICTIM, 30_000, proto=17, duration=30), "udp"),
    ],
)
def test_attack_types(flood: Flood, kind: str) -> None:
    [a] = [a for a in run([flood], sampling=100, timeout=10.0) if a.scope == "host"]
    assert a.kind == kind
    assert a.pps == pytest.approx(30_000, rel=0.2)


def test_carpet_bombing_is_found_per_prefix() -> None:
    """256 addresses × 180 pps: no address crosses 20,000 pps, the /24 (46,080 pps) crosses
    twice that (prefix_factor 2)."""
    carpet = Flood("10.0.7.0", 256 * 180, duration=60, sources=256, spread_prefix=24)
    [a] = run([carpet], sampling=1, timeout=1.0)
    assert (a.target, a.scope, a.kind) == ("10.0.7.0/24", "prefix", "carpet")
    # a flood at one host is that host's attack, not also its prefix's
    one = run([Flood(VICTIM, 60_000, duration=30)], sampling=1, timeout=1.0)
    assert [(a.target, a.scope) for a in one] == [(VICTIM, "host")]


def test_an_inside_source_flooding_others() -> None:
    [a] = run([Flood("10.0.5.9", 30_000, outbound=True, duration=30)], sampling=100, timeout=10)
    assert (a.target, a.direction) == ("10.0.5.9", "outbound")


@pytest.mark.parametrize(("sampling", "timeout"), [(1, 1.0), (1000, 60.0)])
def test_an_outside_address_flooded_by_many_inside_sources(sampling: int, timeout: float) -> None:
    """200 subscribers' devices × 150 pps: no source crosses 20,000 pps, the outside victim
    (30,000 pps) does; at 1/1,000 with a 60 s active timeout too."""
    flood = Flood("198.51.100.7", 30_000, duration=120, sources=200, botnet=True)
    found = run([flood], sampling=sampling, timeout=timeout)
    assert [(a.target, a.scope, a.direction) for a in found] == [
        ("198.51.100.7", "remote", "outbound")
    ]
    assert found[0].detected - EPOCH <= timeout + 10
    # below the threshold it stays quiet
    quiet = Flood("198.51.100.8", 10_000, duration=120, sources=200, botnet=True)
    assert run([quiet], sampling=sampling, timeout=timeout) == []


def test_unknown_sampling_rate_adds_nothing() -> None:
    engine_attacks = run([Flood(VICTIM, 50_000, duration=30)], sampling=1000, timeout=1.0,
                         rate_known=False)  # fmt: skip
    assert engine_attacks == []


def test_each_attack_is_reported_once() -> None:
    attacks = run([Flood(VICTIM, 50_000, duration=120)], sampling=1, timeout=1.0)
    assert len([a for a in attacks if a.target == VICTIM]) == 1


def _store(gov: Governance, floods: list[Flood], tables: list[pa.Table] | None = None) -> None:
    if tables is None:
        tables = [b for _, b in export(floods, sampling=100, active_timeout=10.0)]
    if not tables:
        return
    t = pa.concat_tables(tables)
    ms = pa.timestamp("ms", tz="UTC")  # the store keeps milliseconds
    for c in ("time_start", "time_end"):
        i = t.schema.get_field_index(c)
        t = t.set_column(i, c, t.column(c).cast(ms, safe=False))
    gov.write("M1", "flows", t, "collector")


def test_detector_over_stored_flows(gov: Governance) -> None:
    _store(gov, [Flood(VICTIM, 40_000, duration=60, proto=17, sport=53)])
    run_ = build("ddos", {}).run(gov, Window(), actor="t")
    [f] = run_.findings.to_pylist()
    assert (f["kind"], f["method"], f["ip"], f["measure"]) == ("ddos", "amplification", VICTIM,
                                                                "M13")  # fmt: skip
    ev = json.loads(f["evidence"])
    assert ev["direction"] == "inbound" and ev["pps"] == pytest.approx(40_000, rel=0.2)
    assert gov.open("M13", "findings", None, "t").arrow().num_rows == 1
    # thresholds are data: [detect.ddos] raises it above the flood
    high = build("ddos", {"ddos": {"threshold_pps": 100_000, "threshold_mbps": 10_000}},
                 write=False)  # fmt: skip
    assert high.run(gov, Window(), actor="t").findings.num_rows == 0


def test_stream_is_authorised_and_writes_findings(gov: Governance) -> None:
    seen: list[Attack] = []
    stream = DdosStream(gov, "collector", on_attack=seen.append)
    entries = [e for e in gov.audit.entries() if e.event == "access"]
    assert entries[-1].measure == "M13" and json.loads(entries[-1].detail or "{}")["stream"]
    for _, batch in export([Flood(VICTIM, 40_000, duration=20)], sampling=100,
                           active_timeout=1.0):  # fmt: skip
        stream(batch)
    assert [a.target for a in seen if a.scope == "host"] == [VICTIM]
    assert gov.open("M13", "findings", None, "t").arrow().num_rows == len(seen)


def test_stream_refused_when_the_measure_is_off(tmp_path: Path) -> None:
    from tests.conftest import make_config

    cfg = make_config(tmp_path / "s", measures={"M13": False})
    with Governance(cfg) as gov, pytest.raises(AccessRefused):
        DdosStream(gov, "collector")


# per-prefix baselines: learnt for 240 s of flow time (10 s samples, 60 s warm-up) by one
# stream, which is then restarted; the new one is fed the test traffic
LEARN = {"baseline_interval_s": 10, "baseline_warmup_s": 60, "baseline_alpha": 0.2}
HEAVY = Flood("10.0.5.5", 30_000, duration=240, sources=20)  # above 20,000 pps, every day
QUIET = Flood("10.0.6.6", 400, duration=240, sources=20)
BASELINES = {
    "a heavy prefix's usual traffic is not an attack": (
        {}, [HEAVY], [Flood("10.0.5.5", 30_000, start=300, duration=60, sources=20)], [],
    ),
    "without baselines it is": (
        {"baseline": False}, [HEAVY],
        [Flood("10.0.5.5", 30_000, start=300, duration=60, sources=20)], ["10.0.5.5"],
    ),
    "a heavy prefix still alarms at 3 times its usual rate": (
        {}, [HEAVY], [Flood("10.0.5.5", 30_000, start=300, duration=60, sources=20),
                      Flood("10.0.5.9", 150_000, start=300, duration=60, sources=20)],
        ["10.0.5.9"],
    ),
    "a quiet prefix alarms earlier, above the floor": (
        {"baseline_floor": 0.25}, [QUIET],
        [Flood("10.0.6.7", 10_000, start=300, duration=60, sources=20)], ["10.0.6.7"],
    ),
    "not below the floor": (
        {"baseline_floor": 0.25}, [QUIET],
        [Flood("10.0.6.7", 3_000, start=300, duration=60, sources=20)], [],
    ),
    "with the default floor, not below the absolute thresholds": (
        {}, [QUIET], [Flood("10.0.6.7", 10_000, start=300, duration=60, sources=20)], [],
    ),
}  # fmt: skip


@pytest.mark.parametrize(("params", "learn", "test", "hosts"), BASELINES.values(),
                         ids=BASELINES.keys())  # fmt: skip
def test_per_prefix_baselines_survive_a_restart(
    gov: Governance, params: dict[str, object], learn: list[Flood], test: list[Flood],
    hosts: list[str],
) -> None:  # fmt: skip
    p = DdosParams(**{**LEARN, **params})
    first = DdosStream(gov, "collector", p, write=False)
    for _, batch in export(learn, sampling=10, active_timeout=1.0):
        first(batch)
    again = DdosStream(gov, "collector", p, write=False)  # a restart
    if p.baseline:
        assert again.engine.baseline is not None and first.engine.baseline is not None
        assert again.engine.baseline.keys.tolist() == first.engine.baseline.keys.tolist()
        assert len(again.engine.baseline.keys)
    for _, batch in export(test, sampling=10, active_timeout=1.0, seed=1):
        again(batch)
    assert sorted(a.target for a in again.attacks if a.scope == "host") == hosts


def test_stream_finds_the_senders_of_an_outbound_attack_as_detect_ddos_does(
    gov: Governance,
) -> None:
    """A botnet of 400 inside devices floods an outside address: the stream, once the
    collector has flushed, writes the same attack-source findings as the stored-flow detector."""
    from mamori.detect.ddos_sources import attack_sources

    batches = export([Flood("203.0.113.50", 40_000, duration=60, botnet=True, sources=40)],
                     sampling=100, active_timeout=5.0)  # fmt: skip
    stream = DdosStream(gov, "collector")
    stored = []
    for now, batch in batches:
        stream(batch)
        stored.append(batch)
        if now - batches[0][0] == 20:  # a flush mid-attack: its flows are not all there yet
            _store(gov, [], tables=stored)
            stored = []
            stream.flushed()
    _store(gov, [], tables=stored)
    assert [a.scope for a in stream.outbound] == ["remote"]
    stream.flushed(final=True)
    found = gov.open("M13", "findings", None, "t").arrow().to_pylist()
    streamed = sorted(f["ip"] for f in found if f["kind"] == "attack-source")
    [attack] = [f for f in found if f["kind"] == "ddos"]
    assert json.loads(attack["evidence"])["scope"] == "remote"
    # what detect ddos derives from the same stored flows and finding
    again = attack_sources(gov, attack_findings(stream.attacks), "t", write=False)
    assert streamed and streamed == sorted(again.column("ip").to_pylist())
    assert len(streamed) == stream.senders and not stream.outbound


@pytest.mark.parametrize(("cap", "dropped"), [(10_000, False), (100, True)])
def test_candidates_are_capped_and_the_heaviest_followed(cap: int, dropped: bool) -> None:
    """A flood spread over 300 addresses makes each a candidate at once; past max_candidates the
    ring does not grow (memory stays bounded), the rest are counted, and the heaviest target is
    still followed and found."""
    spread = [Flood(f"10.0.{10 + i // 200}.{i % 200 + 1}", 25_000, duration=30, sources=5)
              for i in range(300)]  # fmt: skip
    heavy = Flood(VICTIM, 400_000, duration=30, sources=5)
    engine = DdosEngine(DdosParams(max_candidates=cap), INSIDE)
    found: list[Attack] = []
    most = 0
    for now, batch in export([*spread, heavy], sampling=100, active_timeout=1.0):
        found += engine.feed(batch, now=now)
        most = max(most, len(engine.bins))
    assert VICTIM in {a.target for a in found}
    assert most <= cap
    assert (engine.candidates_dropped > 0) is dropped
    hosts = {a.target for a in found if a.scope == "host"}
    # uncapped, every flood is an attack; capped, only what was followed can be
    assert len(hosts) <= cap if dropped else len(hosts) == 301
