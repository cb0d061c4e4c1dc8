"""Messages per second of the dnstap decoders on one core.

    PYTHONPATH=src python bench/dnstap.py [--messages 200000] [--repeat 3] [--cpu]

CLIENT_QUERY messages as ``mamori.sim.dnstap`` writes them (the layout Unbound uses: identity,
version, type, and a Message with type, family, protocol, both addresses and ports, time and the
DNS query) are written to a Frame Streams file, read back with ``read_frames``, and decoded:

- ``vectorised``: ``decode_messages`` (NumPy lockstep over all messages of a chunk);
- ``scalar``: ``decode_messages_scalar`` (the per-message reference the vectorised one falls back
  to);
- ``dnstap-pb``: the PyPI ``dnstap-pb`` generated classes (``protobuf``'s upb backend, C):
  ``ParseFromString`` and reading the same seven Message fields; and ``dnstap-pb + text``: the
  same plus what still has to follow to get a row (question name via ``question``, address text
  via ``ipaddress``). ``pip install dnstap-pb protobuf`` for these two; they are skipped without.

Two workloads: all clients IPv4, and 30 % IPv6 clients (their text is made per address).
Vectorised and scalar rows are checked equal before anything is timed.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import socket
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from mamori.ingest.dns.dnstap import (
    DecodeStats,
    decode_messages,
    decode_messages_scalar,
    question,
)
from mamori.ingest.dns.fstrm import read_frames
from mamori.sim.dnstap import client_query, write_frame_stream

CLOCK = time.perf_counter


def make_frames(n: int, ipv6_share: float, path: Path) -> tuple[list[bytes], float]:
    """Frames of ``n`` client queries, and the time ``read_frames`` took to read them."""
    every = round(1 / ipv6_share) if ipv6_share else 0
    msgs = []
    for i in range(n):
        if every and i % every == 0:
            client = ipaddress.IPv6Address(0x2001_0DB8 << 96 | i).packed
        else:
            client = socket.inet_aton(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        msgs.append(
            client_query(
                1.79e9 + i * 0.001,
                client,
                1024 + i % 60000,
                socket.inet_aton("10.255.0.1"),
                f"host{i % 5000}.Example.com",
                ("A", "AAAA", "MX", "TXT")[i % 4],
                i & 0xFFFF,
                b"resolver1",
                b"unbound 1.17.1",
            )
        )
    write_frame_stream(path, msgs)
    t0 = CLOCK()
    with path.open("rb") as fh:
        frames = [f for f in read_frames(fh) if isinstance(f, bytes)]
    return frames, CLOCK() - t0


def _pb_fields(pb: Any, frames: list[bytes]) -> int:
    n = 0
    for f in frames:
        d = pb.Dnstap()
        d.ParseFromString(f)
        m = d.message
        if m.type == 5:
            got = (m.query_address, m.response_address, m.query_port)
            got += (m.query_time_sec, m.query_time_nsec, m.query_message)
            n += len(got) == 6
    return n


def _pb_rows(pb: Any, frames: list[bytes]) -> int:
    rows = []
    for f in frames:
        d = pb.Dnstap()
        d.ParseFromString(f)
        m = d.message
        if m.type == 5:
            name, qtype = question(m.query_message)
            rows.append(
                (
                    m.query_time_sec * 1_000_000_000 + m.query_time_nsec,
                    str(ipaddress.ip_address(m.query_address)),
                    m.query_port,
                    name,
                    qtype,
                    str(ipaddress.ip_address(m.response_address)),
                )
            )
    return len(rows)


def best(fn: Callable[[], int], repeat: int) -> tuple[int, float]:
    out, dt = 0, float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        out = fn()
        dt = min(dt, CLOCK() - t0)
    return out, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3, help="passes; the best is reported")
    ap.add_argument(
        "--cpu", action="store_true", help="process CPU time instead of wall time (shared machine)"
    )
    args = ap.parse_args()
    global CLOCK
    if args.cpu:
        CLOCK = time.process_time
    try:
        pb: Any = importlib.import_module("dnstap_pb")
    except ImportError:
        pb = None
        print("dnstap-pb not installed: reference skipped (pip install dnstap-pb protobuf)")
    with tempfile.TemporaryDirectory() as tmp:
        for share, label in ((0.0, "IPv4 clients"), (0.3, "30% IPv6 clients")):
            frames, read_s = make_frames(args.messages, share, Path(tmp) / "bench.dnstap")
            vec = decode_messages(frames, DecodeStats()).raw()
            ref = decode_messages_scalar(frames, DecodeStats()).raw()
            assert vec.equals(ref), "vectorised and scalar rows differ"
            runs: dict[str, Callable[[], int]] = {
                "vectorised": partial(lambda f: len(decode_messages(f, DecodeStats())), frames),
                "scalar": partial(lambda f: len(decode_messages_scalar(f, DecodeStats())), frames),
            }
            if pb is not None:
                runs["dnstap-pb"] = partial(_pb_fields, pb, frames)
                runs["dnstap-pb + text"] = partial(_pb_rows, pb, frames)
            rates = {}
            print(
                f"-- {label}: {len(frames):,d} messages; read_frames {len(frames) / read_s:,.0f}/s"
            )
            for name, fn in runs.items():
                n, dt = best(fn, args.repeat)
                assert n == len(frames), (name, n)
                rates[name] = n / dt
                print(f"{name:18s} {n / dt:>12,.0f} messages/s ({dt:.3f} s)")
            v = rates["vectorised"]
            print(f"vectorised / scalar: {v / rates['scalar']:.1f}x")
            for name in ("dnstap-pb", "dnstap-pb + text"):
                if name in rates:
                    print(f"vectorised / {name}: {v / rates[name]:.1f}x")


if __name__ == "__main__":
    main()
