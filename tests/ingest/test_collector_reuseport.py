"""Two collectors (two groups) share one UDP port with SO_REUSEPORT and write into one store:
every record is stored once, and both collectors took some of the exporters (source ports)."""

from __future__ import annotations

import socket
import threading
import time

from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.ingest.collector import Collector, Listen
from tests.ingest.test_collector_hostile import v5_now

EXPORTERS = 32  # source ports: the chance that all hash to one socket is 2 × 2⁻³²
RECORDS = 5


def _records(c: Collector) -> int:
    return sum(v.get("records", 0) for v in list(c.stats.by_exporter.values()))


def test_two_collectors_share_a_port_and_one_store(config: MamoriConfig) -> None:
    settings = config.collector.model_copy(update={"reuse_port": True, "flush_interval_s": 0.2})
    with Governance(config) as gov:
        collectors = [Collector(gov, settings, group=g) for g in ("east", "west")]
        collectors[0].start([Listen("127.0.0.1", 0)])
        port = collectors[0].bound()[0].port
        collectors[1].start([Listen("127.0.0.1", port)])
        workers = [threading.Thread(target=c.run) for c in collectors]
        for w in workers:
            w.start()
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(EXPORTERS)]
        try:
            for _ in range(3):
                for i, s in enumerate(senders):
                    s.sendto(v5_now(RECORDS, first_port=1000 + i * 10), ("127.0.0.1", port))
                time.sleep(0.05)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                got = sum(_records(c) for c in collectors)
                if got >= EXPORTERS * RECORDS * 3:
                    break
                time.sleep(0.1)
        finally:
            for s in senders:
                s.close()
            for c in collectors:
                c.request_stop()
            for w in workers:
                w.join()
        per = [_records(c) for c in collectors]
        assert all(per), per  # both collectors took exporters
        assert sum(per) == EXPORTERS * RECORDS * 3
        grant = gov.open("M1", "flows", ["time_start"], "test")
        stored = grant.sql(f"SELECT count(*) FROM {grant.name}").fetchall()[0][0]
        assert stored == EXPORTERS * RECORDS * 3
