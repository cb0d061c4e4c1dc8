"""The BIND 9 configuration of docs/dns.md on a real named (Debian's bind9): the zones `act rpz`
writes, the ACLs resolver-sync writes and the views :func:`bind_snippet` prints, queried with
dnspython from the client addresses whose consent differs."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import pytest

from mamori.act.resolver import (
    ResolverError,
    RndcControl,
    SyncResult,
    UnboundControl,
    bind_acl_file,
    bind_snippet,
    clients_file,
    optout_file,
    prepare_resolver_files,
    resolver_control,
    sync_resolver,
    watch,
)
from mamori.act.rpz import generate_rpz
from mamori.config import DnsConfig
from mamori.governance import Governance
from tests.act.conftest import allocations_table, reputation_table
from tests.bind_harness import NAMED_CHECKZONE, Named, checkconf, running_named
from tests.conftest import until
from tests.unbound_harness import DOMAIN

pytestmark = pytest.mark.slow  # runs BIND

CC = f"cc1.{DOMAIN}"
WARN = f"warning.{DOMAIN}."
ELSEWHERE = "cc2.elsewhere.example"
REAL = {"cc1": "203.0.113.66", "malware": "203.0.113.77", "phish": "203.0.113.78"}


@pytest.fixture
def named(dns_gov: Governance, tmp_path: Path) -> Iterator[Named]:
    """named loading what Mamori wrote, as an operator sets it up (docs/dns.md): the clients of
    tests/act/conftest.py plus 127.0.0.5, in for M7 only, so every view has a client."""
    dns_gov.write_registry(
        "allocations", allocations_table({"127.0.0.5": "sub-m7-only"}), "test", source="csv"
    )
    dns_gov.consent.set("sub-m7-only", "M8", False, actor="test", channel="cli")
    # a C&C name whose servers cannot be reached (the upstream refuses it)
    dns_gov.write_registry(
        "reputation", reputation_table([("domain", ELSEWHERE, None, "c2", None)]), "t", source="t2"
    )
    prepare_resolver_files(dns_gov, "test")
    with running_named(tmp_path / "named", bind_snippet(dns_gov.config)) as nd:
        yield nd


@pytest.mark.parametrize(
    ("client", "name", "rcode", "data"),
    [
        # in for both (view mamori-m7-m8): C&C blocked, malware/phishing to the warning host
        ("127.0.0.2", CC, "NXDOMAIN", []),
        ("127.0.0.2", f"www.{CC}", "NXDOMAIN", []),
        ("127.0.0.2", f"malware.{DOMAIN}", "NOERROR", ["192.0.2.80", WARN]),
        ("127.0.0.2", f"phish.{DOMAIN}", "NOERROR", ["192.0.2.80", WARN]),
        ("127.0.0.2", f"benign.{DOMAIN}", "NOERROR", ["203.0.113.10"]),  # expired entry
        # opted out of both (view default): the real answers, through recursion
        ("127.0.0.3", CC, "NOERROR", [REAL["cc1"]]),
        ("127.0.0.3", f"malware.{DOMAIN}", "NOERROR", [REAL["malware"]]),
        ("127.0.0.3", f"phish.{DOMAIN}", "NOERROR", [REAL["phish"]]),
        # rewritten without resolving it first (qname-wait-recurse no); unresolvable for others
        ("127.0.0.2", ELSEWHERE, "NXDOMAIN", []),
        ("127.0.0.3", ELSEWHERE, "SERVFAIL", []),
        # in for M8 only (view mamori-m8)
        ("127.0.0.4", CC, "NOERROR", [REAL["cc1"]]),
        ("127.0.0.4", f"malware.{DOMAIN}", "NOERROR", ["192.0.2.80", WARN]),
        # in for M7 only (view mamori-m7)
        ("127.0.0.5", CC, "NXDOMAIN", []),
        ("127.0.0.5", f"malware.{DOMAIN}", "NOERROR", [REAL["malware"]]),
        # no allocation record: consent cannot be checked, so no policy
        ("127.0.0.9", CC, "NOERROR", [REAL["cc1"]]),
    ],
)
def test_policy_follows_consent(
    named: Named, client: str, name: str, rcode: str, data: list[str]
) -> None:
    assert named.answer(name, client) == (rcode, data)


def test_listed_name_is_not_resolved_for_a_consenting_client(named: Named) -> None:
    """The C&C operator's name servers never see the query of a client the policy protects."""
    assert named.answer(ELSEWHERE, "127.0.0.2") == ("NXDOMAIN", [])
    assert f"resolving '{ELSEWHERE}" not in named.log()
    assert named.answer(ELSEWHERE, "127.0.0.3")[0] == "SERVFAIL"  # opted out: resolved
    assert f"resolving '{ELSEWHERE}/A/IN'" in named.log()


