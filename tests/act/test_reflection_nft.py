"""The standing reflection filter (M10) on a real nftables router, in network namespaces the test
builds (tests/netns_harness.py): applied with `mamori act filters --apply`, the packets it drops
and those it lets through, the action it records, its replacement and its expiry."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.act import base as act
from mamori.act.backends import default_backends
from mamori.act.nft import NftBackend, table_owner
from mamori.act.reflection import apply_reflection
from mamori.cli import app
from mamori.config import load_config
from mamori.governance import Governance
from tests.netns_harness import (
    DYNAMIC,
    ISP_RESOLVER,
    OUTSIDE_RESOLVER,
    PLAN,
    REFLECTOR,
    STATIC,
    Lab,
    lab,
)

pytestmark = pytest.mark.slow  # builds namespaces and sends packets through a router

TABLE = "mamori_reflection"


@pytest.fixture(scope="module")
def lab_once() -> Iterator[Lab]:
    with lab(f"r{os.getpid() % 10000}") as the_lab:
        yield the_lab


@pytest.fixture
def router(lab_once: Lab) -> Iterator[Lab]:
    yield lab_once
    lab_once.reset()


def _toml(tmp_path: Path, the_lab: Lab, match: str = "destination-port") -> Path:
    cfg = tmp_path / "mamori.toml"
    cfg.write_text(
        f'store = "{tmp_path / "store"}"\n'
        '[[address_plan]]\nname = "home"\nkind = "dynamic"\n'
        f'prefixes = ["{PLAN["dynamic"]}"]\n'
        '[[address_plan]]\nname = "biz"\nkind = "static"\n'
        f'prefixes = ["{PLAN["static"]}"]\n'
        f'[network]\nresolvers = ["{ISP_RESOLVER}/32"]\n'
        f'[network.reflection]\nmatch = "{match}"\n'
        f"[network.nft]\ncommand = {json.dumps(the_lab.nft_command())}\n"
    )
    return cfg


def _apply_cli(cfg: Path) -> str:
    r = CliRunner().invoke(app, ["--config", str(cfg), "act", "filters", "--apply"])
    assert r.exit_code == 0, r.output
    return r.output


def test_destination_port_filter_drops_requests_to_dynamic_only(
    router: Lab, tmp_path: Path
) -> None:
    """seeds/001: a query from the Internet to port 53 of a dynamic address (what makes a home
    router a reflector) is dropped; the same query to a static address passes; a subscriber's
    own DNS query and its answer, through the ISP's resolver or any other, pass."""
    cfg = _toml(tmp_path, router)
    output = _apply_cli(cfg)
    assert "M10 nftables reflection-nftables-" in output and "justified-act" in output

    dyn = router.listen(router.sub, DYNAMIC, 53)
    static = router.listen(router.sub, STATIC, 53)
    router.send(router.net, REFLECTOR, 40001, DYNAMIC, 53)
    router.send(router.net, REFLECTOR, 40001, STATIC, 53)
    assert static.got(3), "a query to a static address must pass"
    assert not dyn.got(1, within_s=0.5), "a query to a dynamic address must be dropped"
    assert router.drops(TABLE).get("dns: " + _reason("dns"), 0) == 3

    isp = router.listen(router.net, ISP_RESOLVER, 53, echo=True)
    other = router.listen(router.net, OUTSIDE_RESOLVER, 53, echo=True)
    assert router.ask(router.sub, DYNAMIC, ISP_RESOLVER, 53), "own DNS via the ISP resolver"
    assert isp.got(1)
    assert router.ask(router.sub, DYNAMIC, OUTSIDE_RESOLVER, 53), "own DNS via another resolver"
    assert other.got(1)

    # NTP to a dynamic address: dropped by the ntp rule, counted there
    router.send(router.net, REFLECTOR, 40002, DYNAMIC, 123, count=2)
    router.send(router.net, REFLECTOR, 40002, STATIC, 53, count=1)  # a marker that passes
    assert static.got(4)
    assert router.drops(TABLE).get("ntp: " + _reason("ntp"), 0) == 2

    # the action is recorded with its basis, approved by whoever ran it, in force
    with Governance(load_config(cfg)) as gov:
        [a] = act.current(gov, "test", ["M10"]).values()
        assert a.state is act.ActionState.APPLIED and a.kind is act.ActionKind.NFTABLES
        assert a.legal_basis.value == "justified-act" and a.target == "reflection:home"
        assert a.justification and "dynamic pools only" in a.justification
        assert a.approved_by and a.expires > datetime.now(UTC)
        assert table_owner(router.nft_command(), "inet", TABLE) == a.action_id
        steps = [
            json.loads(e.detail or "{}").get("step")
            for e in gov.audit.entries()
            if e.dataset == "actions" and e.event == "write"
        ]
        assert steps == ["proposed", "approved", "applied"]


