"""Per-subscriber consent on a real Unbound: who gets the policy, and how fast a change lands."""

from __future__ import annotations

import threading
import time

import dns.exception
import pytest

from mamori.act.resolver import (
    ResolverError,
    SyncResult,
    UnboundControl,
    clients_file,
    consenting_clients,
    optout_file,
    render_clients,
    sync_resolver,
    watch,
)
from mamori.governance import Governance
from tests.act.conftest import CLIENTS, allocations_table
from tests.conftest import until
from tests.unbound_harness import DOMAIN, Unbound

pytestmark = pytest.mark.slow  # runs Unbound

CC = f"cc1.{DOMAIN}"
WARN = f"warning.{DOMAIN}."


@pytest.mark.parametrize(
    ("client", "name", "rcode", "data"),
    [
        # in for both: the C&C name is blocked, the malware site goes to the warning page
        ("127.0.0.2", CC, "NXDOMAIN", []),
        ("127.0.0.2", f"www.{CC}", "NXDOMAIN", []),
        ("127.0.0.2", f"malware.{DOMAIN}", "NOERROR", ["192.0.2.80", WARN]),
        ("127.0.0.2", f"phish.{DOMAIN}", "NOERROR", ["192.0.2.80", WARN]),
        ("127.0.0.2", f"benign.{DOMAIN}", "NOERROR", ["203.0.113.10"]),  # expired entry
        # opted out of both: the real answers
        ("127.0.0.3", CC, "NOERROR", ["203.0.113.66"]),
        ("127.0.0.3", f"malware.{DOMAIN}", "NOERROR", ["203.0.113.77"]),
        # out of M7 only: C&C name resolves, malware site still warned about
        ("127.0.0.4", CC, "NOERROR", ["203.0.113.66"]),
        ("127.0.0.4", f"malware.{DOMAIN}", "NOERROR", ["192.0.2.80", WARN]),
        # no allocation record: consent cannot be checked, so no policy
        ("127.0.0.9", CC, "NOERROR", ["203.0.113.66"]),
    ],
)
def test_policy_follows_consent(
    unbound: Unbound, client: str, name: str, rcode: str, data: list[str]
) -> None:
    assert unbound.answer(name, client) == (rcode, data)


def test_clients_file_tags(dns_gov: Governance) -> None:
    clients = consenting_clients(dns_gov, "test")
    assert clients["M7"].to_pylist() == ["127.0.0.2/32"]
    assert clients["M8"].to_pylist() == ["127.0.0.2/32", "127.0.0.4/32"]
    text = render_clients(clients).decode()
    assert '  access-control-tag: 127.0.0.2/32 "m7 m8"\n' in text
    assert '  access-control-tag: 127.0.0.4/32 "m8"\n' in text
    assert "127.0.0.3" not in text


def test_ended_and_port_block_allocations_get_no_tag(dns_gov: Governance) -> None:
    import pyarrow as pa

    from tests.act.conftest import NOW, TS

    rows = allocations_table({"10.0.0.7": "sub-gone", "198.51.100.1": "sub-cgnat"})
    rows = rows.set_column(1, "end", pa.array([NOW, None], TS))
    rows = rows.append_column("port_start", pa.array([None, 1024], pa.uint16()))
    rows = rows.append_column("port_end", pa.array([None, 2047], pa.uint16()))
    dns_gov.write_registry("allocations", rows, "test", source="csv")
    clients = consenting_clients(dns_gov, "test")
    assert "10.0.0.7/32" not in clients["M7"].to_pylist()
    assert "198.51.100.1/32" not in clients["M7"].to_pylist()


def test_consent_change_applies_without_restart(dns_gov: Governance, unbound: Unbound) -> None:
    pid = unbound.pid
    ctl = UnboundControl(unbound.control)
    assert unbound.answer(CC, "127.0.0.3") == ("NOERROR", ["203.0.113.66"])
    assert unbound.answer(CC, "127.0.0.2")[0] == "NXDOMAIN"

    dns_gov.consent.set("sub-out", "M7", True, actor="test", channel="web")
    dns_gov.consent.set("sub-in", "M7", False, actor="test", channel="web")
    result = sync_resolver(dns_gov, "test", control=ctl, force=True)
    assert result.changed
    assert result.clients == {"M7": 1, "M8": 2}

    assert unbound.answer(CC, "127.0.0.3")[0] == "NXDOMAIN"
    assert unbound.answer(CC, "127.0.0.2") == ("NOERROR", ["203.0.113.66"])
    # M8 for sub-in did not change
    assert unbound.answer(f"malware.{DOMAIN}", "127.0.0.2") == ("NOERROR", ["192.0.2.80", WARN])
    assert unbound.proc.poll() is None
    assert unbound.pid == pid
    assert int((unbound.directory / "unbound.pid").read_text().split()[0]) == pid

    # nothing changed: no reload
    assert not sync_resolver(dns_gov, "test", control=ctl).changed