def test_shared_cache_holds_only_real_answers(named: Named) -> None:
    """The views share one cache: a rewrite for one client never reaches another, in any order."""
    for client, want in [
        ("127.0.0.2", ("NXDOMAIN", [])),
        ("127.0.0.3", ("NOERROR", [REAL["cc1"]])),
        ("127.0.0.2", ("NXDOMAIN", [])),
        ("127.0.0.4", ("NOERROR", [REAL["cc1"]])),
        ("127.0.0.5", ("NXDOMAIN", [])),
        ("127.0.0.3", ("NOERROR", [REAL["cc1"]])),
    ]:
        assert named.answer(CC, client) == want, client
    # and it is one cache: the real answer sits in the cache the policy views use
    subprocess.run([*named.rndc, "dumpdb", "-cache"], check=True, capture_output=True)
    dump = named.directory / "named_dump.db"
    until(lambda: dump.exists() and "; Dump complete" in dump.read_text())
    text = dump.read_text()
    for view in ("mamori-m7", "mamori-m8", "default"):
        assert f"; Cache of view '{view}' is shared as 'mamori'" in text
    shared = text.split("; Cache dump of view 'mamori-m7-m8' (cache mamori)")[1]
    # (the TTL counts down from 60)
    assert re.search(
        rf"^{re.escape(CC)}\.\t\d+\tIN A\t{REAL['cc1']}$", shared.split("; Start view")[0], re.M
    )


def test_generated_config_passes_named_checkconf(named: Named, dns_gov: Governance) -> None:
    done = checkconf(named.conf)
    assert done.returncode == 0, done.stdout + done.stderr
    # -z loaded each policy zone once per view that uses it
    assert done.stdout.count("zone c2.rpz.mamori/IN: loaded serial") == 2
    assert done.stdout.count("zone warning.rpz.mamori/IN: loaded serial") == 2
    assert f'include "{bind_acl_file(dns_gov.config)}";' in named.conf.read_text()


