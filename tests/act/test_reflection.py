"""Standing reflection filters (M10): what the plan covers, the protocol list in mamori.toml, the
Junos / IOS-XR / FlowSpec renderings (golden files) and the command line."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.act.flowspec import flowspec_reflection
from mamori.act.nft import render_reflection
from mamori.act.reflection import basis_text, reflection_plan
from mamori.act.routers import iosxr_reflection, junos_reflection
from mamori.cli import app
from mamori.config import AddressPool, ConfigError, MamoriConfig, load_config
from mamori.config_network import NetworkConfig, ReflectionConfig

GOLDEN = Path(__file__).with_name("golden")
ACTION = "reflection-golden-1"

PLAN = (
    AddressPool(name="home", kind="dynamic", prefixes=("10.0.0.0/22", "2001:db8:100::/40")),
    AddressPool(name="mobile", kind="dynamic", prefixes=("100.64.0.0/16",)),
    AddressPool(name="biz", kind="static", prefixes=("192.0.2.0/24",)),
    AddressPool(name="cgn", kind="cgnat", prefixes=("198.51.100.0/28",)),
)


def _config(tmp_path: Path, **network: object) -> MamoriConfig:
    cfg = load_config(overrides={"store": tmp_path / "store"})
    net = NetworkConfig(**network)  # type: ignore[arg-type]
    return cfg.model_copy(update={"address_plan": PLAN, "network": net})


def _covered(prefixes: list[str]) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return {ipaddress.ip_network(p) for p in prefixes}


def test_plan_covers_dynamic_pools_only_and_never_the_resolvers(tmp_path: Path) -> None:
    plan = reflection_plan(_config(tmp_path, resolvers=["10.0.1.53/32"]))
    assert plan.pools == ("home", "mobile")
    nets = _covered(plan.v4)
    # the resolver is cut out of its pool, the rest of the pool still covered
    assert not any(ipaddress.ip_address("10.0.1.53") in n for n in nets)
    for a in ("10.0.1.52", "10.0.1.54", "10.0.0.1", "10.0.3.255", "100.64.9.9"):
        assert any(ipaddress.ip_address(a) in n for n in nets), a
    # static and CGNAT pools are never covered
    for a in ("192.0.2.1", "198.51.100.1"):
        assert not any(ipaddress.ip_address(a) in n for n in nets), a
    assert plan.v6 == ["2001:db8:100::/40"]
    total = sum(n.num_addresses for n in nets)
    assert total == 4 * 256 + 65536 - 1
    assert plan.carved == 1


def test_a_resolver_covering_a_whole_prefix_removes_it(tmp_path: Path) -> None:
    plan = reflection_plan(_config(tmp_path, resolvers=["100.64.0.0/15"]))
    assert plan.v4 == ["10.0.0.0/22"]


def test_protocols_overlay_the_defaults_from_mamori_toml(tmp_path: Path) -> None:
    toml = tmp_path / "mamori.toml"
    toml.write_text(
        "[network.reflection.protocols.ntp]\nenabled = false\n"
        '[network.reflection.protocols.lab]\nport = 4433\nreason = "a service of ours"\n'
    )
    cfg = load_config(toml)
    names = [n for n, _ in cfg.network.reflection.enabled()]
    assert "ntp" not in names and "lab" in names and "dns" in names
    assert len(names) == 10  # nine defaults on, one added
    assert cfg.network.reflection.protocols["ntp"].port == 123  # kept, switched off
    toml.write_text("[network.reflection.protocols.lab]\nport = 4433\n")
    with pytest.raises(ConfigError, match=r"network\.reflection\.protocols\.lab\.reason"):
        load_config(toml)
    toml.write_text('[network.reflection]\nmatch = "both"\n')
    with pytest.raises(ConfigError, match=r"network\.reflection\.match"):
        load_config(toml)


def test_every_default_protocol_of_the_issue_is_on_with_its_port() -> None:
    ports = {n: p.port for n, p in ReflectionConfig().enabled()}
    assert ports == {
        "dns": 53,
        "ntp": 123,
        "snmp": 161,
        "ssdp": 1900,
        "cldap": 389,
        "memcached": 11211,
        "chargen": 19,
        "ws-discovery": 3702,
        "coap": 5683,
        "arms": 3283,
    }
    assert all(p.reason for _, p in ReflectionConfig().enabled())


def test_basis_text_says_what_is_examined(tmp_path: Path) -> None:
    dst = basis_text(reflection_plan(_config(tmp_path)))
    assert "justified act" in dst and "dynamic pools only" in dst
    assert "destination address and destination port" in dst
    src = basis_text(reflection_plan(_config(tmp_path, reflection={"match": "source-port"})))
    assert "destination address, source port" in src


def _golden(name: str, text: str) -> None:
    """``text`` equals the reviewed file ``golden/NAME``; MAMORI_UPDATE_GOLDEN=1 rewrites it (then
    review the diff)."""
    path = GOLDEN / name
    if os.environ.get("MAMORI_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}"
    assert text == path.read_text(), f"{name} differs from the golden file"


def _small(tmp_path: Path, **reflection: object) -> MamoriConfig:
    protocols = {"ntp": {"enabled": False}, "ssdp": {"enabled": False}}
    return _config(
        tmp_path,
        resolvers=["10.0.1.53/32", "2001:db8:100::53/128"],
        reflection={"protocols": {**protocols, "memcached": {"enabled": False}}, **reflection},
    ).model_copy(
        update={
            "address_plan": (
                AddressPool(name="home", kind="dynamic", prefixes=("10.0.0.0/23", "2001:db8:200::/48")),
                AddressPool(name="biz", kind="static", prefixes=("192.0.2.0/24",)),
            )
        }
    )  # fmt: skip


@pytest.mark.parametrize("match", ["destination-port", "source-port"])
@pytest.mark.parametrize(
    ("render", "ext"),
    [(junos_reflection, "junos"), (iosxr_reflection, "iosxr"), (flowspec_reflection, "exabgp")],
)
def test_renderings_match_the_golden_files(
    tmp_path: Path, match: str, render: object, ext: str
) -> None:
    plan = reflection_plan(_small(tmp_path, match=match))
    assert callable(render)
    _golden(f"reflection-{match}.{ext}", render(plan, ACTION))


def test_nft_rendering_names_its_action_and_every_reason(tmp_path: Path) -> None:
    cfg = _small(tmp_path)
    plan = reflection_plan(cfg)
    r = render_reflection(plan, cfg.network.nft, ACTION)
    assert r.table == "mamori_reflection"
    assert f'comment "mamori {ACTION}"' in r.text
    for name, p in plan.protocols:
        assert f'udp dport {p.port} counter drop comment "{name}: {p.reason}' in r.text
    assert "resolvers4" not in r.text  # destination mode: no source is examined
    _golden("reflection-destination-port.nft", r.text)
    src = reflection_plan(_small(tmp_path, match="source-port"))
    text = render_reflection(src, cfg.network.nft, ACTION).text
    assert "ip saddr != @resolvers4 ip daddr @dynamic4 udp sport 53 counter drop" in text


def test_cli_renders_each_target(tmp_path: Path) -> None:
    cfg = tmp_path / "mamori.toml"
    cfg.write_text(
        '[[address_plan]]\nname = "home"\nkind = "dynamic"\nprefixes = ["10.0.0.0/16"]\n'
        '[[address_plan]]\nname = "biz"\nkind = "static"\nprefixes = ["192.0.2.0/24"]\n'
    )
    base = ["--store", str(tmp_path / "store"), "--config", str(cfg), "act", "filters"]
    runner = CliRunner()
    r = runner.invoke(app, [*base, "--kind", "reflection", "--render", "junos"])
    assert r.exit_code == 0, r.output
    assert "10.0.0.0/16;" in r.stdout and "192.0.2.0/24" not in r.stdout
    assert "filter mamori-reflection-v4" in r.stdout
    r = runner.invoke(app, [*base, "--render", "iosxr", "--out", str(tmp_path / "acl.txt")])
    assert r.exit_code == 0, r.output
    assert "deny udp any net-group mamori-dynamic-v4 eq 53" in (tmp_path / "acl.txt").read_text()
    r = runner.invoke(app, [*base, "--render", "flowspec"])
    assert "destination 10.0.0.0/16; protocol udp; destination-port [ =19 =53" in r.stdout
    r = runner.invoke(app, [*base, "--render", "nftables"])
    assert "elements = {\n\t\t\t10.0.0.0/16\n\t\t}" in r.stdout
    assert runner.invoke(app, base).exit_code == 2  # neither --render nor --apply
    # a plan without dynamic pools has nothing to filter
    cfg.write_text('[[address_plan]]\nname = "biz"\nkind = "static"\nprefixes = ["192.0.2.0/24"]\n')
    r = runner.invoke(app, [*base, "--render", "junos"])
    assert r.exit_code == 1 and "no dynamic pool" in r.output
