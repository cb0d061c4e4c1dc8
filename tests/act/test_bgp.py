"""FlowSpec and RTBH through ExaBGP: the rule text, the commands, the dry-run back end, the policy
that auto-approves, and — against a real BIRD 2 peer in a network namespace — the route held
while the action is in force and gone after its expiry or its end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.act import base as act
from mamori.act.backends import default_backends
from mamori.act.base import ActionKind, ActionState
from mamori.act.bgp import BgpBackend, BgpError, FlowRule, bgp_action, render_command
from mamori.cli import app
from mamori.config import load_config
from mamori.config_network import BgpConfig, NetworkConfig
from mamori.governance import Governance
from tests.bgp_harness import Peer, bgp_peer
from tests.conftest import make_config, until

VICTIM = "203.0.113.5"
RULE = f"dst={VICTIM}/32;proto=udp;sport=53,123;then=discard"


def test_flow_rule_round_trip_and_command() -> None:
    rule = FlowRule.parse(RULE)
    assert rule.target() == RULE and FlowRule.parse(rule.target()) == rule
    assert rule.exabgp("announce") == (
        f"announce flow route {{ match {{ destination {VICTIM}/32; protocol udp; "
        "source-port [ =53 =123 ]; } then { discard; } }"
    )
    six = FlowRule.parse("dst=2001:db8::5/128;proto=tcp;dport=80;then=rate-limit:1000")
    assert six.exabgp("withdraw") == (
        "withdraw flow route { match { destination 2001:db8::5/128/0; next-header tcp; "
        "destination-port [ =80 ]; } then { rate-limit 1000; } }"
    )
    for bad in ("dst=x", "dst=10.0.0.0/8;proto=icmp;sport=1", "dst=10.0.0.1/32;evil=1",
                "dst=10.0.0.1/32;then=accept", "dst=10.0.0.1/32 ; then=discard"):  # fmt: skip
        with pytest.raises(ValueError):
            FlowRule.parse(bad)


def test_rtbh_command_and_its_limit() -> None:
    a = bgp_action(ActionKind.RTBH, f"{VICTIM}/32", expires_in=timedelta(minutes=5))
    assert render_command(a, BgpConfig(), "announce") == (
        f"announce route {VICTIM}/32 next-hop 192.0.2.1 community [ 65535:666 no-export ]"
    )
    wide = bgp_action(ActionKind.RTBH, "203.0.113.0/24", expires_in=timedelta(minutes=5))
    with pytest.raises(ValueError, match="rtbh_max_addresses"):
        render_command(wide, BgpConfig(), "announce")
    assert render_command(wide, BgpConfig(rtbh_max_addresses=256), "withdraw").startswith(
        "withdraw route 203.0.113.0/24"
    )


def test_dry_run_back_end_goes_through_the_life_cycle(gov: Governance) -> None:
    backends = default_backends(gov.config)
    be = backends[ActionKind.FLOWSPEC]
    assert isinstance(be, BgpBackend) and be.dry_run
    now = datetime.now(UTC)
    a = bgp_action(ActionKind.FLOWSPEC, RULE, now=now, expires_in=timedelta(minutes=10))
    [p] = act.propose(gov, [a], "op", now=now)
    [ap] = act.approve(gov, [p], "desk", now=now)
    [applied] = act.apply(gov, [ap], "op", backend=be, now=now)
    act.end(gov, [applied], "op", backend=be, now=now + timedelta(minutes=1))
    log = (gov.config.store / "_state" / "bgp" / "dry-run.log").read_text().splitlines()
    assert [line.split(" ", 2)[1] for line in log] == ["announce", "withdraw"]
    steps = [json.loads(e.detail or "{}")["step"] for e in gov.audit.entries()
             if e.dataset == "actions" and e.event == "write"]  # fmt: skip
    assert steps == ["proposed", "approved", "applied", "ended"]


def test_a_refused_command_records_nothing(gov: Governance) -> None:
    be = BgpBackend(gov.config, ActionKind.RTBH, transport=lambda c: "error")
    now = datetime.now(UTC)
    a = bgp_action(ActionKind.RTBH, f"{VICTIM}/32", now=now, expires_in=timedelta(minutes=5))
    [p] = act.propose(gov, [a], "op", now=now)
    [ap] = act.approve(gov, [p], "op", now=now)
    with pytest.raises(BgpError, match="error"):
        act.apply(gov, [ap], "op", backend=be, now=now)
    assert act.current(gov, "op", ["M13"])[a.action_id].state is ActionState.APPROVED


# ---------------------------------------------------------------- against a real peer


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    with bgp_peer(tmp_path / "bgp") as p:
        yield p


def _cli_config(tmp_path: Path, peer: Peer, extra: str = "") -> Path:
    cfg = tmp_path / "mamori.toml"
    cfg.write_text(
        f'store = "{tmp_path / "store"}"\n[network.bgp]\napi_socket = "{peer.socket}"\n{extra}'
    )
    return cfg


@pytest.mark.slow
def test_peer_holds_routes_while_in_force_and_not_after_expiry(peer: Peer, tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path / "store", network=NetworkConfig(bgp=BgpConfig(api_socket=peer.socket))
    )
    with Governance(cfg) as gov:
        now = datetime.now(UTC)
        life = timedelta(minutes=5)
        rtbh = bgp_action(ActionKind.RTBH, f"{VICTIM}/32", now=now, expires_in=life)
        flow = bgp_action(ActionKind.FLOWSPEC, RULE, now=now, expires_in=life)
        backends = default_backends(cfg)
        for a in (rtbh, flow):
            [p] = act.propose(gov, [a], "detector", now=now)
            [ap] = act.approve(gov, [p], "desk", now=now)
            act.apply(gov, [ap], "desk", backend=backends[a.kind], now=now)
        until(lambda: f"{VICTIM}/32" in peer.unicast() and VICTIM in peer.flows(), limit_s=5)
        assert "(65535,666)" in peer.unicast() and "BGP.next_hop: 192.0.2.1" in peer.unicast()
        assert "sport 53,123" in peer.flows()

        # still in force before the expiry: the sweep leaves it
        assert act.expire_due(gov, "sweep", now + life / 2, backends=backends) == []
        assert f"{VICTIM}/32" in peer.unicast()
        done = act.expire_due(gov, "sweep", now + life, backends=backends)
        assert {d.action_id for d in done} == {rtbh.action_id, flow.action_id}
        until(lambda: VICTIM not in peer.unicast() and VICTIM not in peer.flows(), limit_s=5)
        audit = [json.loads(e.detail or "{}") for e in gov.audit.entries()
                 if e.dataset == "actions" and e.event == "write"]  # fmt: skip
        assert [d["step"] for d in audit].count("expired") == 2


@pytest.mark.slow
def test_cli_propose_approve_end_and_auto_approve(peer: Peer, tmp_path: Path) -> None:
    cfg = _cli_config(tmp_path, peer, 'auto_approve = ["udp-amplification"]\n')
    run = CliRunner()
    base = ["--config", str(cfg), "act", "bgp"]
    r = run.invoke(app, [*base, "propose", "--kind", "flowspec", "--target", RULE,
                         "--minutes", "30", "--justification", "victim under attack"])  # fmt: skip
    assert r.exit_code == 0, r.output
    action_id = r.output.split()[1]
    assert VICTIM not in peer.flows()  # proposed only: nothing announced
    r = run.invoke(app, [*base, "approve", action_id])
    assert r.exit_code == 0, r.output
    until(lambda: VICTIM in peer.flows(), limit_s=5)
    r = run.invoke(app, [*base, "end", action_id])
    assert r.exit_code == 0, r.output
    until(lambda: VICTIM not in peer.flows(), limit_s=5)

    # a well-known attack type: the policy approves, announced at once
    r = run.invoke(app, [*base, "propose", "--kind", "rtbh", "--target", f"{VICTIM}/32",
                         "--attack-type", "udp-amplification"])  # fmt: skip
    assert r.exit_code == 0, r.output
    until(lambda: f"{VICTIM}/32" in peer.unicast(), limit_s=5)
    with Governance(load_config(cfg)) as gov:
        states = {(a.kind.value, a.state.value, a.approved_by)
                  for a in act.current(gov, "t", ["M13"]).values()}  # fmt: skip
    assert states == {
        ("flowspec", "ended", _me()),
        ("rtbh", "applied", "policy:auto_approve:udp-amplification"),
    }
    # a prefix too wide to blackhole is refused before anything is recorded
    r = run.invoke(app, [*base, "propose", "--kind", "rtbh", "--target", "203.0.113.0/24"])
    assert r.exit_code == 2 and "rtbh_max_addresses" in r.output


def _me() -> str:
    from mamori.cli.common import actor_name

    return actor_name()


@pytest.mark.slow
def test_reflection_flowspec_rendering_is_accepted_by_the_peer(peer: Peer) -> None:
    """The `act filters --render flowspec` lines (golden file) are valid ExaBGP commands that BIRD
    installs."""
    from mamori.act.bgp import RelayTransport

    relay = RelayTransport(peer.socket)
    golden = Path(__file__).with_name("golden") / "reflection-destination-port.exabgp"
    lines = [x for x in golden.read_text().splitlines() if not x.startswith("#")]
    assert all(relay(x) == "done" for x in lines)
    until(lambda: peer.flows().count("dport 19,53,161,389,3283,3702,5683") == 9, limit_s=5)


def _finding(method: str, *, direction: str = "inbound", scope: str = "host",
             ip: str = VICTIM) -> dict[str, object]:  # fmt: skip
    return {
        "finding_id": f"ddos-{method}-{direction}",
        "kind": "ddos",
        "method": method,
        "ip": ip,
        "evidence": json.dumps({"direction": direction, "scope": scope, "types": {"udp": 1.0}}),
    }


def test_mitigation_for_each_attack_type() -> None:
    from mamori.act.mitigation import mitigation_for

    assert mitigation_for(_finding("amplification")) == (
        ActionKind.FLOWSPEC,
        f"dst={VICTIM}/32;proto=udp;sport=19,53,123,161,389,1900,3283,3702,5683,11211;then=discard",
    )
    assert mitigation_for(_finding("icmp")) == (
        ActionKind.FLOWSPEC, f"dst={VICTIM}/32;proto=icmp;then=discard",
    )  # fmt: skip
    assert mitigation_for(_finding("syn")) == (ActionKind.RTBH, f"{VICTIM}/32")
    carpet = _finding("carpet", scope="prefix", ip="10.0.7.0/24")
    assert mitigation_for(carpet) == (ActionKind.FLOWSPEC, "dst=10.0.7.0/24;proto=udp;then=discard")
    assert mitigation_for(_finding("udp", direction="outbound")) is None  # an alert, not a route


def test_policy_approves_well_known_types_and_the_finding_is_traceable(tmp_path: Path) -> None:
    from mamori.act.mitigation import propose_mitigation

    cfg = make_config(tmp_path / "s",
                      network=NetworkConfig(bgp=BgpConfig(auto_approve=("amplification",))))  # fmt: skip
    with Governance(cfg) as gov:
        backends = default_backends(cfg)
        amp = propose_mitigation(gov, _finding("amplification"), "collector", backends=backends)
        syn = propose_mitigation(gov, _finding("syn"), "collector", backends=backends)
        assert amp is not None and syn is not None
        assert (amp.state, amp.approved_by) == (
            ActionState.APPLIED,
            "policy:auto_approve:amplification",
        )
        assert amp.finding_id == "ddos-amplification-inbound"
        assert (syn.kind, syn.state) == (ActionKind.RTBH, ActionState.PROPOSED)  # a person decides
        steps = [(json.loads(e.detail or "{}")["step"], json.loads(e.detail or "{}").get("policy"))
                 for e in gov.audit.entries() if e.dataset == "actions" and e.event == "write"]  # fmt: skip
        assert steps == [("proposed", None), ("approved", "policy:auto_approve:amplification"),
                         ("applied", None), ("proposed", None)]  # fmt: skip
        log = (cfg.store / "_state" / "bgp" / "dry-run.log").read_text()
        assert "announce flow route" in log and "announce route" not in log
