"""Collector throughput: Mamori against nfcapd (nfdump), same packets, same run, one core each.

The export stream is softflowd's real NetFlow v9 / IPFIX output (../shared/data/flow-fixtures,
1,479 datagrams, 40,568 records), repeated until it holds ``--records`` records. For each receiver
the sender (on another core) paces the stream at increasing rates; a rate is *lossless* when every
record sent is stored. The figure is the highest lossless rate, in records/s.

    .venv/bin/python bench/collector.py [--records 3000000] [--version 9|10|both]
        [--until-loss] [--exporters 2 --decoders 2]

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
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "data" / "flow-fixtures"
RECEIVER_CORE = "0"
SENDER_CORE = 1


def load_datagrams(version: int) -> list[bytes]:
    name = {9: "softflowd_v9_packets.bin", 10: "softflowd_v10_packets.bin"}[version]
    return split_frames((FIXTURES / name).read_bytes())


def split_frames(data: bytes) -> list[bytes]:
    """The datagrams of a frames file: repeated [2-byte big-endian length][datagram]."""
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
    sender: Path,
    frames: Path,
    port: int,
    per_packet: float,
    rate: float,
    repeat: int,
    exporters: int = 1,
) -> float:
    """Send the frames file ``repeat`` times paced at ``rate`` records/s in all, from the other
    core; with ``exporters`` > 1, as that many exporters (127.0.0.1, .2, …) sharing the rate and
    the repeats. Returns the seconds the slowest took."""
    procs = [
        subprocess.Popen(
            [
                "taskset",
                "-c",
                str(SENDER_CORE),
                str(sender),
                str(frames),
                str(port),
                str(rate / per_packet / exporters),
                str(repeat // exporters),
                f"127.0.0.{k + 1}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(exporters)
    ]
    took = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"udpblast failed ({proc.returncode})")
        took.append(float(out.strip()))
    return max(took)


def _tree(pid: int) -> list[tuple[int, int]]:
    """A process and all its descendants (the decoding processes and their receivers), with
    their depth below it."""
    out, todo = [], [(pid, 0)]
    while todo:
        p, depth = todo.pop()
        out.append((p, depth))
        kids = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout
        todo += [(int(k), depth + 1) for k in kids.split()]
    return out


def peak_kib(pid: int) -> int:
    """Peak resident memory (VmHWM) of a process and its descendants (Mamori's receiver)."""
    total = 0
    for p, _ in _tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(pid: int, roles: tuple[str, ...]) -> dict[str, float]:
    """CPU time (user + system) by role, ``roles[depth]``: where the time goes (the receiver
    child reads sockets; its parent decodes and writes)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for p, depth in _tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        role = roles[depth] if depth < len(roles) else "other"
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _drain(stream: IO[bytes], path: Path) -> None:
    with path.open("ab") as out:
        for line in stream:
            out.write(line)


class Mamori:
    name = "mamori"

    def __init__(
        self, tmp: Path, decoders: int = 1, cores: str = RECEIVER_CORE, replay: bool = True
    ) -> None:
        self.store = tmp / "mamori-store"
        self.replay = replay
        self.decoders = decoders
        self.cores = cores
        self.cpu: dict[str, float] = {}
        if decoders > 1:
            self.name = f"mamori --decoders {decoders}"

    def start(self, port: int) -> subprocess.Popen[bytes]:
        shutil.rmtree(self.store, ignore_errors=True)
        cmd = [
            "taskset",
            "-c",
            self.cores,
            str(ROOT / ".venv/bin/mamori"),
            "collect",
            "--listen",
            f"udp://127.0.0.1:{port}",
            "--store",
            str(self.store),
            "--flush-interval",
            "2",
            "--decoders",
            str(self.decoders),
        ]
        # The recorded stream's times are not today's: widen the collector's clock checks
        # (not for a stream dated now: bench/live_stream.py).
        years = str(100 * 366 * 86400)
        env = {
            **os.environ,
            **{
                f"MAMORI_COLLECTOR__{k}": years
                for k in ("RECORD_BEFORE_EXPORT_S", "RECORD_AFTER_EXPORT_S", "EXPORT_CLOCK_SKEW_S")
                if self.replay
            },
        }
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        assert proc.stderr is not None
        proc.stderr.readline()  # "listening on …"
        # Read the rest as it comes: a pipe nobody reads fills (64 KiB of warnings in a long
        # run) and then blocks the collector's next log line, and with it the collector.
        self.log = self.store.parent / "mamori-stderr.log"
        threading.Thread(target=_drain, args=(proc.stderr, self.log), daemon=True).start()
        return proc

    def stored(self) -> int:
        state = self.store / "_state/collector"
        files = [state / "stats.json"] if self.decoders == 1 else state.glob("shard-*/stats.json")
        return sum(int(json.loads(f.read_text())["rows_written"]) for f in files)


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
    exporters: int = 1,
) -> tuple[bool, int, float, int]:
    port = free_port()
    proc = rx.start(port)
    try:
        took = send(sender, frames, port, per_packet, rate, repeat, exporters)
        time.sleep(1.0)  # let the receiver drain its socket buffer
        mem = peak_kib(proc.pid)
        if isinstance(rx, Mamori):
            roles = ("decode+write", "receive")
            rx.cpu = cpu_seconds(proc.pid, roles if rx.decoders == 1 else ("supervise", *roles))
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


def stage_rates(stream: list[bytes]) -> dict[str, float]:
    """One core's work per stage, in records/s of process CPU time: decoding (NumPy over the
    packed datagrams, as the collector receives them), the sampling normaliser, and writing
    Parquet (LZ4, row groups of the collector's size). What a lossless ceiling on one core is
    made of, besides receiving."""
    import numpy as np
    import pyarrow as pa

    sys.path.insert(0, str(ROOT / "src"))
    from mamori.ingest.collector import ROW_GROUP
    from mamori.ingest.netflow.decoder import FlowDecoder, PackedDatagrams
    from mamori.ingest.sampling import SamplingPolicy
    from mamori.schemas import dataset
    from mamori.store.parquet import StreamWriter

    data = b"".join(stream)
    lengths = np.fromiter((len(d) for d in stream), dtype=np.int64, count=len(stream))
    offsets = np.cumsum(lengths) - lengths
    dec, sampling, counters = FlowDecoder(), SamplingPolicy(), Counter[str]()
    spent = {"decode": 0.0, "sampling": 0.0, "parquet write": 0.0}
    held: list[pa.Table] = []
    n = 0
    cpu = time.process_time
    with tempfile.TemporaryDirectory() as tmp:
        writer = StreamWriter(Path(tmp), dataset("flows"))
        for i in range(0, len(stream), 4096):
            part = slice(i, i + 4096)
            k = len(lengths[part])
            batch = PackedDatagrams(
                data,
                offsets[part],
                lengths[part],
                np.zeros(k, np.int32),
                ["127.0.0.1"],
                np.full(k, time.time()),
            )
            a = cpu()
            result = dec.decode_packed(batch)
            b = cpu()
            flows = sampling.apply(result.flows, counters)
            c = cpu()
            held.append(flows)
            n += flows.num_rows
            if sum(t.num_rows for t in held) >= ROW_GROUP:
                writer.write(pa.concat_tables(held))
                held = []
            spent["decode"] += b - a
            spent["sampling"] += c - b
            spent["parquet write"] += cpu() - c
        a = cpu()
        if held:
            writer.write(pa.concat_tables(held))
        writer.commit()
        spent["parquet write"] += cpu() - a
    rates = {k: n / v for k, v in spent.items() if v > 0}
    rates["all three"] = n / sum(spent.values())
    return rates


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
    ap.add_argument(
        "--until-loss",
        action="store_true",
        help="after --rates, go on in steps of --step until each receiver loses (or the sender "
        "cannot offer more: then the ceiling is at least the rate reached)",
    )
    ap.add_argument("--step", type=float, default=500_000)
    ap.add_argument(
        "--exporters", type=int, default=1, help="send as this many exporters (127.0.0.1, .2, …)"
    )
    ap.add_argument(
        "--decoders",
        type=int,
        default=1,
        help="also run `mamori collect --decoders N` (needs --exporters >= N to spread)",
    )
    ap.add_argument(
        "--decoder-cores",
        default="0,1",
        help="cores for the --decoders run (this 2-core machine: shared with the sender)",
    )
    ap.add_argument(
        "--only", choices=["nfcapd", "mamori"], help="run one receiver (and the --decoders one)"
    )
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
            reps = max(1, args.records // base_records // args.exporters) * args.exporters
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
            stages = stage_rates(base * min(reps, 50))
            print(
                "one core's stages (process CPU time): "
                + ", ".join(f"{k} {v / 1e6:.2f}M records/s" for k, v in stages.items())
            )
            best: dict[str, float] = {}
            limited: dict[str, bool] = {}
            receivers: list[Mamori | Nfcapd] = []
            if args.only != "mamori":
                receivers.append(Nfcapd(tmp))
            if args.only != "nfcapd":
                receivers.append(Mamori(tmp))
            if args.decoders > 1:
                receivers.append(Mamori(tmp, args.decoders, args.decoder_cores))
            for rx in receivers:
                best[rx.name] = 0.0
                limited[rx.name] = False
                offered = list(rates)
                i = 0
                while i < len(offered):
                    rate = offered[i]
                    ok, stored, achieved, mem = run_receiver(
                        rx, sender, frames, reps, per_packet, rate, total, args.exporters
                    )
                    print(
                        f"  {rx.name:7s} offered {rate:>12,.0f} rec/s (achieved "
                        f"{achieved:>12,.0f}): stored {stored:>10,} of {total:,} "
                        f"{'lossless' if ok else 'LOSS'}  peak RSS {mem / 1024:,.0f} MiB"
                        + (
                            "  CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in rx.cpu.items())
                            if isinstance(rx, Mamori) and rx.cpu
                            else ""
                        ),
                        flush=True,
                    )
                    if not ok:
                        break
                    if achieved < 0.9 * rate:  # the sender is the limit, not the receiver
                        limited[rx.name] = True
                        best[rx.name] = max(best[rx.name], achieved)
                        break
                    best[rx.name] = achieved
                    if args.until_loss and i == len(offered) - 1:
                        offered.append(rate + args.step)
                    i += 1
            names = list(best)
            summary = ", ".join(
                f"{n} {'≥ ' if limited[n] else ''}{best[n]:,.0f} records/s" for n in names
            )
            print(f"{label}, {args.exporters} exporter(s): highest lossless rate — {summary}")
            if best.get("nfcapd"):
                for n in names[1:]:
                    print(f"  {n} / nfcapd: {best[n] / best['nfcapd']:.2f}x")


if __name__ == "__main__":
    main()
