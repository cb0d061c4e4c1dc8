from __future__ import annotations

import csv
import itertools
import math
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from simwire import decode_pcap, path

from mamori.sim import RouterSpec, SimSummary, read_pcap, replay, scenario_config, simulate

CTIME = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}$")


def parse_detail(text: str) -> list[dict[str, str]]:
    """A tiny FreeRADIUS ``detail`` reader: header line, tab-indented pairs, blank line."""
    records: list[dict[str, str]] = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.split("\n")
        assert CTIME.match(lines[0]), lines[0]
        rec = {"_header": lines[0]}
        for line in lines[1:]:
            assert line.startswith("\t"), line
            k, v = line[1:].split(" = ", 1)
            rec[k] = v.strip('"')
        records.append(rec)
    return records


def test_radius_detail(small: SimSummary) -> None:
    recs = parse_detail(path(small, "radius_detail").read_text())
    assert len(recs) == small.counts["radius_records"]
    kinds = {r["Acct-Status-Type"] for r in recs}
    assert kinds == {"Start", "Interim-Update", "Stop"}
    state: dict[str, str] = {}
    holder: dict[str, str] = {}
    last = 0
    for r in recs:
        for k in (
            "Acct-Session-Id",
            "User-Name",
            "Framed-IP-Address",
            "Event-Timestamp",
            "NAS-IP-Address",
            "Timestamp",
        ):
            assert k in r
        ts = int(r["Timestamp"])
        assert ts >= last
        last = ts
        assert (
            datetime.strptime(r["Event-Timestamp"], "%b %d %Y %H:%M:%S UTC")
            .replace(tzinfo=UTC)
            .timestamp()
            == ts
        )
        sid, ip = r["Acct-Session-Id"], r["Framed-IP-Address"]
        kind = r["Acct-Status-Type"]
        if kind == "Start":
            assert sid not in state
            # an address is never held by two sessions at once
            assert ip not in holder, f"{ip} already held by {holder.get(ip)}"
            holder[ip] = sid
        else:
            assert state[sid] in ("Start", "Interim-Update")
            assert "Acct-Session-Time" in r
            if kind == "Stop":
                assert "Acct-Terminate-Cause" in r
                del holder[ip]
        state[sid] = kind


def test_kea_lease_csv(small: SimSummary) -> None:
    with path(small, "kea_leases").open() as fh:
        rows = list(csv.reader(fh))
    assert ",".join(rows[0]) == (
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,"
        "state,user_context,pool_id"
    )
    assert len(rows) - 1 == small.counts["kea_rows"]
    for r in rows[1:]:
        assert len(r) == 12
        assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", r[1])
        assert int(r[4]) >= int(r[3])
        assert r[5] in ("1", "2")


def test_cgnat_port_blocks(small: SimSummary) -> None:
    pat = re.compile(
        r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d cgn1 \(FPC Slot 1, PIC Slot 0\) "
        r"\{sp-1/0/0\}\[jservices-nat\]: JSERVICES_NAT_PORT_BLOCK_(ALLOC|RELEASE): "
        r"(100\.\d+\.\d+\.\d+) -> (\d+\.\d+\.\d+\.\d+):(\d+)-(\d+) 0x([0-9a-f]+)$"
    )
    held: dict[tuple[str, int], str] = {}
    lines = path(small, "cgnat_syslog").read_text().splitlines()
    assert len(lines) == small.counts["cgnat_lines"] > 0
    for line in lines:
        m = pat.match(line)
        assert m, line
        kind, inside, pub, lo, hi = (
            m.group(1),
            m.group(2),
            m.group(3),
            int(m.group(4)),
            int(m.group(5)),
        )
        assert hi - lo + 1 == 512 and lo >= 1024
        if kind == "ALLOC":
            assert (pub, lo) not in held
            held[(pub, lo)] = inside
        else:
            assert held.pop((pub, lo)) == inside


def test_export_packets_decode_and_match_summary(small: SimSummary) -> None:
    stats = decode_pcap(path(small, "pcap"))
    for r in small.routers:
        st = stats[(r.exporter_ip, r.source_id)]
        assert st.protocol == r.protocol
        assert st.packets == r.export_packets
        assert st.sampling == {r.sampling}, "sampling rate announced"
        if r.protocol == "sflow5":
            assert st.samples == r.samples
        else:
            assert (st.records, st.pkts, st.octets) == (r.records, r.packets, r.octets)
            assert st.templates >= 1 + (r.export_packets - 1) // 20


