"""A real BIND 9 (Debian's /usr/sbin/named) on 127.0.0.1 for the DNS tests.

Its own directory, pid file and session key under the test's tmp_path; a free DNS port (UDP and
TCP) and a free control-channel port with a freshly generated rndc key, so the tests reload it
exactly as an operator would (``rndc reconfig``, ``rndc reload ZONE IN VIEW``).

The Mamori part of named.conf is the text :func:`mamori.act.resolver.bind_snippet` prints. The
"internet" is a view ``upstream`` that only 127.0.0.1 matches, authoritative for ``test.example``
(the same data as the Unbound harness); every other view forwards to it (global ``forwarders``),
so an opted-out client gets an answer that went through real recursion, and nothing leaves the
machine. Test clients use 127.0.0.2 and up.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.conftest import free_port
from tests.unbound_harness import (
    DOMAIN,
    UPSTREAM,
    EarlyExit,
    LocalResolver,
    free_udp_port,
    retried_start,
)

NAMED = shutil.which("named") or "/usr/sbin/named"
RNDC = shutil.which("rndc") or "/usr/sbin/rndc"
NAMED_CHECKCONF = shutil.which("named-checkconf") or "/usr/bin/named-checkconf"
NAMED_CHECKZONE = shutil.which("named-checkzone") or "/usr/bin/named-checkzone"


@dataclass
class Named(LocalResolver):
    rndc_conf: Path = Path()

    log_name = "named.stderr"

    @property
    def rndc(self) -> tuple[str, ...]:
        """The rndc command an operator would configure (``dns.resolver_control``)."""
        return (RNDC, "-c", str(self.rndc_conf))


def named_conf(directory: Path, port: int, control_port: int, secret: str, snippet: str) -> str:
    return f"""options {{
  directory "{directory}";
  pid-file "{directory}/named.pid";
  session-keyfile "{directory}/session.key";
  managed-keys-directory "{directory}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  // the test "internet" is unsigned and has no root above it
  dnssec-validation no;
  forwarders {{ 127.0.0.1 port {port}; }};
  forward only;
}};
key "rndc-key" {{ algorithm hmac-sha256; secret "{secret}"; }};
controls {{
  inet 127.0.0.1 port {control_port} allow {{ 127.0.0.1; }} keys {{ "rndc-key"; }};
}};
view "upstream" {{
  match-clients {{ 127.0.0.1; }};
  recursion no;
  zone "{DOMAIN}" {{ type primary; file "{directory}/upstream.zone"; }};
}};
{snippet}"""


def checkconf(conf: Path) -> subprocess.CompletedProcess[str]:
    """``named-checkconf -z``: the configuration, and every zone it names loads."""
    return subprocess.run(
        [NAMED_CHECKCONF, "-z", str(conf)], capture_output=True, text=True, check=False
    )


def _wait_ready(nd: Named, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if nd.proc.poll() is not None:
            raise EarlyExit(f"named exited ({nd.proc.returncode}):\n{nd.log()}")
        # named keeps running when a port was taken meanwhile; start again on other ports
        if "address in use" in nd.log():
            raise EarlyExit(f"named could not bind its ports:\n{nd.log()}")
        done = subprocess.run(
            [*nd.rndc, "status"], capture_output=True, text=True, check=False, timeout=30
        )
        if done.returncode == 0 and "server is up and running" in done.stdout:
            try:  # and answers (the upstream view, from 127.0.0.1): big zones load meanwhile
                nd.query(DOMAIN, "127.0.0.1", "SOA", timeout=1.0)
            except dns.exception.Timeout:
                continue
            return
        time.sleep(0.1)
    raise RuntimeError(f"named did not start:\n{nd.log()}")


@contextmanager
def running_named(
    directory: Path, mamori_snippet: str, *, ready_timeout_s: float = 60.0
) -> Iterator[Named]:
    """named on free ports. Another process can take a port between choosing and binding it
    (servers run side by side): a named that exits at start-up is started again on new ports, a
    few times, before giving up."""
    with retried_start(
        lambda: _running_once(directory, mamori_snippet, ready_timeout_s=ready_timeout_s)
    ) as nd:
        yield nd


@contextmanager
def _running_once(
    directory: Path, mamori_snippet: str, *, ready_timeout_s: float
) -> Iterator[Named]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "upstream.zone").write_text(UPSTREAM)
    port = free_udp_port()
    control_port = free_port()
    secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    conf = directory / "named.conf"
    conf.write_text(named_conf(directory, port, control_port, secret, mamori_snippet))
    rndc_conf = directory / "rndc.conf"
    rndc_conf.write_text(
        f'key "rndc-key" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
        f'options {{ default-key "rndc-key"; default-server 127.0.0.1; '
        f"default-port {control_port}; }};\n"
    )
    rndc_conf.chmod(0o600)
    check = checkconf(conf)
    if check.returncode != 0:
        raise RuntimeError(f"named-checkconf: {check.stdout}{check.stderr}")
    with (directory / "named.stderr").open("wb") as stderr:  # the child keeps its own copy
        # -g: foreground, log to stderr; as the current user (no -u), so no file needs chown
        proc = subprocess.Popen(
            [NAMED, "-g", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    nd = Named(directory, port, conf, proc, rndc_conf)
    try:
        _wait_ready(nd, ready_timeout_s)
        yield nd
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
