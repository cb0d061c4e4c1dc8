"""Several decoding processes on one port (``mamori collect --decoders N``).

One process decodes and writes at most what one core can (see bench/README.md, the collector
section); an ISP's collector host has many. Each decoding process here is an ordinary
``mamori collect`` bound with ``SO_REUSEPORT`` to the same ports: the kernel hashes each
exporter's address and port to one of the sockets, so every exporter is decoded by one process
only and its templates, sequence numbers and NAT events stay together. The processes share the
store (unique file names, one lock per writer) and the group's template directory; each keeps its
own counters, which ``collect stats`` and ``status`` add up.

The supervisor starts them, forwards their log lines, stops them all on SIGTERM, and stops the
rest (exit status 1) when one of them fails, so that systemd restarts the whole set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

__all__ = ["Shard", "Supervisor", "reserve_ports"]

READY = "listening on "


def reserve_ports(hosts_ports: Sequence[tuple[str, int]]) -> list[tuple[socket.socket, int]]:
    """A socket per listener bound with SO_REUSEPORT, to learn the port of ``:0`` listeners and
    keep it until the decoding processes hold it (then :meth:`socket.close`)."""
    held: list[tuple[socket.socket, int]] = []
    for host, port in hosts_ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            for s, _ in held:
                s.close()
            raise OSError(f"cannot listen on udp://{host}:{port}: {exc.strerror}") from None
        held.append((sock, int(sock.getsockname()[1])))
    return held


@dataclass
class Shard:
    index: int
    command: list[str]
    proc: subprocess.Popen[str] | None = None
    ready: threading.Event = field(default_factory=threading.Event)  # listening, or ended
    listening: bool = False
    last_line: str = ""  # before it listened: why it did not


class Supervisor:
    """Runs the decoding processes until SIGTERM/SIGINT or until one of them ends."""

    def __init__(
        self, commands: Sequence[list[str]], env: dict[str, str], log: TextIO | None = None
    ) -> None:
        self.shards = [Shard(i, list(c)) for i, c in enumerate(commands)]
        self.env = env
        self.log = log or sys.stderr
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _forward(self, shard: Shard) -> None:
        assert shard.proc is not None and shard.proc.stderr is not None
        for line in shard.proc.stderr:
            if not shard.listening:
                if line.startswith(READY):
                    shard.listening = True
                    shard.ready.set()
                    continue
                shard.last_line = line
            with self._lock:
                self.log.write(f"[decoder {shard.index}] {line}")
                self.log.flush()
        shard.ready.set()  # ended before it listened: start() reads last_line

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every process and wait until each listens; raises RuntimeError (after stopping
        the others) with the first one's complaint if one does not."""
        for shard in self.shards:
            shard.proc = subprocess.Popen(
                shard.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env,
            )
            threading.Thread(target=self._forward, args=(shard,), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        for shard in self.shards:
            shard.ready.wait(max(0.0, deadline - time.monotonic()))
            assert shard.proc is not None
            if not shard.listening:
                self.stop()
                self.wait(10.0)
                why = shard.last_line.strip() or f"exit status {shard.proc.poll()}"
                raise RuntimeError(f"decoding process {shard.index} did not start: {why}")

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def stop(self) -> None:
        for shard in self.shards:
            if shard.proc is not None and shard.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    shard.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        codes = []
        for shard in self.shards:
            assert shard.proc is not None
            try:
                codes.append(shard.proc.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                shard.proc.kill()
                codes.append(shard.proc.wait())
        return codes

    def run(
        self,
        status: Callable[[], None] | None = None,
        status_every_s: float = 10.0,
        stop_timeout_s: float = 60.0,
    ) -> int:
        """Until a stop is asked for or a process ends; returns 0 if all ended well."""
        next_status = time.monotonic() + status_every_s
        failed: Shard | None = None
        while not self._stop.wait(0.2):
            for shard in self.shards:
                assert shard.proc is not None
                if shard.proc.poll() is not None:
                    failed = shard
                    break
            if failed is not None:
                break
            if status and time.monotonic() >= next_status:
                status()
                next_status = time.monotonic() + status_every_s
        self.stop()
        codes = self.wait(stop_timeout_s)
        if failed is not None:
            with self._lock:
                self.log.write(
                    f"error: decoding process {failed.index} ended (exit status "
                    f"{codes[failed.index]}); the others were stopped\n"
                )
            return 1
        return 0 if all(c == 0 for c in codes) else 1


def child_env(**values: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: v for k, v in values.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env
