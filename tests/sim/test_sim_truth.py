from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from simwire import decode_pcap, path

from mamori.sim import RouterSpec, SimSummary, scenario_config, simulate
from mamori.sim._net import ip, ntoa
from mamori.sim.flows import LABELS
from mamori.sim.traffic import generate
from mamori.sim.world import build_world


def _truth(s: SimSummary) -> dict:  # type: ignore[type-arg]
    return json.loads((Path(s.out) / "truth.json").read_text())


@pytest.mark.parametrize(("name", "seed"), [("tiny", 0), ("tiny", 1), ("small", 0), ("small", 4)])
def test_every_cc_endpoint_is_contacted_in_generated_flows(name: str, seed: int) -> None:
    w = build_world(scenario_config(name), seed)
    t = generate(w, seed)
    f = t.flows
    assert any(e["contacts"] for e in t.endpoints if e["family"] == "pc-emotet-like")
    for e in t.endpoints:
        hit = (f.dst == ip(e["ip"])) & (f.dport == e["port"]) & (f.inbound == 0)
        assert int(hit.sum()) == e["contacts"]
        if e["role"] == "cc" and e["family"] != "pc-emotet-like":
            assert hit.any(), e
        if e["role"] == "cc" and hit.any():
            label = {
                "iot-mirai-like": "iot-cc",
                "pc-emotet-like": "pc-cc",
                "stealth": "stealth-cc",
            }[e["family"]]
            assert (f.label[hit] == LABELS[label]).all()
            ts = f.start[hit]
            assert ts.min() >= e["_from"] - 1 and ts.max() <= e["_until"] + 1


def test_cc_endpoints_visible_in_unsampled_exports(tmp_path: Path) -> None:
    routers = (
        RouterSpec(name="b1", protocol="netflow9", source_id=1),
        RouterSpec(name="b2", protocol="ipfix", source_id=2, port=4739, exporter_ip="127.0.1.2"),
        RouterSpec(
            name="dc", role="dc", protocol="ipfix", source_id=3, port=4739, exporter_ip="127.0.1.3"
        ),
    )
    s = simulate(scenario_config("tiny", routers=routers), tmp_path, seed=1)
    seen = {(d, dp) for st in decode_pcap(path(s, "pcap")).values() for _, d, _, dp, _ in st.flows}
    endpoints = _truth(s)["endpoints"]
    # persistent C&C connections are always seen; rotating ones may be scheduled but unused
    assert all(e["contacts"] > 0 for e in endpoints
               if e["role"] == "cc" and e["family"] != "pc-emotet-like")  # fmt: skip
    for e in endpoints:
        if e["role"] == "cc" and e["contacts"]:
            assert (ip(e["ip"]), e["port"]) in seen, e


def test_infected_addresses_match_allocation_logs(small: SimSummary) -> None:
    truth = _truth(small)
    radius = path(small, "radius_detail").read_text()
    cgnat = path(small, "cgnat_syslog").read_text()
    kea = path(small, "kea_leases").read_text()
    assert truth["infected"]
    for inf in truth["infected"]:
        assert inf["addresses"], inf
        for a in inf["addresses"]:
            if a["inside_ip"]:
                assert f"{a['inside_ip']} -> {a['ip']}:{a['port_lo']}-{a['port_hi']}" in cgnat
            else:
                assert f"Framed-IP-Address = {a['ip']}\n" in radius or f"\n{a['ip']}," in kea


def test_truth_covers_every_hostile_behaviour(small: SimSummary) -> None:
    t = _truth(small)
    for key in (
        "iot_botnet",
        "pc_botnet",
        "stealth_botnet",
        "ddos",
        "reflection",
        "smtp",
        "vulnerable",
        "feeds",
        "infected",
        "endpoints",
        "routers",
    ):
        assert t[key], key
    assert t["ddos"]["spoofing"]
    assert any(r["static"] for r in t["reflection"]["reflectors"])
    assert t["smtp"]["compromised_accounts"][0]["auth_id"].endswith("@isp.example.jp")
    wrong = {w["ip"] for w in t["feeds"]["wrong_entries"]}
    assert wrong and not wrong & {e["ip"] for e in t["endpoints"]}
    feodo = path(small, "feodo").read_text()
    assert all(f'"{w}"' in feodo for w in wrong)
    for u in t["feeds"]["unlisted"]:
        assert f'"{u["ip"]}"' not in feodo or u["family"] != "pc-emotet-like"


def test_delayed_listing(small: SimSummary) -> None:
    t = _truth(small)
    delay = scenario_config("small").feeds.listing_delay_hours * 3600
    from datetime import datetime

    def ts(x: str) -> float:
        return datetime.strptime(x, "%Y-%m-%dT%H:%M:%SZ").timestamp()

    for d in t["feeds"]["delayed"]:
        assert abs(ts(d["listed_at"]) - ts(d["from"]) - delay) < 1


def test_reflectors_answer_from_customer_ranges() -> None:
    w = build_world(scenario_config("small"), 0)
    t = generate(w, 0)
    f = t.flows
    resp = f.label == LABELS["reflection-response"]
    srcs = {ntoa(int(x)) for x in np.unique(f.src[resp])}
    assert srcs <= {r["ip"] for r in t.truth["reflection"]["reflectors"]}
    assert set(np.unique(f.sport[resp]).tolist()) <= {53, 123}


def test_spoofed_sources_are_outside_the_isp() -> None:
    w = build_world(scenario_config("small"), 0)
    f = generate(w, 0).flows
    sp = f.label == LABELS["spoofed"]
    assert sp.any()
    assert ((f.src[sp] >> 17) == (ip("198.18.0.0") >> 17)).all()


def test_addresses_are_reassigned_over_time(tmp_path: Path) -> None:
    import re
    from collections import defaultdict

    s = simulate("small", tmp_path, seed=2, mean_session_hours=1.0)
    users: dict[str, set[str]] = defaultdict(set)
    for block in path(s, "radius_detail").read_text().split("\n\n"):
        a = re.search(r"Framed-IP-Address = (\S+)", block)
        u = re.search(r'User-Name = "(\S+)"', block)
        if a and u:
            users[a.group(1)].add(u.group(1))
    assert sum(len(v) > 1 for v in users.values()) > 5
    blocks = re.findall(r"JSERVICES_NAT_PORT_BLOCK_ALLOC: (\S+) -> (\S+)", path(s, "cgnat_syslog")
                        .read_text())  # fmt: skip
    holders: dict[str, set[str]] = defaultdict(set)
    for inside, block in blocks:
        holders[block].add(inside)
    assert any(len(v) > 1 for v in holders.values())