def test_watch_applies_change_within_interval(dns_gov: Governance, unbound: Unbound) -> None:
    """The --watch loop notices a consent change and Unbound answers differently, same process."""
    pid = unbound.pid
    syncs: list[SyncResult] = []
    stop = threading.Event()
    worker = threading.Thread(
        target=watch,
        args=(dns_gov, "test"),
        kwargs={
            "control": UnboundControl(unbound.control),
            "interval_s": 0.5,
            "stop": stop,
            "on_sync": syncs.append,
        },
    )
    worker.start()
    try:
        until(lambda: len(syncs) >= 1)
        assert unbound.answer(CC, "127.0.0.2")[0] == "NXDOMAIN"
        changed_at = time.monotonic()
        dns_gov.consent.set("sub-in", "M7", False, actor="subscriber", channel="web")
        until(lambda: unbound.answer(CC, "127.0.0.2")[0] == "NOERROR", limit_s=10.0)
        propagated = time.monotonic() - changed_at
        print(f"consent withdrawal propagation: {propagated:.2f} s")  # figure for the report
        until(lambda: len(syncs) >= 2)
        # and back in: the tags are reloaded (tag_reload_min_interval_s is 0 by default)
        changed_at = time.monotonic()
        dns_gov.consent.set("sub-in", "M7", True, actor="subscriber", channel="web")
        until(lambda: _rcode(unbound, CC, "127.0.0.2") == "NXDOMAIN", limit_s=10.0)
        print(f"consent grant propagation: {time.monotonic() - changed_at:.2f} s")
        assert unbound.pid == pid and unbound.proc.poll() is None
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()


def _rcode(unbound: Unbound, name: str, client: str) -> str | None:
    try:
        return unbound.answer(name, client)[0]
    except dns.exception.Timeout:  # not answering while it reloads
        return None


def test_control_failure_is_reported(dns_gov: Governance, tmp_path: object) -> None:
    bad = UnboundControl(["/usr/sbin/unbound-control", "-s", "/nonexistent/control.sock"])
    with pytest.raises(ResolverError, match="failed"):
        sync_resolver(dns_gov, "test", control=bad)
    # nothing is left looking applied, so the next sync tries again
    assert not clients_file(dns_gov.config).exists()
    assert not optout_file(dns_gov.config).exists()


def test_clients_cover_every_allocated_consenting_address(dns_gov: Governance) -> None:
    text = render_clients(consenting_clients(dns_gov, "test")).decode()
    tagged = {line.split()[1].split("/")[0] for line in text.splitlines() if "tag:" in line}
    assert tagged == {a for a, s in CLIENTS.items() if s != "sub-out"}


def test_withdrawal_applies_at_once_through_the_optout_zone(
    dns_gov: Governance, unbound: Unbound
) -> None:
    """With the tag reload not yet due, a withdrawal still takes effect: the client's address goes
    into the small opt-out zone (reloaded alone), and the next reload puts exact tags in place."""
    ctl = UnboundControl(unbound.control)
    pid = unbound.pid
    dns_gov.config = dns_gov.config.model_copy(
        update={"dns": dns_gov.config.dns.model_copy(update={"tag_reload_min_interval_s": 3600})}
    )
    assert sync_resolver(dns_gov, "test", control=ctl, force=True).changed
    dns_gov.consent.set("sub-in", "M7", False, actor="subscriber", channel="web")
    result = sync_resolver(dns_gov, "test", control=ctl)  # reload not due for an hour
    assert (result.changed, result.pending, result.passthru) == (False, True, 1)
    assert unbound.answer(CC, "127.0.0.2") == ("NOERROR", ["203.0.113.66"])
    # until the reload, no policy at all for that address (RPZ stops at the first match)
    assert unbound.answer(f"malware.{DOMAIN}", "127.0.0.2") == ("NOERROR", ["203.0.113.77"])
    assert unbound.answer(CC, "127.0.0.4") == ("NOERROR", ["203.0.113.66"])  # others unchanged
    assert unbound.answer(f"malware.{DOMAIN}", "127.0.0.4") == ("NOERROR", ["192.0.2.80", WARN])

    done = sync_resolver(dns_gov, "test", control=ctl, force=True)
    assert (done.changed, done.pending, done.passthru) == (True, False, 0)
    assert unbound.answer(CC, "127.0.0.2") == ("NOERROR", ["203.0.113.66"])
    assert unbound.answer(f"malware.{DOMAIN}", "127.0.0.2") == ("NOERROR", ["192.0.2.80", WARN])
    assert unbound.pid == pid and unbound.proc.poll() is None


@pytest.mark.parametrize(
    ("prefix", "owner"),
    [
        ("127.0.0.2/32", "32.2.0.0.127.rpz-client-ip"),
        ("10.1.0.0/16", "16.0.0.1.10.rpz-client-ip"),
        ("2001:db8::1/128", "128.1.0.0.0.0.0.db8.2001.rpz-client-ip"),
        ("2001:db8:ab00::/40", "40.0.0.0.0.0.ab00.db8.2001.rpz-client-ip"),
    ],
)
def test_client_ip_trigger_names(prefix: str, owner: str) -> None:
    from mamori.act.resolver import _rpz_client_ip

    assert _rpz_client_ip([prefix]) == [owner]


def test_bind_acls_per_combination(dns_gov: Governance) -> None:
    from mamori.act.resolver import render_bind_acls

    text = render_bind_acls(consenting_clients(dns_gov, "test")).decode()
    assert 'acl "mamori-m7-m8" {\n  127.0.0.2/32;\n};' in text
    assert 'acl "mamori-m7" {\n  none;\n};' in text
    assert 'acl "mamori-m8" {\n  127.0.0.4/32;\n};' in text
    assert "127.0.0.3" not in text


def test_bad_allocation_addresses_are_left_out(dns_gov: Governance) -> None:
    """A malformed address must never reach unbound.conf (Unbound would refuse all of it)."""
    rows = allocations_table(
        {
            "999.1.1.1": "x1",
            "....": "x2",
            "10.9.0.0/24": "x3",
            "2001:db8::7": "x4",
            "2001:db8:1::/48": "x5",
            "not an address": "x6",
        }
    )
    dns_gov.write_registry("allocations", rows, "test", source="csv")
    got = consenting_clients(dns_gov, "test")["M7"].to_pylist()
    assert got == ["10.9.0.0/24", "127.0.0.2/32", "2001:db8:1::/48", "2001:db8::7/128"]
