"""`mamori act rpz`, `act resolver-sync`, `act resolver-config` and `ingest dns` end to end,
against a real Unbound or BIND 9 where the resolver is involved."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import STATE, app
from mamori.governance import Governance
from mamori.sim.dnstap import write_frame_stream
from tests.act.conftest import allocations_table, reputation_table
from tests.bind_harness import running_named
from tests.unbound_harness import DOMAIN, running_unbound

pytestmark = pytest.mark.slow  # runs Unbound and BIND

runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "store"
    monkeypatch.setenv("MAMORI_STORE", str(path))
    monkeypatch.setenv("MAMORI_DNS__WARNING_HOST", f"warning.{DOMAIN}.")
    monkeypatch.setenv("MAMORI_ACTOR", "cli-test")
    STATE.close()
    STATE._config = None
    STATE.store = None
    STATE.config_file = None
    yield path
    STATE.close()
    STATE._config = None


def _seed(store: Path) -> None:
    from mamori.config import load_config

    with Governance(load_config(overrides={"store": store})) as gov:
        gov.write_registry(
            "reputation",
            reputation_table([("domain", f"cc1.{DOMAIN}", None, "c2", None)]),
            "test",
            source="test",
        )
        gov.write_registry(
            "allocations",
            allocations_table({"127.0.0.2": "a", "127.0.0.3": "b"}),
            "t",
            source="csv",
        )
        gov.consent.set("b", "M7", False, actor="test", channel="cli")


def _invoke(args: list[str]) -> str:
    result = runner.invoke(app, args)
    STATE.close()
    assert result.exit_code == 0, result.output
    return result.output


def test_rpz_and_resolver_sync_on_unbound(store: Path, tmp_path: Path) -> None:
    _seed(store)
    text = " ".join(
        _invoke(["act", "rpz", "--c2-action", "nodata", "--out", str(tmp_path / "z")]).split()
    )
    assert "M7 c2.rpz.mamori. serial" in text and ": 1 names" in text
    assert (tmp_path / "z" / "c2.rpz.mamori.zone").read_text().count("CNAME *.") == 2

    assert "zones and client tags written" in _invoke(["act", "resolver-sync", "--prepare"])
    snippet = _invoke(["act", "resolver-config"])
    assert 'define-tag: "m7 m8"' in snippet and 'tags: "m7"' in snippet
    with running_unbound(tmp_path / "ub", snippet) as ub:
        assert ub.answer(f"cc1.{DOMAIN}", "127.0.0.2")[0] == "NXDOMAIN"
        assert ub.answer(f"cc1.{DOMAIN}", "127.0.0.3")[0] == "NOERROR"
        ctl = " ".join(ub.control)
        out = " ".join(
            _invoke(["act", "resolver-sync", "--unbound-control", ctl, "--force"]).split()
        )
        assert "clients M7 1, M8 2" in out and "reloaded" in out
        out = _invoke(["act", "rpz", "--reload", "--unbound-control", ctl])
        assert "M8 warning.rpz.mamori." in out
        assert ub.answer(f"cc1.{DOMAIN}", "127.0.0.2")[0] == "NXDOMAIN"


def test_rpz_and_resolver_sync_on_bind(store: Path, tmp_path: Path) -> None:
    """The operator's path with BIND 9: --prepare, resolver-config --kind bind pasted into
    named.conf, then resolver-sync and rpz --reload through rndc."""
    from mamori.config import load_config

    _seed(store)
    assert "zones and client tags written" in _invoke(["act", "resolver-sync", "--prepare"])
    snippet = _invoke(["act", "resolver-config", "--kind", "bind"])
    assert 'view "mamori-m7-m8" {' in snippet and "define-tag" not in snippet
    with running_named(tmp_path / "named", snippet) as nd:
        pid = nd.pid
        assert nd.answer(f"cc1.{DOMAIN}", "127.0.0.2")[0] == "NXDOMAIN"
        assert nd.answer(f"cc1.{DOMAIN}", "127.0.0.3")[0] == "NOERROR"
        with Governance(load_config(overrides={"store": store})) as gov:
            gov.consent.set("a", "M7", False, actor="test", channel="web")
        rndc = " ".join(nd.rndc)
        out = " ".join(_invoke(["act", "resolver-sync", "--resolver-control", rndc]).split())
        assert "clients M7 0, M8 2" in out and "reloaded" in out
        assert nd.answer(f"cc1.{DOMAIN}", "127.0.0.2")[0] == "NOERROR"
        out = _invoke(["act", "rpz", "--reload", "--resolver-control", rndc])
        assert "M8 warning.rpz.mamori." in out
        assert nd.answer(f"cc1.{DOMAIN}", "127.0.0.2")[0] == "NOERROR"
        assert nd.pid == pid and nd.proc.poll() is None


def test_resolver_sync_reports_an_unreachable_resolver(store: Path) -> None:
    _seed(store)
    result = runner.invoke(
        app, ["act", "resolver-sync", "--unbound-control", "unbound-control -s /nonexistent.sock"]
    )
    STATE.close()
    assert result.exit_code == 1
    assert "unbound-control -s /nonexistent.sock" in result.output


def test_ingest_dns_files(store: Path, tmp_path: Path) -> None:
    import socket

    from mamori.sim.dnstap import client_query

    _seed(store)
    tap = tmp_path / "r.dnstap"
    write_frame_stream(
        tap,
        [
            client_query(
                1.8e9,
                socket.inet_aton(c),
                5000,
                socket.inet_aton("127.0.0.1"),
                "x.example",
                "A",
                1,
                b"i",
                b"v",
            )
            for c in ("127.0.0.2", "127.0.0.3")
        ],
    )
    log = tmp_path / "unbound.log"
    log.write_text(
        "[1800000000] unbound[1:0] info: 127.0.0.2 a.example. A IN\n"
        "[1800000000] unbound[1:0] info: 127.0.0.2 broken\n"
        "[1800000001] unbound[1:0] info: 127.0.0.3 b.example. AAAA IN\n"
    )
    text = " ".join(_invoke(["ingest", "dns", "--format", "dnstap", str(tap)]).split())
    assert "2 queries, 1 stored (consenting), 0 malformed" in text
    text = " ".join(_invoke(["ingest", "dns", str(log), "--resolver", "127.0.0.1"]).split())
    assert "2 queries, 1 stored (consenting), 1 malformed" in text
    assert "line 2" in text
