"""Replay a labelled flow log (Zeek conn.log, Argus binetflow) through a real collector, as IPFIX
over a loopback UDP socket, into a store of its own; then run C&C discovery over it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from mamori.config import AddressPool, load_config
from mamori.detect.c2 import C2Params, run_c2
from mamori.governance import Governance
from mamori.ingest.collector import Collector, Listen, replaying
from mamori.ingest.flowlogs import ipfix_packets, read_flow_log, send_udp


def replay_and_detect(
    log: Path, plan: str, store: Path, *, shift_s: float = 0.0, params: C2Params | None = None
) -> tuple[int, int, list[dict[str, Any]]]:
    """(records sent, rows stored, findings best first) for ``log`` with ``plan`` as the ISP's
    own network."""
    flows = read_flow_log(log, shift_s=shift_s)
    conv = ipfix_packets(flows)
    cfg = load_config(overrides={"store": store}).model_copy(
        update={"address_plan": (AddressPool(name="lan", kind="dynamic", prefixes=(plan,)),)}
    )
    with Governance(cfg) as gov:
        collector = Collector(gov, replaying(cfg.collector.model_copy(
            update={"flush_interval_s": 0.2})))  # fmt: skip
        collector.start([Listen("127.0.0.1", 0)])
        port = collector.bound()[0].port
        worker = threading.Thread(target=collector.run, name="collector")
        worker.start()
        try:
            send_udp(conv.packets, "127.0.0.1", port)
            end = time.monotonic() + 20
            while collector.stats.rows_written < conv.records and time.monotonic() < end:
                time.sleep(0.1)
        finally:
            collector.request_stop()
            worker.join()
        rows = collector.stats.rows_written
        run = run_c2(gov, actor="test", methods=("correlation", "beacon"), params=params,
                     write=False)  # fmt: skip
        return conv.records, rows, run.findings.to_pylist()
