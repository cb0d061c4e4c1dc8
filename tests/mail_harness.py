"""A real Postfix 3.7 and Dovecot 2.3 (Debian) on 127.0.0.1 for the SMTP AUTH tests.

Postfix runs as its own instance (``postfix -c DIR``, its own queue, no chroot) with one
submission service on a free port, SASL through Dovecot, and the Mamori part of main.cf as
docs/smtp.md gives it: ``smtpd_delay_reject = no`` and ``check_client_access`` on the map Mamori
writes. Mail to anywhere is accepted from authenticated clients and kept in the queue
(``defer_transports = smtp``), so a spam burst grows the queue without leaving the machine.
Dovecot serves authentication only (virtual users in a passwd-file, no system users); its first
passdb is Mamori's deny file. Dovecot's brute-force slow-down is switched off
(``auth_failure_delay = 0``, no anvil penalty), or Postfix gives up waiting on it (RECIPES.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.7
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.test.example
mydomain = test.example
mydestination =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = {d}/log/postfix.log
maillog_file_prefixes = {d}/log
smtpd_banner = $myhostname ESMTP
smtpd_tls_security_level = none
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_security_options = noanonymous
# Mamori (docs/smtp.md): refuse listed clients at the greeting, before AUTH
smtpd_delay_reject = no
smtpd_client_restrictions = check_client_access hash:{access_map}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
# keep everything in the queue: nothing leaves the machine
defer_transports = smtp
relayhost =
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_auth_rate_limit = 0
smtpd_hard_error_limit = 1000
smtpd_soft_error_limit = 1000
smtpd_error_sleep_time = 0
"""

DOVECOT_CONF = """\
base_dir = {d}/dovecot-run
state_dir = {d}/dovecot-state
log_path = {d}/log/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
service auth {{
  unix_listener {d}/spool/private/auth {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
# no penalty for failed logins from one address: Postfix would give up waiting (RECIPES.md)
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
# Mamori's suspended AUTH IDs (docs/smtp.md)
passdb {{
  driver = passwd-file
  args = {deny_file}
  deny = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid=dovenull gid=dovenull home={d}/home/%u
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> str | None:
    """Why the servers cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (Postfix and Dovecot drop privileges to their users)"
    for tool in (POSTFIX, DOVECOT, shutil.which("postmap") or "/usr/sbin/postmap"):
        if not Path(tool).exists():
            return f"{tool} not installed (packaging/apt-packages.txt: postfix, dovecot-core)"
    return None


@dataclass
class MailLab:
    directory: Path
    port: int
    access_map: Path
    deny_file: Path
    users: dict[str, str]

    @property
    def deny_smtp(self) -> Path:
        """The deny file Dovecot reads for SMTP AUTH (``%{service}`` = smtp)."""
        return Path(str(self.deny_file).replace("%{service}", "smtp"))

    @property
    def postfix_log(self) -> Path:
        return self.directory / "log" / "postfix.log"

    @property
    def config_dir(self) -> Path:
        return self.directory / "postfix"

    def smtp(self, timeout: float = 10.0) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=timeout)

    def login(self, user: str, password: str) -> smtplib.SMTP:
        """A logged-in session (raises SMTPAuthenticationError on a bad password)."""
        s = self.smtp()
        try:
            s.ehlo()
            s.login(user, password)
        except BaseException:
            with suppress(Exception):
                s.close()
            raise
        return s

    def queue_size(self) -> int:
        out = subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-j"], capture_output=True, check=True
        ).stdout
        return len([line for line in out.splitlines() if line.strip()])


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@contextmanager
def mail_lab(
    directory: Path, access_map: Path, deny_file: Path, users: dict[str, str]
) -> Iterator[MailLab]:
    """Postfix and Dovecot running in ``directory`` until the block ends."""
    d = directory
    # Postfix checks that its directories are not writable by others; pytest's are 0700 for root
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    port = free_port()
    conf = d / "postfix"
    _write(conf / "main.cf", MAIN_CF.format(d=d, access_map=access_map))
    _write(conf / "master.cf", MASTER_CF.format(listen=f"127.0.0.1:{port}"))
    for sub in ("spool", "data", "log", "dovecot-state", "home"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(d / "data", "postfix")
    _write(d / "users", "".join(f"{u}:{p}\n" for u, p in users.items()), 0o640)
    shutil.chown(d / "users", group="dovecot")
    _write(d / "dovecot.conf", DOVECOT_CONF.format(d=d, deny_file=deny_file))
    env = {**os.environ, "MAIL_CONFIG": str(conf)}
    # what Mamori writes must be there before the servers start (`mamori act smtp --prepare`)
    if not access_map.exists():
        _write(access_map, "")
    subprocess.run(["postmap", "-c", str(conf), f"hash:{access_map}"], check=True, env=env)
    for service in ("smtp", "imap"):
        path = Path(str(deny_file).replace("%{service}", service))
        if not path.exists():
            _write(path, "")
    subprocess.run([POSTFIX, "-c", str(conf), "check"], check=True, capture_output=True, env=env)
    dovecot = subprocess.Popen([DOVECOT, "-F", "-c", str(d / "dovecot.conf")])
    try:
        _until(lambda: (d / "spool" / "private" / "auth").exists(), "Dovecot's auth socket")
        subprocess.run(
            [POSTFIX, "-c", str(conf), "start"], check=True, capture_output=True, env=env
        )
        try:
            _until(lambda: _answers(port), "Postfix on its port")
            yield MailLab(d, port, access_map, deny_file, users)
        finally:
            subprocess.run([POSTFIX, "-c", str(conf), "stop"], capture_output=True, env=env)
    finally:
        dovecot.send_signal(signal.SIGTERM)
        try:
            dovecot.wait(10)
        except subprocess.TimeoutExpired:
            dovecot.kill()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(100).startswith(b"220")
    except OSError:
        return False


def _until(cond: object, what: str, limit_s: float = 30.0) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if callable(cond) and cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not come up within {limit_s} s")
