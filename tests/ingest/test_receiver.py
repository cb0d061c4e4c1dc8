"""The receiver process: every datagram handed over intact, exporters told apart by address
(never by source port), nothing lost when stopping."""

from __future__ import annotations

import socket
import time

import numpy as np

from mamori.ingest.receiver import Receiver, join_chunks

SOURCES = ("127.0.1.1", "127.0.1.2", "127.0.1.3")


def _collect(rx: Receiver, until: float) -> list[object]:
    chunks = []
    finished = False
    while not finished and time.monotonic() < until:
        got, finished = rx.take(100_000, wait_s=0.05)
        chunks += got
    return chunks


def test_datagrams_arrive_intact_and_exporters_by_address() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # the burst must fit
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    rx = Receiver([server], chunk_bytes=4096, chunk_s=0.01)
    rx.start()
    sent: dict[str, list[bytes]] = {s: [] for s in SOURCES}
    try:
        for round_ in range(3):  # a new source port each round: still the same exporter
            for src in SOURCES:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                    out.bind((src, 0))
                    for i in range(40):
                        payload = f"{src}/{round_}/{i}/".encode() * (1 + i % 30)
                        out.sendto(payload, ("127.0.0.1", port))
                        sent[src].append(payload)
        time.sleep(0.2)
        rx.request_stop()
        chunks = _collect(rx, time.monotonic() + 10)
    finally:
        rx.kill()
        server.close()
    batch = join_chunks(chunks)  # type: ignore[arg-type]
    assert sorted(batch.exporters) == sorted(SOURCES)
    got: dict[str, list[bytes]] = {s: [] for s in SOURCES}
    for off, n, e in zip(
        batch.offsets.tolist(), batch.lengths.tolist(), batch.exporter.tolist(), strict=True
    ):
        got[batch.exporters[e]].append(batch.data[off : off + n])
    assert got == sent
    assert np.all(batch.received > 0)
    assert sum(c.dropped for c in chunks) == 0  # type: ignore[attr-defined]


def test_child_exits_with_its_parent_gone_or_killed() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    rx = Receiver([server])
    rx.start()
    rx.kill()
    assert not rx._proc.is_alive()
    server.close()
