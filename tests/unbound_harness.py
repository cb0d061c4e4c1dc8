"""A real Unbound (Debian's /usr/sbin/unbound) on 127.0.0.1 for the DNS tests.

Its own directory, a free port, control over a unix socket, no root. The "real answers" come from
an auth-zone served to the iterator (``for-upstream``) — local-zone data would be answered before
RPZ is consulted — so nothing leaves the machine. The Mamori part of the configuration is the
snippet ``unbound_snippet`` prints, as an operator would paste it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

R = TypeVar("R")

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
UNBOUND_CONTROL = shutil.which("unbound-control") or "/usr/sbin/unbound-control"

# The "internet" the resolver sees: listed names and the warning host resolve to real addresses.
UPSTREAM = """$TTL 60
@ IN SOA localhost. hostmaster.localhost. 1 3600 600 86400 60
@ IN NS localhost.
cc1 IN A 203.0.113.66
www.cc1 IN A 203.0.113.67
malware IN A 203.0.113.77
phish IN A 203.0.113.78
benign IN A 203.0.113.10
warning IN A 192.0.2.80
"""
DOMAIN = "test.example"  # UPSTREAM's origin


def free_udp_port() -> int:
    """A port free for UDP *and* TCP on 127.0.0.1 (Unbound listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@dataclass
class LocalResolver:
    """A resolver process of the tests, answering on 127.0.0.1:``port``."""

    directory: Path
    port: int
    conf: Path
    proc: subprocess.Popen[bytes]

    log_name = ""  # its log file in ``directory``

    @property
    def pid(self) -> int:
        return self.proc.pid

    def query(
        self, name: str, source: str, rdtype: str = "A", timeout: float = 2.0
    ) -> dns.message.Message:
        q = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
        return dns.query.udp(q, "127.0.0.1", port=self.port, source=source, timeout=timeout)

    def answer(self, name: str, source: str) -> tuple[str, list[str]]:
        """(rcode, the A addresses and CNAME targets of the answer) for a query from ``source``."""
        r = self.query(name, source)
        data = sorted(rd.to_text() for rrset in r.answer for rd in rrset)
        return dns.rcode.to_text(r.rcode()), data

    def log(self) -> str:
        path = self.directory / self.log_name
        return path.read_text(errors="replace") if path.exists() else ""


class EarlyExit(RuntimeError):
    """The resolver exited while starting (a port taken after we picked it, a bad config)."""


@dataclass
class Unbound(LocalResolver):
    log_name = "unbound.log"

    @property
    def control(self) -> tuple[str, ...]:
        return (UNBOUND_CONTROL, "-c", str(self.conf))


def _wait_ready(ub: Unbound, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if ub.proc.poll() is not None:
            err = ub.directory / "unbound.stderr"
            stderr = err.read_text(errors="replace") if err.exists() else ""
            raise EarlyExit(f"unbound exited ({ub.proc.returncode}):\n{ub.log()}{stderr}")
        done = subprocess.run([*ub.control, "status"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and "is running" in done.stdout:
            return
        time.sleep(0.1)
    raise RuntimeError(f"unbound did not start:\n{ub.log()}")


@contextmanager
def running_unbound(
    directory: Path,
    mamori_snippet: str,
    *,
    extra_server: str = "",
    extra: str = "",
    checkconf: bool = True,
    ready_timeout_s: float = 60.0,
) -> Iterator[Unbound]:
    """Unbound on a free port. Another process can take the port between choosing and binding
    it (servers run side by side): an Unbound that exits at start-up is started again on a new
    port, a few times, before giving up."""
    with retried_start(
        lambda: _running_once(
            directory,
            mamori_snippet,
            extra_server=extra_server,
            extra=extra,
            checkconf=checkconf,
            ready_timeout_s=ready_timeout_s,
        )
    ) as ub:
        yield ub


@contextmanager
def retried_start(start: Callable[[], AbstractContextManager[R]], attempts: int = 3) -> Iterator[R]:
    """``start()`` entered, started again (new ports) while it raises :class:`EarlyExit`, up to
    ``attempts`` times; the started server is stopped when the block ends."""
    for attempt in range(attempts):
        cm = start()
        try:
            server = cm.__enter__()
        except EarlyExit:
            if attempt == attempts - 1:
                raise
            continue
        try:
            yield server
        except BaseException as exc:
            if not cm.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            cm.__exit__(None, None, None)
        return


@contextmanager
def _running_once(
    directory: Path,
    mamori_snippet: str,
    *,
    extra_server: str = "",
    extra: str = "",
    checkconf: bool = True,
    ready_timeout_s: float = 60.0,
) -> Iterator[Unbound]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "upstream.zone").write_text(UPSTREAM)
    port = free_udp_port()
    conf = directory / "unbound.conf"
    conf.write_text(
        f"""server:
  interface: 127.0.0.1
  port: {port}
  username: ""
  chroot: ""
  directory: "{directory}"
  pidfile: "{directory}/unbound.pid"
  logfile: "{directory}/unbound.log"
  use-syslog: no
  do-daemonize: no
  verbosity: 1
  num-threads: 1
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: yes
  qname-minimisation: no
  module-config: "respip iterator"
{extra_server}
remote-control:
  control-enable: yes
  control-interface: "{directory}/control.sock"
  control-use-cert: no
auth-zone:
  name: "{DOMAIN}."
  zonefile: "{directory}/upstream.zone"
  for-downstream: no
  for-upstream: yes
  fallback-enabled: no
{mamori_snippet}
{extra}
"""
    )
    check = subprocess.run(
        [UNBOUND.replace("unbound", "unbound-checkconf"), str(conf)] if checkconf else ["true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise RuntimeError(f"unbound-checkconf: {check.stdout}{check.stderr}")
    with (directory / "unbound.stderr").open("wb") as stderr:  # the child keeps its own copy
        proc = subprocess.Popen(
            [UNBOUND, "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    ub = Unbound(directory, port, conf, proc)
    try:
        _wait_ready(ub, ready_timeout_s)
        yield ub
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