def test_a_response_policy_zone_cannot_be_shared_with_in_view(tmp_path: Path) -> None:
    """Why every view loads its own copy: named refuses the shorter configuration."""
    zone = tmp_path / "p.zone"
    zone.write_text("$TTL 60\n@ SOA localhost. h.localhost. 1 60 60 60 60\n@ NS localhost.\n")
    conf = tmp_path / "named.conf"
    conf.write_text(
        f'view "a" {{ match-clients {{ 127.0.0.2; }}; zone "p" {{ type primary; file "{zone}"; }};'
        ' response-policy { zone "p"; }; };\n'
        'view "b" { match-clients { any; }; zone "p" { in-view "a"; };'
        ' response-policy { zone "p"; }; };\n'
    )
    done = checkconf(conf)
    assert done.returncode != 0
    assert "is not a primary or secondary zone" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("c2_action", "warning_addrs", "c2_rdata", "warning_rdata"),
    [
        ("nxdomain", (), "CNAME .", f"CNAME {WARN}"),
        ("nodata", (), "CNAME *.", f"CNAME {WARN}"),
        ("drop", ("192.0.2.80",), "CNAME rpz-drop.", "A 192.0.2.80"),
        ("cname-warning", ("192.0.2.80", "2001:db8::80"), "AAAA 2001:db8::80", "A 192.0.2.80"),
    ],
)
def test_named_checkzone_accepts_every_zone(
    dns_gov: Governance,
    tmp_path: Path,
    c2_action: str,
    warning_addrs: tuple[str, ...],
    c2_rdata: str,
    warning_rdata: str,
) -> None:
    dns_gov.config = dns_gov.config.model_copy(
        update={
            "dns": DnsConfig(warning_host=WARN, warning_addrs=warning_addrs, c2_action=c2_action)
        }
    )
    built = generate_rpz(dns_gov, "test", out_dir=tmp_path / "z")
    prepare_resolver_files(dns_gov, "test")  # the (empty) opt-out zone
    files = [(z.zone, z.path) for z in built.zones]
    files.append((dns_gov.config.dns.optout_zone, optout_file(dns_gov.config)))
    for zone, path in files:
        done = subprocess.run(
            [NAMED_CHECKZONE, "-k", "fail", "-i", "full", zone.rstrip("."), str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{path}: {done.stdout}{done.stderr}"
        assert done.stdout.rstrip().endswith("OK"), done.stdout
    c2, warn = (z.path.read_text() for z in built.zones)
    assert f"\n{CC} {c2_rdata}\n" in c2
    assert f"\nmalware.{DOMAIN} {warning_rdata}\n" in warn


def test_consent_change_applies_without_restart(dns_gov: Governance, named: Named) -> None:
    """Withdrawing (and giving back) consent: resolver-sync rewrites the ACLs, `rndc reconfig`;
    the same named answers differently."""
    pid = named.pid
    ctl = RndcControl(named.rndc)
    assert named.answer(CC, "127.0.0.2") == ("NXDOMAIN", [])

    dns_gov.consent.set("sub-in", "M7", False, actor="subscriber", channel="web")
    t0 = time.monotonic()
    result = sync_resolver(dns_gov, "test", control=ctl)
    until(lambda: _answer(named, CC, "127.0.0.2") == ("NOERROR", [REAL["cc1"]]))
    print(f"BIND consent withdrawal (sync + reconfig + answer): {time.monotonic() - t0:.2f} s")
    assert (result.changed, result.pending, result.passthru) == (True, False, 0)
    assert result.clients == {"M7": 1, "M8": 2}
    # now in view mamori-m8: M8 still applies (no opt-out-zone interval as with Unbound)
    assert named.answer(f"malware.{DOMAIN}", "127.0.0.2") == ("NOERROR", ["192.0.2.80", WARN])
    assert "127.0.0.2/32" in bind_acl_file(dns_gov.config).read_text().split('"mamori-m8"')[1]

    dns_gov.consent.set("sub-out", "M7", True, actor="subscriber", channel="web")
    assert sync_resolver(dns_gov, "test", control=ctl).changed
    assert named.answer(CC, "127.0.0.3") == ("NXDOMAIN", [])
    assert named.answer(f"malware.{DOMAIN}", "127.0.0.3") == ("NOERROR", [REAL["malware"]])

    assert named.proc.poll() is None and named.pid == pid
    assert int((named.directory / "named.pid").read_text().split()[0]) == pid
    # nothing changed: no reconfig
    assert not sync_resolver(dns_gov, "test", control=ctl).changed


def test_watch_applies_change_within_10_s(dns_gov: Governance, named: Named) -> None:
    """`resolver-sync --watch` with rndc: a consent change reaches named's answers, same PID."""
    pid = named.pid
    syncs: list[SyncResult] = []
    stop = threading.Event()
    worker = threading.Thread(
        target=watch,
        args=(dns_gov, "test"),
        kwargs={
            "control": RndcControl(named.rndc),
            "interval_s": 0.5,
            "stop": stop,
            "on_sync": syncs.append,
        },
    )
    worker.start()
    try:
        until(lambda: len(syncs) >= 1)
        assert named.answer(CC, "127.0.0.2")[0] == "NXDOMAIN"
        changed_at = time.monotonic()
        dns_gov.consent.set("sub-in", "M7", False, actor="subscriber", channel="web")
        until(lambda: _answer(named, CC, "127.0.0.2") == ("NOERROR", [REAL["cc1"]]), 10.0)
        print(f"BIND consent withdrawal propagation: {time.monotonic() - changed_at:.2f} s")
        changed_at = time.monotonic()
        dns_gov.consent.set("sub-in", "M7", True, actor="subscriber", channel="web")
        until(lambda: _answer(named, CC, "127.0.0.2") == ("NXDOMAIN", []), 10.0)
        print(f"BIND consent grant propagation: {time.monotonic() - changed_at:.2f} s")
        assert named.pid == pid and named.proc.poll() is None
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()


def test_new_list_entries_reach_every_view(dns_gov: Governance, named: Named) -> None:
    """`resolver-sync --zones` reloads each zone in each view that holds a copy of it."""
    pid = named.pid
    assert named.answer(f"phish.{DOMAIN}", "127.0.0.5") == ("NOERROR", [REAL["phish"]])
    dns_gov.write_registry(
        "reputation",
        reputation_table(
            [
                ("domain", f"cc1.{DOMAIN}", None, "c2", None),
                ("url", None, f"http://malware.{DOMAIN}/payload.exe", "malware-site", None),
                ("domain", f"phish.{DOMAIN}", None, "c2", None),  # now a C&C name too
                ("domain", f"benign.{DOMAIN}", None, "phishing", None),
            ]
        ),
        "test",
        source="test",
    )
    result = sync_resolver(dns_gov, "test", control=RndcControl(named.rndc), zones=True)
    assert result.zones is not None and not result.changed
    for client, name, want in [
        ("127.0.0.5", f"phish.{DOMAIN}", ("NXDOMAIN", [])),  # view mamori-m7
        ("127.0.0.2", f"phish.{DOMAIN}", ("NXDOMAIN", [])),  # mamori-m7-m8: C&C zone first
        ("127.0.0.4", f"benign.{DOMAIN}", ("NOERROR", ["192.0.2.80", WARN])),  # mamori-m8
        ("127.0.0.2", f"benign.{DOMAIN}", ("NOERROR", ["192.0.2.80", WARN])),
        ("127.0.0.3", f"benign.{DOMAIN}", ("NOERROR", ["203.0.113.10"])),  # default
    ]:
        until(lambda c=client, n=name, w=want: _answer(named, n, c) == w)  # type: ignore[misc]
    assert named.pid == pid


def test_rndc_failure_is_reported_and_retried(dns_gov: Governance, tmp_path: Path) -> None:
    bad = RndcControl(["rndc", "-s", "127.0.0.1", "-p", "1", "-y", "nokey"], timeout_s=30)
    with pytest.raises(ResolverError, match="failed"):
        sync_resolver(dns_gov, "test", control=bad)
    # nothing is left looking applied, so the next sync tries again
    assert not clients_file(dns_gov.config).exists()
    assert not bind_acl_file(dns_gov.config).exists()


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (["rndc"], RndcControl),
        (["/usr/sbin/rndc", "-c", "/etc/bind/rndc.conf"], RndcControl),
        (["unbound-control", "-c", "/etc/unbound/unbound.conf"], UnboundControl),
        (["/usr/sbin/unbound-control"], UnboundControl),
        (["rndc-confgen"], UnboundControl),
    ],
)
def test_resolver_control_by_program(command: list[str], kind: type) -> None:
    assert type(resolver_control(command)) is kind


