"""BCP 38 on a real nftables router in network namespaces (tests/netns_harness.py): the rendering
`act filters --kind spoofing --render nftables` loaded on the BNG lets a subscriber's own source
through, drops a source from outside the interface's addresses (ACL), and drops a source the ACL
allows but whose route leaves by another interface (strict uRPF)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from tests.netns_harness import DYNAMIC, PLAN, REFLECTOR, Lab, lab

pytestmark = pytest.mark.slow  # builds namespaces and sends packets through a router

SPOOFED = "203.0.113.9"  # behind no customer interface
ROUTED_ELSEWHERE = "192.0.2.77"  # allowed by the ACL below, but routed towards the Internet


@pytest.fixture
def router() -> Iterator[Lab]:
    with lab(f"s{os.getpid() % 10000}") as the_lab:
        yield the_lab


def test_acl_and_urpf_drop_spoofed_sources(router: Lab, tmp_path: Path) -> None:
    cfg = tmp_path / "mamori.toml"
    cfg.write_text(
        '[[address_plan]]\nname = "home"\nkind = "dynamic"\n'
        f'prefixes = ["{PLAN["dynamic"]}"]\n'
        '[[network.customer_interfaces]]\nexporter = "172.31.0.1"\nifindex = 2\nname = "b0"\n'
        'pools = ["home"]\nprefixes = ["192.0.2.64/26"]\n'
    )
    r = CliRunner().invoke(
        app,
        ["--store", str(tmp_path / "s"), "--config", str(cfg), "act", "filters", "--kind",
         "spoofing", "--render", "nftables"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    router.ns(router.bng, "nft", "-f", "-", stdin=r.stdout)
    for a in (SPOOFED, ROUTED_ELSEWHERE):
        router.ns(router.sub, "ip", "addr", "add", f"{a}/32", "dev", "lo")
    got = router.listen(router.net, REFLECTOR, 9000)
    router.send(router.sub, SPOOFED, 40000, REFLECTOR, 9000, count=2)
    router.send(router.sub, ROUTED_ELSEWHERE, 40000, REFLECTOR, 9000, count=2)
    router.send(router.sub, DYNAMIC, 40000, REFLECTOR, 9000, count=2)
    assert got.got(2)
    assert not got.got(3, within_s=0.5)
    assert set(got.sources) == {DYNAMIC}
    drops = router.drops("mamori_antispoof")
    assert drops["acl b0"] == 2  # the ACL caught the outside source
    assert drops["urpf b0"] == 2  # uRPF caught the allowed prefix that routes elsewhere
