"""C&C discovery on real captures turned into NetFlow v9 by softflowd.

    PYTHONPATH=src .venv/bin/python bench/detect_real.py [--captures ../shared/data/captures]
        [--model PATH/c2-vN.joblib]

Each capture (Stratosphere's test-cc beacons, the Hide'n'Seek IoT botnet capture; see
../shared/data/PROVENANCE.md) is replayed by ``softflowd -r FILE -v 9 -A milli`` to a Mamori
collector listening on a free loopback port, into a store of its own, and ``detect_c2`` runs over
it with the default parameters — nothing here is tuned to these files. The address plan is the
capture's client network (CTU's 147.32.80.0/24 for test-cc, the home LAN 192.168.0.0/16 for the
IoT capture), as an ISP would configure its own. There are no feeds for these networks, so the
correlation method has no seeds; beacon (and learned, with ``--model``) run. Prints every finding.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from mamori.config import AddressPool, load_config
from mamori.detect.c2 import run_c2
from mamori.governance import Governance
from mamori.ingest.collector import Collector, Listen, replaying

CAPTURES = {
    "test-cc-capture-1.pcap": ("147.32.80.0/24", "141.193.213.21 (HTTPS beacon every 2 s)"),
    "test-cc-capture-2.pcap": ("147.32.80.0/24", "141.193.213.20 (beacon, 2-3 s jitter)"),
    "test7-malicious.pcap": ("192.168.0.0/16", "Hide'n'Seek peers (P2P botnet)"),
    "test8-malicious.pcap": ("192.168.0.0/16", "malicious capture"),
}


def softflowd(pcap: Path, port: int, work: Path, timeout_s: float = 60.0) -> None:
    """softflowd 1.1.0 reading a pcap only makes progress while its control socket is talked
    to, and may not exit at end of file (PROVENANCE.md): poll ``statistics`` until it exits, ask
    it to shut down past half the deadline, kill it past the deadline."""
    ctl = work / "ctl"
    proc = subprocess.Popen(
        ["softflowd", "-d", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", "9", "-A", "milli",
         "-c", str(ctl), "-p", str(work / "pid")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    start = time.monotonic()
    asked = False
    while proc.poll() is None:
        now = time.monotonic()
        subprocess.run(["softflowctl", "-c", str(ctl), "statistics"], capture_output=True,
                       timeout=10, check=False)  # fmt: skip
        if not asked and now - start > timeout_s / 2:
            subprocess.run(["softflowctl", "-c", str(ctl), "shutdown"], capture_output=True,
                           timeout=10, check=False)  # fmt: skip
            asked = True
        if now - start > timeout_s:
            proc.kill()
            break
        time.sleep(0.1)
    proc.wait(10)


def run_one(pcap: Path, plan: str, model: Path | None) -> tuple[int, list[dict[str, object]]]:
    with tempfile.TemporaryDirectory(prefix="sf", dir="/tmp") as tmp:  # short: a unix socket
        work = Path(tmp)
        cfg = load_config(overrides={"store": work / "store"}).model_copy(
            update={
                "address_plan": (AddressPool(name="clients", kind="dynamic", prefixes=(plan,)),)
            }
        )
        with Governance(cfg) as gov:
            # softflowd dates the records by the (old) capture: not broken clocks
            settings = replaying(cfg.collector.model_copy(update={"flush_interval_s": 0.5}))
            collector = Collector(gov, settings)
            collector.start([Listen("127.0.0.1", 0)])
            port = collector.bound()[0].port
            worker = threading.Thread(target=collector.run, name="collector")
            worker.start()
            softflowd(pcap, port, work)
            time.sleep(1.0)
            collector.request_stop()
            worker.join()
            records = collector.stats.rows_written
            methods: tuple[str, ...] = ("correlation", "beacon")
            if model is not None:
                d = gov.state_dir("models")
                shutil.copy(model, d / model.name)
                shutil.copy(model.with_suffix(".json"), d / model.with_suffix(".json").name)
                methods += ("learned",)
            run = run_c2(gov, actor="bench", methods=methods, write=False)
            return records, run.findings.to_pylist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captures", type=Path, default=Path("../shared/data/captures"))
    ap.add_argument("--model", type=Path)
    args = ap.parse_args()
    for name, (plan, truth) in CAPTURES.items():
        pcap = args.captures / name
        if not pcap.exists():
            print(f"{name}: missing")
            continue
        records, findings = run_one(pcap, plan, args.model)
        print(f"{name}: {records} flow records (softflowd v9), plan {plan}; known: {truth}")
        for f in findings:
            ev = json.loads(str(f["evidence"]))
            brief = {m: {k: v for k, v in e.items() if k in ("beaconing_hosts", "period_s",
                     "max_pair_score", "sampled_flows", "probability", "supporting_hosts")}
                     for m, e in ev.items() if isinstance(e, dict)}  # fmt: skip
            print(f"   {f['ip']}:{f['port']}/{f['protocol']} {f['method']} score {f['score']:.3f} "
                  f"{json.dumps(brief)}")  # fmt: skip
        if not findings:
            print("   (no findings)")


if __name__ == "__main__":
    main()