def test_sampling_thins_packets_binomially(tmp_path: Path) -> None:
    routers = (
        RouterSpec(name="b1", protocol="netflow9", sampling=100, source_id=1),
        RouterSpec(name="b2", protocol="ipfix", sampling=1000, source_id=2, port=4739,
                   exporter_ip="127.0.1.2"),
        RouterSpec(name="b3", protocol="sflow5", sampling=10_000, source_id=3, port=6343,
                   exporter_ip="127.0.1.3"),
        RouterSpec(name="dc", role="dc", protocol="ipfix", sampling=1, source_id=4, port=4739,
                   exporter_ip="127.0.1.4"),
    )  # fmt: skip
    s = simulate(scenario_config("small", routers=routers), tmp_path, seed=5)
    stats = decode_pcap(path(s, "pcap"))
    for r in s.routers:
        st = stats[(r.exporter_ip, r.source_id)]
        assert st.sampling == {r.sampling}
        expected = r.packets_seen / r.sampling
        got = st.samples if r.protocol == "sflow5" else st.pkts
        assert abs(got - expected) <= 5 * math.sqrt(expected) + 1, (r.name, got, expected)
        assert sum(r.by_label.values()) == (st.samples if r.protocol == "sflow5" else st.records)
        if r.sampling > 1 and r.protocol != "sflow5":
            assert r.records < r.flows_seen


def test_pcap_is_classic_ethernet_to_loopback(tiny: SimSummary) -> None:
    raw = path(tiny, "pcap").read_bytes()
    assert raw[:4] == bytes.fromhex("d4c3b2a1")  # little-endian classic pcap
    pkts = list(read_pcap(path(tiny, "pcap")))
    assert len(pkts) == tiny.counts["export_packets"]
    assert {p.dst for p in pkts} == {"127.0.0.1"}
    assert {p.dport for p in pkts} <= {2055, 4739, 6343}
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(pkts))


@pytest.mark.parametrize("key", ["unbound_resolver1", "unbound_resolver2"])
def test_unbound_log_lines(small: SimSummary, key: str) -> None:
    pat = re.compile(r"^\[\d{10}\] unbound\[\d+:0\] info: \d+\.\d+\.\d+\.\d+ \S+\. A IN$")
    lines = path(small, key).read_text().splitlines()
    assert lines and all(pat.match(x) for x in lines)


def test_feeds_formats(small: SimSummary) -> None:
    feodo = [x for x in path(small, "feodo").read_text().splitlines() if not x.startswith("#")]
    assert feodo[0] == '"first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"'
    assert len(feodo) - 1 == small.counts["feodo_entries"]
    import json

    bundle = json.loads(path(small, "stix").read_text())
    assert bundle["type"] == "bundle"
    kinds = defaultdict(int)
    for o in bundle["objects"]:
        kinds[o["type"]] += 1
        assert o["spec_version"] == "2.1"
        if o["type"] == "indicator":
            assert o["pattern_type"] == "stix" and o["pattern"].startswith("[")
    assert kinds["indicator"] == small.counts["stix_indicators"]


def test_replay_sends_every_payload_to_loopback(tiny: SimSummary) -> None:
    import socket
    import threading

    pkts = [p for p in read_pcap(path(tiny, "pcap")) if p.dport == 4739]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        got: list[bytes] = []

        def receive() -> None:
            while len(got) < len(pkts):
                got.append(rx.recv(65535))

        t = threading.Thread(target=receive)
        t.start()
        sent = replay(path(tiny, "pcap"), port=rx.getsockname()[1], only_ports=[4739], rate=2000)
        t.join(10)
    assert sent == len(pkts) == len(got)
    assert got == [p.payload for p in pkts]


def test_each_exporter_sends_in_sequence_and_time_order(small: SimSummary) -> None:
    last: dict[tuple[str, int], float] = {}
    for p in read_pcap(path(small, "pcap")):
        key = (p.src, p.dport)
        assert p.ts > last.get(key, 0.0)
        last[key] = p.ts