def _reason(name: str) -> str:
    from mamori.config_network import DEFAULT_REFLECTION_PROTOCOLS

    return str(DEFAULT_REFLECTION_PROTOCOLS[name]["reason"])


def test_source_port_filter_drops_reflected_answers_but_not_the_isp_resolvers(
    router: Lab, tmp_path: Path
) -> None:
    """The issue's variant: reflected answers (source port 53) to a dynamic address are dropped,
    to a static address they pass, and the ISP's resolver answers its subscribers; an outside
    resolver's answers are dropped too — the cost of this variant."""
    cfg = _toml(tmp_path, router, match="source-port")
    _apply_cli(cfg)
    dyn = router.listen(router.sub, DYNAMIC, 40100)
    static = router.listen(router.sub, STATIC, 40100)
    router.send(router.net, REFLECTOR, 53, DYNAMIC, 40100)
    router.send(router.net, REFLECTOR, 53, STATIC, 40100)
    assert static.got(3), "a reflected answer to a static address must pass"
    assert not dyn.got(1, within_s=0.5), "a reflected answer to a dynamic address is dropped"
    router.listen(router.net, ISP_RESOLVER, 53, echo=True)
    router.listen(router.net, OUTSIDE_RESOLVER, 53, echo=True)
    assert router.ask(router.sub, DYNAMIC, ISP_RESOLVER, 53), "own DNS via the ISP resolver"
    assert not router.ask(router.sub, DYNAMIC, OUTSIDE_RESOLVER, 53)
    assert router.ask(router.sub, STATIC, OUTSIDE_RESOLVER, 53)


def test_replaced_then_expired_and_withdrawn(router: Lab, tmp_path: Path) -> None:
    """A new filter ends the one it replaces (its table stays: it is the new one's now); at its
    expiry the sweep withdraws it from the router."""
    cfg = _toml(tmp_path, router)
    config = load_config(cfg)
    start = datetime.now(UTC) - timedelta(days=config.network.reflection.expiry_days, hours=-1)
    with Governance(config) as gov:
        backend = NftBackend(config)
        first = apply_reflection(gov, "op", backend, now=start)
        second = apply_reflection(gov, "op", backend, now=start + timedelta(minutes=1))
        assert table_owner(router.nft_command(), "inet", TABLE) == second.action_id
        states = {k: v.state for k, v in act.current(gov, "op", ["M10"]).items()}
        assert states == {first.action_id: "ended", second.action_id: "applied"}
        dyn = router.listen(router.sub, DYNAMIC, 53)
        static = router.listen(router.sub, STATIC, 53)
        router.send(router.net, REFLECTOR, 40003, DYNAMIC, 53, count=1)
        router.send(router.net, REFLECTOR, 40003, STATIC, 53, count=1)
        assert static.got(1) and not dyn.got(1, within_s=0.5)

        # nothing is due before the expiry; after it the sweep withdraws the table
        assert (
            act.expire_due(gov, "sweep", datetime.now(UTC), backends=default_backends(config)) == []
        )
        later = datetime.now(UTC) + timedelta(hours=2)
        [done] = act.expire_due(gov, "sweep", later, backends=default_backends(config))
        assert done.action_id == second.action_id and done.state is act.ActionState.EXPIRED
        assert table_owner(router.nft_command(), "inet", TABLE) is None
        router.send(router.net, REFLECTOR, 40004, DYNAMIC, 53, count=1)
        assert dyn.got(1), "after the expiry nothing is filtered"