def test_snippet_names_the_configured_zones(dns_gov: Governance, tmp_path: Path) -> None:
    cfg = dns_gov.config.model_copy(
        update={"dns": DnsConfig(c2_zone="cc.rpz.isp.example.", warning_zone="w.rpz.isp.example")}
    )
    text = bind_snippet(cfg, zone_dir=tmp_path)
    assert text.count('zone "cc.rpz.isp.example" { type primary;') == 2
    assert text.count(f'file "{tmp_path}/w.rpz.isp.example.zone"') == 2
    assert 'zone "w.rpz.isp.example" min-update-interval 0;' in text
    assert text.index('view "mamori-m7-m8"') < text.index('view "default"')


def test_docs_show_the_generated_snippet() -> None:
    """docs/dns.md quotes exactly what resolver-config --kind bind prints (default paths)."""
    from mamori.config import load_config

    docs = (Path(__file__).resolve().parents[2] / "docs" / "dns.md").read_text()
    section = docs[docs.index("## BIND 9") : docs.index("## Warning page")]
    assert bind_snippet(load_config(overrides={"store": Path("/var/lib/mamori")})) in section


def _answer(named: Named, name: str, client: str) -> tuple[str, list[str]] | None:
    try:
        return named.answer(name, client)
    except dns.exception.Timeout:
        return None
