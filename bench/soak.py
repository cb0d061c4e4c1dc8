"""Collector soak: `mamori collect` for a long run at 80 % of its lossless rate, with template
changes, exporter restarts and a garbage stream mixed in (issue 15 item 9).

Three senders, each from its own loopback address so that every record can be accounted for by
exporter:

- 127.0.0.1, the main stream: NetFlow v9 and IPFIX dated now (bench/live_stream.py: the
  collector runs with its clock checks on, as an operator's does), sent by
  ``bench/tools/udpblast`` on the other core in segments of ``--segment-s`` seconds, v9 and IPFIX
  in turn. Each segment is a new socket whose sequence numbers start again: to the collector, an
  exporter restart.
- 127.0.0.3, template changes: a NetFlow v9 exporter (source id 99) that redefines template 300
  with another layout every few seconds and sends data in whichever layout is current, at a low
  rate, from Python.
- 127.0.0.2, garbage: random datagrams with NetFlow v5/v9/IPFIX and sFlow headers, and real
  datagrams of the main stream truncated or with flipped bytes, ``--garbage-pps`` per second.

It reports the records lost per exporter (sent − stored; garbage excluded), the collector's
resident memory (receiver child included) and open files sampled every ``--sample-s`` seconds,
and the counters the collector kept of the garbage.

    .venv/bin/python bench/soak.py --minutes 30 --calibrate
    .venv/bin/python bench/soak.py --minutes 30 --rate 2400000

``--calibrate`` first finds the highest rate this machine stores whole now (bursts of
``--calibrate-s`` seconds, v9 and IPFIX), then soaks at ``--fraction`` (0.8) of it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector import (
    Mamori,
    _tree,
    build_sender,
    free_port,
    run_receiver,
    split_frames,
)
from live_stream import LiveStream, build


def write_frames(stream: LiveStream, path: Path) -> Path:
    stream.restamp()
    path.write_bytes(stream.frames)
    return path


# ----------------------------------------------------------------- the template-changing exporter

_LAYOUTS = [
    # (field type, length): src, dst, src port, dst port, proto, packets, bytes, first, last
    [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (21, 4), (22, 4)],
    # the same fields in another order, wider counters, plus TCP flags and ToS
    [(1, 8), (2, 8), (22, 4), (21, 4), (4, 1), (6, 1), (5, 1), (11, 2), (7, 2), (12, 4), (8, 4)],
]


def _v9(sets: list[bytes], uptime: int, seq: int) -> bytes:
    return struct.pack("!HHIIII", 9, len(sets), uptime, int(time.time()), seq, 99) + b"".join(sets)


def _set(set_id: int, body: bytes) -> bytes:
    body += b"\0" * (-(len(body) + 4) % 4)
    return struct.pack("!HH", set_id, len(body) + 4) + body


def _template(layout: list[tuple[int, int]]) -> bytes:
    return _set(
        0, struct.pack("!HH", 300, len(layout)) + b"".join(struct.pack("!HH", *f) for f in layout)
    )


def _record(layout: list[tuple[int, int]], i: int, uptime: int) -> bytes:
    values = {
        8: socket.inet_aton(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"),
        12: socket.inet_aton("198.51.100.7"),
        7: struct.pack("!H", 1024 + i % 50000),
        11: struct.pack("!H", 443),
        4: b"\x06",
        6: b"\x18",
        5: b"\x00",
    }
    out = b""
    for ftype, length in layout:
        if ftype in values:
            out += values[ftype]
        elif ftype in (1, 2):
            out += (1500 if ftype == 1 else 3).to_bytes(length, "big")
        else:  # 21/22: last/first switched, a second before the header's uptime
            out += struct.pack("!I", uptime - 1000)
    return out


class TemplateChanger(threading.Thread):
    """Sends 10 records per datagram at ``pps`` datagrams/s; switches layout every ``every_s``;
    every other switch is also a restart (uptime and sequence start again)."""

    def __init__(self, port: int, pps: float, every_s: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.pps, self.every_s, self.stop = port, pps, every_s, stop
        self.records = self.changes = self.restarts = 0

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.3", 0))
        layout_no, seq, boot = 0, 0, time.monotonic()
        switch_at = time.monotonic() + self.every_s
        start, sent = time.monotonic(), 0
        i = 0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= switch_at:
                layout_no, switch_at = 1 - layout_no, now + self.every_s
                self.changes += 1
                if self.changes % 2 == 0:
                    seq, boot = 0, now
                    self.restarts += 1
            uptime = 10_000 + int((now - boot) * 1000)
            layout = _LAYOUTS[layout_no]
            recs = b"".join(_record(layout, i + k, uptime) for k in range(10))
            # the template goes with every datagram: a datagram lost to the kernel must not
            # leave the next ones undecodable (routers resend templates for the same reason)
            sock.sendto(
                _v9([_template(layout), _set(300, recs)], uptime, seq), ("127.0.0.1", self.port)
            )
            i += 10
            seq += 1
            sent += 1
            self.records += 10
            delay = start + sent / self.pps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sock.close()


# ----------------------------------------------------------------- garbage


class Garbage(threading.Thread):
    def __init__(self, port: int, pps: float, real: list[bytes], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.pps, self.real, self.stop = port, pps, real, stop
        self.sent = 0

    def datagram(self, rnd: random.Random) -> bytes:
        kind = rnd.randrange(5)
        if kind == 0:  # random bytes behind a plausible version
            head = rnd.choice([b"\x00\x05", b"\x00\x09", b"\x00\x0a", b"\x00\x00\x00\x05"])
            return head + rnd.randbytes(rnd.randrange(0, 1400))
        if kind == 1:  # pure noise
            return rnd.randbytes(rnd.randrange(1, 1500))
        real = bytearray(rnd.choice(self.real))
        if kind == 2:  # truncated real export
            return bytes(real[: rnd.randrange(1, len(real))])
        for _ in range(rnd.randrange(1, 8)):  # flipped bytes in a real export
            real[rnd.randrange(len(real))] = rnd.randrange(256)
        return bytes(real)

    def run(self) -> None:
        rnd = random.Random(15)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.2", 0))
        start = time.monotonic()
        while not self.stop.is_set():
            sock.sendto(self.datagram(rnd), ("127.0.0.1", self.port))
            self.sent += 1
            delay = start + self.sent / self.pps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sock.close()


# ----------------------------------------------------------------- sampling the collector


def rss_and_fds(pid: int) -> tuple[float, int]:
    rss_kib, fds = 0, 0
    for p, _ in _tree(pid):  # the collector, its receiver, and any decoding processes
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kib += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue
    return rss_kib / 1024, fds


def calibrate(
    sender: Path, tmp: Path, streams: dict[int, LiveStream], rates: list[float], seconds: float
) -> float:
    """The highest rate of the sweep at which a burst of ``seconds`` is stored whole, v9 then
    IPFIX; the lower of the two. The burst must outlast the buffers (socket and receiver queue
    hold a second or more at these rates), or the sweep measures them instead of the collector."""
    best = []
    for version, stream in streams.items():
        ok_rate = 0.0
        for rate in rates:
            reps = max(1, round(rate * seconds / stream.records))
            frames = write_frames(stream, tmp / f"calibrate-v{version}.bin")
            ok, stored, achieved, _ = run_receiver(
                Mamori(tmp, replay=False),
                sender,
                frames,
                reps,
                stream.records / stream.datagrams,
                rate,
                reps * stream.records,
            )
            print(
                f"  calibrate v{version}: offered {rate:,.0f} achieved {achieved:,.0f} rec/s "
                f"for {seconds:g} s: stored {stored:,}/{reps * stream.records:,} "
                f"{'lossless' if ok else 'LOSS'}",
                flush=True,
            )
            if not ok:
                break
            ok_rate = achieved
        best.append(ok_rate)
    return min(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, help="main stream's records/s (default: --calibrate)")
    ap.add_argument("--calibrate", action="store_true", help="measure the lossless rate first")
    ap.add_argument("--fraction", type=float, default=0.8, help="of the lossless rate")
    ap.add_argument(
        "--calibrate-rates", default="500000,1000000,1500000,2000000,2500000,3000000,3500000"
    )
    ap.add_argument("--segment-s", type=float, default=20.0)
    ap.add_argument("--garbage-pps", type=float, default=200.0)
    ap.add_argument("--template-pps", type=float, default=500.0)
    ap.add_argument("--template-every-s", type=float, default=7.0)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument(
        "--calibrate-s", type=float, default=8.0, help="length of each calibration burst"
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        sender = build_sender(tmp)
        streams = {9: build(9), 10: build(10)}
        lossless = None
        if args.calibrate:
            lossless = calibrate(
                sender,
                tmp,
                streams,
                [float(r) for r in args.calibrate_rates.split(",")],
                args.calibrate_s,
            )
            print(f"lossless rate here and now: {lossless:,.0f} records/s", flush=True)
        rate = args.rate or (lossless or 0) * args.fraction
        if not rate:
            sys.exit("give --rate or --calibrate")

        mamori = Mamori(tmp, replay=False)  # the clock checks on, as an operator runs it
        port = free_port()
        proc = mamori.start(port)
        stop = threading.Event()
        changer = TemplateChanger(port, args.template_pps, args.template_every_s, stop)
        real = [
            split_frames(bytes(streams[9].frames))[:200],
            split_frames(bytes(streams[10].frames))[:200],
        ]
        garbage = Garbage(port, args.garbage_pps, real[0] + real[1], stop)
        changer.start()
        garbage.start()
        samples: list[tuple[float, float, int]] = []
        sent_main = 0
        segments = {9: 0, 10: 0}
        start = time.monotonic()
        end = start + args.minutes * 60
        next_sample = start
        print(
            f"soak: {args.minutes:g} min, main stream {rate:,.0f} records/s in "
            f"{args.segment_s:g} s segments (v9 and IPFIX in turn)",
            flush=True,
        )
        try:
            version = 9
            while time.monotonic() < end:
                stream = streams[version]
                per_packet = stream.records / stream.datagrams
                seconds = min(args.segment_s, max(1.0, end - time.monotonic()))
                reps = max(1, round(rate * seconds / stream.records))
                frames = write_frames(stream, tmp / f"segment-v{version}.bin")
                blast = subprocess.Popen(
                    [
                        "taskset",
                        "-c",
                        "1",
                        str(sender),
                        str(frames),
                        str(port),
                        str(rate / per_packet),
                        str(reps),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                while blast.poll() is None:
                    now = time.monotonic()
                    if now >= next_sample:
                        rss, fds = rss_and_fds(proc.pid)
                        samples.append((now - start, rss, fds))
                        print(
                            f"  t={now - start:7.0f} s  RSS {rss:7.1f} MiB  open files {fds:4d}",
                            flush=True,
                        )
                        next_sample = now + args.sample_s
                    time.sleep(0.2)
                sent_main += reps * stream.records
                segments[version] += 1
                version = 10 if version == 9 else 9
        finally:
            stop.set()
            changer.join()
            garbage.join()
            time.sleep(2.0)  # let the collector drain its socket
            rss, fds = rss_and_fds(proc.pid)
            samples.append((time.monotonic() - start, rss, fds))
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        took = time.monotonic() - start
        log = mamori.store.parent / "mamori-stderr.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        stats = json.loads((mamori.store / "_state/collector/stats.json").read_text())
        by = stats["by_exporter"]
        got_main = int(by.get("127.0.0.1", {}).get("records", 0))
        got_tmpl = int(by.get("127.0.0.3", {}).get("records", 0))
        got_garbage = int(by.get("127.0.0.2", {}).get("records", 0))
        counters = stats["counters"]
        n = len(samples)
        head = [s[1] for s in samples[1 : max(2, n // 6)]]  # after start-up
        tail = [s[1] for s in samples[-max(1, n // 6) :]]
        result = {
            "minutes": took / 60,
            "rate_offered": rate,
            "lossless_calibrated": lossless,
            "main": {
                "sent": sent_main,
                "stored": got_main,
                "lost": sent_main - got_main,
                "segments_v9": segments[9],
                "segments_ipfix": segments[10],
            },
            "template_changes": {
                "sent": changer.records,
                "stored": got_tmpl,
                "lost": changer.records - got_tmpl,
                "layout_changes": changer.changes,
                "restarts": changer.restarts,
            },
            "garbage": {"datagrams": garbage.sent, "records_decoded_from_it": got_garbage},
            "rss_mib": {
                "first_sixth_median": statistics.median(head),
                "last_sixth_median": statistics.median(tail),
                "max": max(s[1] for s in samples),
            },
            "open_files_max": max(s[2] for s in samples),
            "open_files_min": min(s[2] for s in samples),
            "kernel_drops": counters.get("packets.dropped_by_kernel", 0),
            "receiver_drops": counters.get("packets.dropped_by_receiver", 0),
            # what the collector counted and refused (the garbage's trace), by kind
            "refused_counters": {
                k: v
                for k, v in counters.items()
                if any(w in k for w in ("error", "bad", "refused", "unknown", "dropped", "short"))
            },
            "samples": samples,
        }
    main_loss = result["main"]["lost"] / max(1, sent_main)
    print(f"\nsoak over {took / 60:.1f} min at {rate:,.0f} records/s offered:")
    print(
        f"  main stream (v9 + IPFIX, {segments[9] + segments[10]} segments, each an exporter restart): "
        f"{sent_main:,} sent, {got_main:,} stored, loss {main_loss:.4%}"
    )
    print(
        f"  template changes ({changer.changes} layout changes, {changer.restarts} restarts): "
        f"{changer.records:,} sent, {got_tmpl:,} stored"
    )
    print(
        f"  garbage: {garbage.sent:,} datagrams; {got_garbage:,} records decoded from them "
        f"(stored under exporter 127.0.0.2, never mixed with the others)"
    )
    r = result["rss_mib"]
    print(
        f"  RSS: {r['first_sixth_median']:.0f} MiB (first sixth, median) → "
        f"{r['last_sixth_median']:.0f} MiB (last sixth); max {r['max']:.0f} MiB"
    )
    print(f"  open files: {result['open_files_min']}–{result['open_files_max']}")
    print(f"  drops: kernel {result['kernel_drops']:,}, receiver {result['receiver_drops']:,}")
    print(f"  collector log: {len(lines)} line(s) after 'listening'; last: {lines[-1:] or '—'}")
    print("  counted and refused, by kind:")
    for k, v in sorted(result["refused_counters"].items()):
        print(f"    {k}: {v:,}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
