"""Flow logs into IPFIX: what a router would have exported for each logged connection, read back
by the collector's own decoder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mamori.ingest.flowlogs import FlowLog, ipfix_packets, read_flow_log
from mamori.ingest.netflow.decoder import Datagram, FlowDecoder

ZEEK_HEAD = (
    "#separator \\x09\n#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration"
    "\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\n"
)
ARGUS_HEAD = "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,TotPkts,TotBytes,SrcBytes\n"
T = 1_700_000_000.0
ARGUS_T = datetime.fromtimestamp(T, UTC).strftime("%Y/%m/%d %H:%M:%S.%f")

# (log text, expected (src, dst, sport, dport, proto, flags, packets, bytes) per record, skipped)
CASES = {
    "zeek tcp exchange: both directions, flags from history": (
        ZEEK_HEAD + f"{T}\t10.0.0.5\t40000\t198.18.0.1\t443\ttcp\t2.0\tShADadFf\t6\t500\t5\t3000\n",
        [
            ("10.0.0.5", "198.18.0.1", 40000, 443, 6, 0x1B, 6, 500),
            ("198.18.0.1", "10.0.0.5", 443, 40000, 6, 0x1B, 5, 3000),
        ],
        0,
    ),
    "zeek unanswered SYN: one record, SYN only": (
        ZEEK_HEAD + f"{T}\t10.0.0.5\t40001\t198.18.0.2\t23\ttcp\t-\tS\t1\t44\t0\t0\n",
        [("10.0.0.5", "198.18.0.2", 40001, 23, 6, 0x02, 1, 44)],
        0,
    ),
    "zeek json, udp answered": (
        f'{{"ts": {T!r}, "id.orig_h": "10.0.0.5", "id.orig_p": 5000, "id.resp_h": "8.8.8.8", '
        '"id.resp_p": 53, "proto": "udp", "orig_pkts": 1, "orig_ip_bytes": 62, '
        '"resp_pkts": 1, "resp_ip_bytes": 90}\n',
        [
            ("10.0.0.5", "8.8.8.8", 5000, 53, 17, 0, 1, 62),
            ("8.8.8.8", "10.0.0.5", 53, 5000, 17, 0, 1, 90),
        ],
        0,
    ),
    "argus: packets shared by bytes, State per side, arp skipped": (
        ARGUS_HEAD + f"{ARGUS_T},1.5,tcp,10.0.0.7,40002,  ->,198.18.0.3,80,S_RA,2,100,60\n"
        f"{ARGUS_T},2.0,arp,0.0.0.0,,  who,10.0.0.1,,INT,3,126,126\n",
        [
            ("10.0.0.7", "198.18.0.3", 40002, 80, 6, 0x02, 1, 60),
            ("198.18.0.3", "10.0.0.7", 80, 40002, 6, 0x14, 1, 40),
        ],
        1,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_records_read_back_by_the_decoder(tmp_path: Path, case: str) -> None:
    text, expected, skipped = CASES[case]
    path = tmp_path / ("x.binetflow" if text.startswith("Start") else "conn.log")
    path.write_text(text)
    log = read_flow_log(path)
    assert log.skipped == skipped
    conv = ipfix_packets(log)
    flows = FlowDecoder().decode([Datagram("127.0.0.1", p, T) for p in conv.packets]).flows
    got = sorted(
        (r["src_addr"], r["dst_addr"], r["src_port"], r["dst_port"], r["protocol"],
         r["tcp_flags"], r["packets"], r["bytes"])
        for r in flows.to_pylist()
    )  # fmt: skip
    assert got == sorted(expected)
    assert {r["sampling_rate"] for r in flows.to_pylist()} == {1}
    assert {r["time_start"].timestamp() for r in flows.to_pylist()} == {T}


def test_long_connection_cut_at_the_active_timeout() -> None:
    """A 250 s connection at a 60 s active timeout: five records, nothing lost or made up."""
    log = FlowLog()
    log.add(T, 250.0, "10.0.0.5", "198.18.0.1", 40000, 443, 6, 0x18, 103, 51_234, 60.0)
    assert len(log) == 5
    assert sum(log.packets) == 103 and sum(log.octets) == 51_234
    assert log.start[0] == T and log.end[-1] == pytest.approx(T + 250.0)
    assert all(b - a == pytest.approx(50.0) for a, b in zip(log.start, log.end, strict=True))


def test_ipv6_and_many_records_span_messages() -> None:
    log = FlowLog()
    for i in range(300):
        log.add(T + i, 0.5, "2001:db8::5", "2001:db8:1::1", 1000 + i, 443, 6, 0x18, 2, 200, 60.0)
        log.add(T + i, 0.5, "10.0.0.5", "198.18.0.1", 1000 + i, 443, 6, 0x18, 2, 200, 60.0)
    conv = ipfix_packets(log)
    assert len(conv.packets) > 2 and all(len(p) <= 1400 for p in conv.packets)
    flows = FlowDecoder().decode([Datagram("127.0.0.1", p, T) for p in conv.packets]).flows
    assert flows.num_rows == 600
    assert sum(":" in a for a in flows.column("src_addr").to_pylist()) == 300
