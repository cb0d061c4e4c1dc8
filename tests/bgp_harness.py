"""A BGP peer for the FlowSpec/RTBH tests: BIRD 2 (Debian ``bird2``) and ExaBGP (Debian
``exabgp``) on loopback in a private network namespace, ExaBGP running Mamori's relay.

BIRD listens on 127.0.0.1 (AS 65001), ExaBGP speaks from 127.0.0.2 (AS 65002). BIRD needs
``multihop`` for a loopback neighbour, explicit ``import`` on eBGP channels, a ``flow4`` table named
in the ``flow4`` channel, and a static blackhole route for the RTBH next hop
(``../shared/RECIPES.md``). Routes are read with ``birdc show route``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from mamori.act.bgp import exabgp_config

BIRD_CONF = """router id 127.0.0.1;
protocol device {}
flow4 table flowtab4;
protocol static blackhole_nh { ipv4; route 192.0.2.1/32 blackhole; }
protocol bgp exa {
  local 127.0.0.1 as 65001;
  neighbor 127.0.0.2 as 65002;
  multihop;
  ipv4 { import all; export none; };
  flow4 { table flowtab4; import all; export none; };
}
"""


@dataclass
class Peer:
    ns: str
    directory: Path
    socket: Path  # the relay's: [network.bgp] api_socket
    bird_ctl: Path
    exabgp: subprocess.Popen[bytes]

    def birdc(self, *args: str) -> str:
        r = subprocess.run(
            ["birdc", "-s", str(self.bird_ctl), *args], capture_output=True, text=True, timeout=30
        )
        return r.stdout

    def unicast(self) -> str:
        return self.birdc("show", "route", "all")

    def flows(self) -> str:
        return self.birdc("show", "route", "table", "flowtab4", "all")

    def established(self) -> bool:
        return "Established" in self.birdc("show", "protocols", "exa")


def available() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "bird", "birdc", "exabgp"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian iproute2, bird2, exabgp)"
    return None


@contextmanager
def bgp_peer(directory: Path) -> Iterator[Peer]:
    why = available()
    if why:
        pytest.skip(why)
    directory.mkdir(parents=True, exist_ok=True)
    ns = f"mmbgp{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    bird_pid = directory / "bird.pid"
    exa: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        (directory / "bird.conf").write_text(BIRD_CONF)
        ctl = directory / "bird.ctl"
        subprocess.run(
            ["ip", "netns", "exec", ns, "bird", "-c", str(directory / "bird.conf"), "-s",
             str(ctl), "-P", str(bird_pid)],
            check=True,
        )  # fmt: skip
        sock = directory / "exabgp.sock"
        (directory / "exabgp.conf").write_text(
            exabgp_config(socket_path=sock, python=sys.executable, local_address="127.0.0.2",
                          local_as=65002, peer_address="127.0.0.1", peer_as=65001)
        )  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "exabgp.daemon.user": "root",
            "exabgp.api.cli": "false",
            "exabgp.log.destination": str(directory / "exabgp.log"),
        }
        exa = subprocess.Popen(
            ["ip", "netns", "exec", ns, "exabgp", str(directory / "exabgp.conf")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peer = Peer(ns, directory, sock, ctl, exa)
        end = time.monotonic() + 30
        while not (peer.established() and sock.exists()):
            if time.monotonic() > end or exa.poll() is not None:
                log = (
                    (directory / "exabgp.log").read_text()
                    if (directory / "exabgp.log").exists()
                    else ""
                )
                raise AssertionError(f"BGP session not established: {log[-2000:]}")
            time.sleep(0.1)
        yield peer
    finally:
        if exa is not None and exa.poll() is None:
            exa.send_signal(signal.SIGTERM)
            try:
                exa.wait(timeout=10)
            except subprocess.TimeoutExpired:
                exa.kill()
                exa.wait()
        if bird_pid.exists():
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(bird_pid.read_text().strip()), signal.SIGTERM)
        subprocess.run(["ip", "netns", "del", ns], check=False)
