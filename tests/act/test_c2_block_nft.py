"""IP-level C&C blocking (M7) on a real nftables router in network namespaces
(tests/netns_harness.py): the consenting subscriber cannot reach the C&C server, the opted-out one
can, a withdrawn consent lets traffic through within 10 s, and the action's end or a new list
version replace or withdraw the table."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.act import base as act
from mamori.act.c2_block import C2SyncResult, sync_c2_block, watch_c2_block
from mamori.act.nft import NftBackend, table_owner
from mamori.cli import app
from mamori.config import load_config
from mamori.governance import Governance
from tests.act.conftest import allocations_table
from tests.act.test_c2_block import rep_rows
from tests.conftest import until
from tests.netns_harness import C2, DYNAMIC, DYNAMIC_2, PLAN, STATIC, Lab, lab

pytestmark = pytest.mark.slow  # builds namespaces and sends packets through a router

TABLE = "mamori_c2"
CLIENTS = {DYNAMIC: "sub-in", DYNAMIC_2: "sub-out", STATIC: "sub-static"}


@pytest.fixture
def router() -> Iterator[Lab]:
    with lab(f"c{os.getpid() % 10000}") as the_lab:
        yield the_lab


@pytest.fixture
def setup(router: Lab, tmp_path: Path) -> Iterator[tuple[Path, Governance]]:
    cfg = tmp_path / "mamori.toml"
    cfg.write_text(
        f'store = "{tmp_path / "store"}"\n'
        '[[address_plan]]\nname = "home"\nkind = "dynamic"\n'
        f'prefixes = ["{PLAN["dynamic"]}"]\n'
        '[[address_plan]]\nname = "biz"\nkind = "static"\n'
        f'prefixes = ["{PLAN["static"]}"]\n'
        f"[network.nft]\ncommand = {json.dumps(router.nft_command())}\n"
    )
    gov = Governance(load_config(cfg))
    gov.write_registry(
        "reputation", rep_rows([("ip-port", C2, 443, "tcp", "c2")]), "test", source="feed"
    )
    gov.write_registry("allocations", allocations_table(CLIENTS), "test", source="csv")
    gov.consent.set("sub-out", "M7", False, actor="test", channel="cli")
    router.tcp_listen(router.net, C2, 443)
    router.tcp_listen(router.net, C2, 8443)
    yield cfg, gov
    gov.close()


def test_consenting_blocked_opted_out_passes_withdrawal_within_10_s(
    router: Lab, setup: tuple[Path, Governance]
) -> None:
    cfg, gov = setup
    r = CliRunner().invoke(app, ["--config", str(cfg), "act", "c2-block"])
    assert r.exit_code == 0, r.output
    assert "1 C&C endpoints, 2 consenting addresses; new list version" in r.output

    assert not router.tcp_connect(router.sub, DYNAMIC, C2, 443), "consenting: blocked"
    assert router.tcp_connect(router.sub, DYNAMIC_2, C2, 443), "opted out: passes"
    assert router.tcp_connect(router.sub, DYNAMIC, C2, 8443), "another port is not listed"
    drops = router.drops(TABLE)
    assert drops["M7: to a C&C endpoint"] >= 1

    [a] = act.current(gov, "test", ["M7"]).values()
    assert a.kind is act.ActionKind.NFTABLES and a.legal_basis.value == "consent"
    assert a.subscribers_affected == 2 and a.target.startswith("c2-ip:mamori_c2:")

    syncs: list[C2SyncResult] = []
    stop = threading.Event()
    worker = threading.Thread(
        target=watch_c2_block,
        args=(gov, "test"),
        kwargs={"interval_s": 0.5, "stop": stop, "on_sync": syncs.append},
    )
    worker.start()
    try:
        until(lambda: len(syncs) >= 1)
        changed_at = time.monotonic()
        gov.consent.set("sub-in", "M7", False, actor="subscriber", channel="web")
        until(lambda: router.tcp_connect(router.sub, DYNAMIC, C2, 443), limit_s=10.0)
        took = time.monotonic() - changed_at
        print(f"consent withdrawal -> traffic passes: {took:.2f} s")  # figure for the report
        assert took <= 10.0
        # consent given again: blocked again, no new list version (the list did not change)
        gov.consent.set("sub-in", "M7", True, actor="subscriber", channel="web")
        until(lambda: not router.tcp_connect(router.sub, DYNAMIC, C2, 443), limit_s=10.0)
        assert all(not s.renewed for s in syncs)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()


def test_new_list_version_replaces_and_end_withdraws(
    router: Lab, setup: tuple[Path, Governance]
) -> None:
    cfg, gov = setup
    first = sync_c2_block(gov, "op")
    assert first.renewed and not sync_c2_block(gov, "op").renewed  # nothing changed
    gov.write_registry(
        "reputation", rep_rows([("ip", C2, None, None, "c2")]), "test", source="feed2"
    )
    second = sync_c2_block(gov, "op")
    assert second.renewed and second.action_id != first.action_id
    states = {k: v.state for k, v in act.current(gov, "op", ["M7"]).items()}
    assert states == {first.action_id: "ended", second.action_id: "applied"}
    assert table_owner(router.nft_command(), "inet", TABLE) == second.action_id
    assert not router.tcp_connect(router.sub, DYNAMIC, C2, 8443), "every port of a listed IP"

    # the router lost its rules (a reboot): the next sync puts them back
    router.ns(router.bng, "nft", "flush", "ruleset")
    third = sync_c2_block(gov, "op")
    assert third.renewed and table_owner(router.nft_command(), "inet", TABLE) == third.action_id

    # ended by hand: withdrawn from the router first
    [cur] = [a for a in act.current(gov, "op", ["M7"]).values() if a.state == "applied"]
    act.end(gov, [cur], "op", backend=NftBackend(load_config(cfg)))
    assert table_owner(router.nft_command(), "inet", TABLE) is None
    assert router.tcp_connect(router.sub, DYNAMIC, C2, 443)
