"""Independent real tools accept what the simulator writes (`make test` installs them).

Debian packages: nfdump (nfcapd, nfdump), nfdump-sflow (sfcapd), tshark, fail2ban.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from simwire import path
from tests.conftest import free_port

from mamori.sim import RouterSpec, SimSummary, replay, scenario_config, simulate

pytestmark = pytest.mark.slow  # runs tshark, nfdump, sfcapd and fail2ban on simulated files


def _require(binary: str, package: str) -> None:
    """`make test` installs these from Debian; a missing tool is a failure, not a skip."""
    if not shutil.which(binary):
        pytest.fail(f"{binary} not installed: apt-get install -y {package}", pytrace=False)


def _collect(binary: str, pcap: Path, ports: list[int], tmp: Path) -> dict[str, int]:
    """Run nfcapd/sfcapd on 127.0.0.1, replay the pcap to it, stop it, read `nfdump -I`."""
    port = free_port(socket.SOCK_DGRAM)
    out = tmp / binary
    out.mkdir()
    proc = subprocess.Popen(
        [binary, "-w", str(out), "-p", str(port), "-b", "127.0.0.1", "-t", "3600", "-B", "4000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.7)
        replay(pcap, port=port, only_ports=ports, rate=5000)
        time.sleep(0.7)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    info = subprocess.run(
        ["nfdump", "-R", str(out), "-I"], capture_output=True, text=True, check=True
    ).stdout
    return {k: int(v) for k, v in re.findall(r"^(Flows|Packets|Bytes): (\d+)$", info, re.M)}


SAMPLED = (
    RouterSpec(name="b1", protocol="netflow9", sampling=10, source_id=1),
    RouterSpec(
        name="b2", protocol="ipfix", sampling=4, source_id=2, port=4739, exporter_ip="127.0.1.2"
    ),
    RouterSpec(
        name="b3", protocol="sflow5", sampling=8, source_id=3, port=6343, exporter_ip="127.0.1.3"
    ),
    RouterSpec(
        name="dc", role="dc", protocol="netflow9", sampling=1, source_id=4, exporter_ip="127.0.1.4"
    ),
)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> SimSummary:
    return simulate(
        scenario_config("small", routers=SAMPLED), tmp_path_factory.mktemp("sampled"), seed=9
    )


def test_nfdump_reads_netflow_v9_and_ipfix(sampled: SimSummary, tmp_path: Path) -> None:
    _require("nfcapd", "nfdump")
    got = _collect("nfcapd", path(sampled, "pcap"), [2055, 4739], tmp_path)
    flow_routers = [r for r in sampled.routers if r.protocol != "sflow5"]
    assert got["Flows"] == sum(r.records for r in flow_routers)
    # nfdump 1.7.1 stores the counters as exported (it does not scale by the announced rate)
    assert got["Packets"] == sum(r.packets for r in flow_routers)
    assert got["Bytes"] == sum(r.octets for r in flow_routers)


def test_sfcapd_stores_every_sflow_sample(sampled: SimSummary, tmp_path: Path) -> None:
    _require("sfcapd", "nfdump-sflow")
    got = _collect("sfcapd", path(sampled, "pcap"), [6343], tmp_path)
    (r,) = [r for r in sampled.routers if r.protocol == "sflow5"]
    assert got["Flows"] == r.samples
    assert got["Packets"] == r.samples * r.sampling  # sfcapd scales by the sampling rate


def test_tshark_dissects_without_malformed_packets(sampled: SimSummary) -> None:
    _require("tshark", "tshark")
    pcap = str(path(sampled, "pcap"))
    bad = subprocess.run(
        ["tshark", "-r", pcap, "-Y", "_ws.malformed || _ws.expert.severity >= warning"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert bad.strip() == ""
    fields = subprocess.run(
        [
            "tshark",
            "-r",
            pcap,
            "-T",
            "fields",
            "-e",
            "cflow.sampling_interval",
            "-Y",
            "cflow.sampling_interval",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {int(x) for f in fields for x in f.split(",")} == {10, 4, 1}
    n_sflow = subprocess.run(
        ["tshark", "-r", pcap, "-Y", "sflow"], capture_output=True, text=True, check=True
    ).stdout.count("\n")
    (r,) = [r for r in sampled.routers if r.protocol == "sflow5"]
    assert n_sflow == r.export_packets


@pytest.mark.parametrize(
    ("jail", "needle"),
    [("postfix[mode=auth]", "SASL LOGIN authentication"), ("dovecot", "auth failed")],
)
def test_fail2ban_filters_match_auth_failures(small: SimSummary, jail: str, needle: str) -> None:
    _require("fail2ban-regex", "fail2ban")
    log = path(small, "mail_log")
    out = subprocess.run(
        ["fail2ban-regex", str(log), jail], capture_output=True, text=True, check=True
    ).stdout
    matched = int(re.search(r"Lines: \d+ lines, \d+ ignored, (\d+) matched", out).group(1))  # type: ignore[union-attr]
    assert matched == log.read_text().count(needle) > 0


@pytest.mark.parametrize("k", [1, 2])
def test_dnstap_read_decodes_the_same_queries_as_the_unbound_log(small: SimSummary, k: int) -> None:
    _require("dnstap-read", "bind9-dnsutils")
    out = subprocess.run(
        ["dnstap-read", str(path(small, f"dnstap_resolver{k}"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    log = path(small, f"unbound_resolver{k}").read_text().splitlines()
    assert len(out) == len(log) == small.counts[f"dns_queries_resolver{k}"] > 0
    for tap, line in zip(out, log, strict=True):
        # "... CQ 10.16.0.9:50168 -> 10.0.0.53:53 UDP 39b edge2.cdn.example.net/IN/A"
        client_port, name = tap.split()[3], tap.split()[-1]
        _, _, _, client, qname, qtype, _ = line.split()
        assert client_port.rsplit(":", 1)[0] == client
        assert name == f"{qname.rstrip('.')}/IN/{qtype}"
