"""A three-namespace lab for the nftables tests: subscribers, a Linux router (the BNG that gets
Mamori's rules) and the Internet, joined by veth pairs.

    sub  (s0) 10.0.1.10, 10.0.1.11 (dynamic pool), 10.0.2.10 (static pool)
     |
    bng  (b0) 10.0.1.1, 10.0.2.1   (b1) 172.31.0.1       forwarding; nft rules here
     |
    net  (n0) 172.31.0.2;  lo: 192.0.2.1 (reflector/attacker), 192.0.2.53 (an outside resolver),
              192.0.2.66 (a C&C server), 198.51.100.53 (the ISP's resolver)

Needs root, ``ip`` and ``nft`` (Debian ``iproute2``, ``nftables``); otherwise the tests skip. The
kernel has no ``dummy`` interfaces here and there is no ``ping``: packets are sent from Python
(``tests/netns_udp.py``), and drops are read from nft's counters (``../shared/RECIPES.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

UDP = str(Path(__file__).with_name("netns_udp.py"))

DYNAMIC = "10.0.1.10"
DYNAMIC_2 = "10.0.1.11"
STATIC = "10.0.2.10"
REFLECTOR = "192.0.2.1"
OUTSIDE_RESOLVER = "192.0.2.53"
C2 = "192.0.2.66"
ISP_RESOLVER = "198.51.100.53"
PLAN = {"dynamic": "10.0.1.0/24", "static": "10.0.2.0/24"}


def _sh(
    *cmd: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def available() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian iproute2, nftables)"
    return None


class Lab:
    def __init__(self, tag: str) -> None:
        self.sub, self.bng, self.net = (f"mm{tag}{r}" for r in ("sub", "bng", "net"))
        self.procs: list[subprocess.Popen[str]] = []

    def ns(
        self, ns: str, *cmd: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _sh("ip", "netns", "exec", ns, *cmd, check=check, stdin=stdin)

    def nft_command(self) -> list[str]:
        return ["ip", "netns", "exec", self.bng, "nft"]

    def up(self) -> None:
        for n in (self.sub, self.bng, self.net):
            _sh("ip", "netns", "add", n)
            self.ns(n, "ip", "link", "set", "lo", "up")
            self.ns(n, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        _sh("ip", "link", "add", "s0", "netns", self.sub, "type", "veth", "peer", "name", "b0",
            "netns", self.bng)  # fmt: skip
        _sh("ip", "link", "add", "b1", "netns", self.bng, "type", "veth", "peer", "name", "n0",
            "netns", self.net)  # fmt: skip
        for ns, dev, addrs in (
            (self.sub, "s0", [f"{DYNAMIC}/24", f"{DYNAMIC_2}/24", f"{STATIC}/24"]),
            (self.bng, "b0", ["10.0.1.1/24", "10.0.2.1/24"]),
            (self.bng, "b1", ["172.31.0.1/30"]),
            (self.net, "n0", ["172.31.0.2/30"]),
            (self.net, "lo", [f"{a}/32" for a in (REFLECTOR, OUTSIDE_RESOLVER, C2, ISP_RESOLVER)]),
        ):
            for a in addrs:
                self.ns(ns, "ip", "addr", "add", a, "dev", dev)
            self.ns(ns, "ip", "link", "set", dev, "up")
        self.ns(self.sub, "ip", "route", "add", "default", "via", "10.0.1.1")
        self.ns(self.net, "ip", "route", "add", "10.0.0.0/8", "via", "172.31.0.1")
        for dst in ("192.0.2.0/24", "198.51.100.0/24"):
            self.ns(self.bng, "ip", "route", "add", dst, "via", "172.31.0.2")
        self.ns(self.bng, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for ns in (self.sub, self.net):  # wait for DAD-free IPv4 to route: one exchange
            self.ns(ns, "ip", "link", "show")

    def reset(self) -> None:
        """Between tests: no listeners, an empty ruleset on the router."""
        self._stop()
        self.ns(self.bng, "nft", "flush", "ruleset")

    def _stop(self) -> None:
        for p in self.procs:
            p.kill()
            for pipe in (p.stdout, p.stderr):
                if pipe is not None:
                    pipe.close()
            p.wait()
        self.procs.clear()

    def down(self) -> None:
        self._stop()
        for n in (self.sub, self.bng, self.net):
            _sh("ip", "netns", "del", n, check=False)

    # ------------------------------------------------------------------ traffic

    def listen(self, ns: str, addr: str, port: int, *, echo: bool = False) -> Receiver:
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-u", UDP, "listen", addr, str(port)]
        p = subprocess.Popen(
            [*cmd, *(["--echo"] if echo else [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        os.set_blocking(p.stdout.fileno(), False)
        return Receiver(p)

    def tcp_listen(self, ns: str, addr: str, port: int) -> None:
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-u", UDP, "tcp-listen", addr, str(port)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"

    def send(self, ns: str, src: str, sport: int, dst: str, dport: int, count: int = 3) -> None:
        self.ns(ns, sys.executable, UDP, "send", src, str(sport), dst, str(dport), str(count))

    def ask(self, ns: str, src: str, dst: str, dport: int) -> bool:
        return (
            self.ns(ns, sys.executable, UDP, "ask", src, dst, str(dport), check=False).returncode
            == 0
        )

    def tcp_connect(self, ns: str, src: str, dst: str, dport: int) -> bool:
        r = self.ns(ns, sys.executable, UDP, "tcp-connect", src, dst, str(dport), check=False)
        return r.returncode == 0

    # ------------------------------------------------------------------ nft

    def ruleset(self) -> list[dict[str, Any]]:
        data = json.loads(self.ns(self.bng, "nft", "-j", "list", "ruleset").stdout)
        return list(data["nftables"])

    def drops(self, table: str) -> dict[str, int]:
        """Packets each commented drop rule of ``table`` counted (summed per comment)."""
        out: dict[str, int] = {}
        for item in self.ruleset():
            rule = item.get("rule")
            if not rule or rule["table"] != table:
                continue
            packets = sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
            key = rule.get("comment", "")
            out[key] = out.get(key, 0) + packets
        return out


class Receiver:
    """What a listener received: the sources of its datagrams, in order."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.sources: list[str] = []

    def poll(self) -> list[str]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.sources.append(line.split()[0])
        return self.sources

    def got(self, n: int = 1, within_s: float = 3.0) -> bool:
        end = time.monotonic() + within_s
        while time.monotonic() < end:
            if len(self.poll()) >= n:
                return True
            time.sleep(0.05)
        return len(self.poll()) >= n


@contextmanager
def lab(tag: str) -> Iterator[Lab]:
    why = available()
    if why:
        pytest.skip(why)
    the_lab = Lab(tag)
    try:
        the_lab.up()
    except RuntimeError as exc:
        the_lab.down()
        pytest.skip(f"cannot build network namespaces here: {exc}")
    try:
        yield the_lab
    finally:
        the_lab.down()
