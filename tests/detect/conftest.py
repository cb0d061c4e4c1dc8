"""A small synthetic ISP for the C&C detectors: popular CDNs and a resolver everybody uses, a
botnet whose hosts talk to listed and unlisted C&C servers, a scanning burst, a periodic benign
service, and a server inside our own address plan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mamori.config import MamoriConfig
from mamori.governance import Governance
from tests.conftest import make_config

#: this world's Internet is the documentation ranges, which C&C discovery never reports
#: elsewhere (as the simulator's)
TEST_INTERNET = {"c2": {"report_documentation": True}}


@pytest.fixture
def config(tmp_path: Path) -> MamoriConfig:
    return make_config(tmp_path / "store", detect=TEST_INTERNET)


T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
SPAN_S = 6 * 3600

HOSTS = [f"10.0.0.{i}" for i in range(1, 81)]
BOTS = HOSTS[:8]
CDNS = [f"203.0.113.{i}" for i in range(10, 16)]
RESOLVER = "203.0.113.53"
KNOWN_CC = [("203.0.113.100", 8080), ("203.0.113.101", 8080), ("203.0.113.102", 8080)]
UNKNOWN_CC = ("203.0.113.200", 7080)
BEACON_HOST = HOSTS[40]
BEACON_EP = ("203.0.113.150", 443)
RARE_SITE = ("203.0.113.77", 443)
OWN_SERVER = ("192.0.2.10", 8443)  # inside the plan's business-static pool
NTP = ("203.0.113.123", 123)


@dataclass
class Rows:
    cols: dict[str, list[object]]

    def add(self, src: str, dst: str, sport: int, dport: int, proto: int, at: float,
            packets: int, nbytes: int, flags: int, rate: int) -> None:  # fmt: skip
        t = T0 + timedelta(milliseconds=round(at * 1000))
        for k, v in (
            ("time_start", t), ("time_end", t + timedelta(seconds=1)), ("src_addr", src),
            ("dst_addr", dst), ("src_port", sport), ("dst_port", dport), ("protocol", proto),
            ("tcp_flags", flags), ("packets", packets), ("bytes", nbytes),
            ("sampling_rate", rate),
        ):  # fmt: skip
            self.cols[k].append(v)

    def exchange(self, host: str, ep: tuple[str, int], at: float, nbytes: int, rate: int = 1,
                 proto: int = 6) -> None:  # fmt: skip
        sport = 40000 + int(at) % 20000
        flags = 0 if proto == 17 else 0x1B
        self.add(host, ep[0], sport, ep[1], proto, at, 5, nbytes, flags, rate)
        self.add(ep[0], host, ep[1], sport, proto, at, 5, nbytes * 3, flags, rate)


def synthetic_flows(seed: int = 0, rate: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    r = Rows({k: [] for k in (
        "time_start", "time_end", "src_addr", "dst_addr", "src_port", "dst_port", "protocol",
        "tcp_flags", "packets", "bytes", "sampling_rate")})  # fmt: skip
    for h in HOSTS:
        for _ in range(30):  # browsing: CDNs by popularity
            cdn = CDNS[min(int(rng.exponential(1.5)), len(CDNS) - 1)]
            r.exchange(h, (cdn, 443), float(rng.uniform(0, SPAN_S)), int(rng.integers(500, 9000)))
        for _ in range(10):
            r.exchange(h, (RESOLVER, 53), float(rng.uniform(0, SPAN_S)), 80, proto=17)
        if rng.random() < 0.5:  # a periodic benign service many hosts use
            off = float(rng.uniform(0, 1024))
            for k in range(int(SPAN_S / 1024)):
                r.exchange(h, NTP, off + 1024 * k, 76, proto=17)
    for b in BOTS:
        off = float(rng.uniform(0, 300))
        for k in range(int(SPAN_S / 300)):
            at = off + 300 * k + float(rng.normal(0, 5))
            if k % 3 == 0:
                ip, port = KNOWN_CC[k // 3 % len(KNOWN_CC)]
                r.exchange(b, (ip, port), at, 520)
            else:
                r.exchange(b, UNKNOWN_CC, at, 520)
        for _ in range(40):  # scanning: SYNs to shared targets, never answered
            tgt = f"203.0.113.{int(rng.integers(160, 170))}"
            r.add(b, tgt, 50000, 23, 6, float(rng.uniform(0, SPAN_S)), 1, 40, 0x02, rate)
        r.exchange(b, OWN_SERVER, float(rng.uniform(0, SPAN_S)), 300)
    for k in range(int(SPAN_S / 600)):
        r.exchange(BEACON_HOST, BEACON_EP, 30 + 600 * k + float(rng.normal(0, 2)), 333)
    r.exchange(HOSTS[30], RARE_SITE, 100.0, 2000)
    r.exchange(BOTS[0], RARE_SITE, 200.0, 2000)
    t = pa.Table.from_pydict(r.cols)
    if rate > 1:  # keep about 1 in `rate` records, as a sampled exporter would
        keep = rng.random(t.num_rows) < min(1.0, 20.0 / rate)
        t = t.filter(pa.array(keep))
        t = t.set_column(
            t.column_names.index("sampling_rate"),
            "sampling_rate",
            pa.array([rate] * t.num_rows, pa.uint32()),
        )
    return t


def load_reputation(gov: Governance, entries: list[tuple[str, int, str]] | None = None) -> None:
    rows = entries if entries is not None else [(ip, p, "c2") for ip, p in KNOWN_CC]
    gov.write_registry(
        "reputation",
        pa.table(
            {
                "loaded": pa.array([T0] * len(rows), pa.timestamp("ms", tz="UTC")),
                "indicator_type": ["ip-port"] * len(rows),
                "ip": [e[0] for e in rows],
                "port": pa.array([e[1] for e in rows], pa.uint16()),
                "category": [e[2] for e in rows],
                "first_seen": pa.array(
                    [T0 - timedelta(days=1)] * len(rows), pa.timestamp("ms", tz="UTC")
                ),
            }
        ),
        "test",
        source="test",
    )


def load_world(gov: Governance, rate: int = 1, seed: int = 0) -> None:
    gov.write("M1", "flows", synthetic_flows(seed, rate), "collector")
    load_reputation(gov)
