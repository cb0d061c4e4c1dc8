"""Collector throughput: Mamori against nfcapd (nfdump), same packets, same run, one core each.

The export stream is softflowd's real NetFlow v9 / IPFIX output (../shared/data/flow-fixtures,
1,479 datagrams, 40,568 records), repeated until it holds ``--records`` records. For each receiver
the sender (on another core) paces the stream at increasing rates; a rate is *lossless* when every
record sent is stored. The figure is the highest lossless rate, in records/s.

    .venv/bin/python bench/collector.py [--records 3000000] [--version 9|10|both]

Also prints the in-memory decode rate of Mamori's decoder and, if the PyPI ``netflow`` package is
installed, of that package on the same datagrams, and Mamori's peak memory (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "data" / "flow-fixtures"
RECEIVER_CORE = "0"
SENDER_CORE = 1


def load_datagrams(version: int) -> list[bytes]:
    name = {9: "softflowd_v9_packets.bin", 10: "softflowd_v10_packets.bin"}[version]
    data = (FIXTURES / name).read_bytes()
    out, pos = [], 0
    while pos + 2 <= len(data):
        (n,) = struct.unpack_from("!H", data, pos)
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_sender(tmp: Path) -> Path:
    """Compile bench/tools/udpblast.c: a Python sender cannot offer more than ~1.5M records/s."""
    exe = tmp / "udpblast"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(ROOT / "bench/tools/udpblast.c")], check=True)
    return exe


def send(
    sender: Path, frames: Path, port: int, per_packet: float, rate: float, repeat: int
) -> float:
    """Send the frames file ``repeat`` times paced at ``rate`` records/s, from the other core;
    returns the seconds it took."""
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(SENDER_CORE),
            str(sender),
            str(frames),
            str(port),
            str(rate / per_packet),
            str(repeat),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip())


def peak_kib(pid: int) -> int:
    """Peak resident memory (VmHWM) of a process and its children (Mamori's receiver)."""
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0
    for p in [str(pid), *kids]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total


class Mamori:
    name = "mamori"

    def __init__(self, tmp: Path) -> None:
        self.store = tmp / "mamori-store"

    def start(self, port: int) -> subprocess.Popen[bytes]:
        shutil.rmtree(self.store, ignore_errors=True)
        cmd = [
            "taskset",
            "-c",
            RECEIVER_CORE,
            str(ROOT / ".venv/bin/mamori"),
            "collect",
            "--listen",
            f"udp://127.0.0.1:{port}",
            "--store",
            str(self.store),
            "--flush-interval",
            "2",
        ]
        # The recorded stream's times are not today's: widen the collector's clock checks.
        years = str(100 * 366 * 86400)
        env = {
            **os.environ,
            **{
                f"MAMORI_COLLECTOR__{k}": years
                for k in ("RECORD_BEFORE_EXPORT_S", "RECORD_AFTER_EXPORT_S", "EXPORT_CLOCK_SKEW_S")
            },
        }
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        assert proc.stderr is not None
        proc.stderr.readline()  # "listening on …"
        return proc

    def stored(self) -> int:
        stats = json.loads((self.store / "_state/collector/stats.json").read_text())
        return int(stats["rows_written"])


class Nfcapd:
    name = "nfcapd"

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "nfcapd"

    def start(self, port: int) -> subprocess.Popen[bytes]:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir()
        cmd = [
            "taskset",
            "-c",
            RECEIVER_CORE,
            "nfcapd",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(self.dir),
            "-B",
            str(16 << 20),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return proc

    def stored(self) -> int:
        out = subprocess.run(
            ["nfdump", "-R", str(self.dir), "-I"], capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            if line.startswith("Flows:"):
                return int(line.split()[1])
        return 0


def run_receiver(
    rx: Mamori | Nfcapd,
    sender: Path,
    frames: Path,
    repeat: int,
    per_packet: float,
    rate: float,
    total: int,
) -> tuple[bool, int, float, int]:
    port = free_port()
    proc = rx.start(port)
    try:
        took = send(sender, frames, port, per_packet, rate, repeat)
        time.sleep(1.0)  # let the receiver drain its socket buffer
        mem = peak_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    stored = rx.stored()
    return stored >= total, stored, total / took, mem


def decode_rate(stream: list[bytes], records: int) -> float:
    sys.path.insert(0, str(ROOT / "src"))
    from mamori.ingest.netflow.decoder import Datagram, FlowDecoder
    from mamori.ingest.sampling import SamplingPolicy

    dec = FlowDecoder()
    sampling = SamplingPolicy()  # the collector settles sampling rates after decoding
    counters: Counter[str] = Counter()
    dgs = [Datagram("127.0.0.1", p, 0.0) for p in stream]
    start = time.perf_counter()
    n = 0
    for i in range(0, len(dgs), 4096):
        n += sampling.apply(dec.decode(dgs[i : i + 4096]).flows, counters).num_rows
    took = time.perf_counter() - start
    assert n == records, (n, records)
    return n / took


def netflow_pkg_rate(stream: list[bytes]) -> float | None:
    try:
        import netflow  # type: ignore[import-not-found]
    except ImportError:
        return None
    templates: dict[str, dict[int, object]] = {"netflow": {}, "ipfix": {}}
    n = 0
    start = time.perf_counter()
    for p in stream:
        try:
            pkt = netflow.parse_packet(p, templates)
            n += len(pkt.flows)
        except Exception:
            continue
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--version", choices=["9", "10", "both"], default="both")
    ap.add_argument("--rates", default="250000,500000,1000000,1500000,2000000,2500000,3000000")
    args = ap.parse_args()
    if not shutil.which("nfcapd"):
        sys.exit("nfcapd not found: apt-get install nfdump")
    rates = [float(r) for r in args.rates.split(",")]
    versions = [9, 10] if args.version == "both" else [int(args.version)]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        sender = build_sender(tmp)
        for version in versions:
            base = load_datagrams(version)
            base_records = 40_568
            reps = max(1, args.records // base_records)
            stream = base * reps
            total = base_records * reps
            per_packet = total / len(stream)
            label = "NetFlow v9" if version == 9 else "IPFIX"
            frames = (
                FIXTURES / {9: "softflowd_v9_packets.bin", 10: "softflowd_v10_packets.bin"}[version]
            )
            print(
                f"\n== {label}: {len(stream):,} datagrams, {total:,} records "
                f"({per_packet:.1f} records/datagram)"
            )
            dec = decode_rate(stream, total)
            ref = netflow_pkg_rate(base * min(reps, 10))
            print(
                f"decode only (in memory, one thread): mamori {dec:,.0f} records/s"
                + (
                    f"; PyPI netflow {ref:,.0f} records/s; ratio {dec / ref:.1f}x"
                    if ref
                    else "; PyPI netflow not installed"
                )
            )
            best: dict[str, float] = {}
            for rx in (Nfcapd(tmp), Mamori(tmp)):
                best[rx.name] = 0.0
                for rate in rates:
                    ok, stored, achieved, mem = run_receiver(
                        rx, sender, frames, reps, per_packet, rate, total
                    )
                    print(
                        f"  {rx.name:7s} offered {rate:>12,.0f} rec/s (achieved "
                        f"{achieved:>12,.0f}): stored {stored:>10,} of {total:,} "
                        f"{'lossless' if ok else 'LOSS'}  peak RSS {mem / 1024:,.0f} MiB"
                    )
                    if not ok:
                        break
                    best[rx.name] = achieved
            ratio = best["mamori"] / best["nfcapd"] if best["nfcapd"] else float("nan")
            print(
                f"{label}: highest lossless rate — nfcapd {best['nfcapd']:,.0f} records/s, "
                f"mamori {best['mamori']:,.0f} records/s, ratio {ratio:.2f}x"
            )


if __name__ == "__main__":
    main()
