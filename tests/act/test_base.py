"""The action contract (mamori.act.base): every step of the life cycle allowed and every other one
refused, expiry, the sweep, the back-end calls, the audit entry each step writes, legacy rows; and
the RPZ zones (`act rpz`) and alerts that go through it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mamori.act import base as act
from mamori.act.backends import default_backends
from mamori.act.base import Action, ActionKind, ActionState, InvalidTransition
from mamori.act.notify import queue_alerts, send_queued
from mamori.act.rpz import action_serial, generate_rpz
from mamori.cli import STATE, app
from mamori.governance import AccessRefused, Governance, LegalBasis
from mamori.schemas import ACTIONS
from tests.act.conftest import SmtpServer
from tests.act.test_notify import ACTOR, _config, _report, _setup, _t

T0 = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=6)
BEFORE = T0 + timedelta(hours=1)  # while it holds
AFTER = T0 + timedelta(hours=7)  # past its expiry
S = ActionState

Step = Callable[..., list[Action]]
STEPS: dict[ActionState, Step] = {
    S.APPROVED: act.approve,
    S.REJECTED: act.reject,
    S.APPLIED: act.apply,
    S.ENDED: act.end,
    S.EXPIRED: act.expire,
}
# Written out, not derived from act.TRANSITIONS, so a change to the table fails here.
ALLOWED = {
    (S.PROPOSED, S.APPROVED),
    (S.PROPOSED, S.REJECTED),
    (S.PROPOSED, S.EXPIRED),
    (S.APPROVED, S.APPLIED),
    (S.APPROVED, S.REJECTED),
    (S.APPROVED, S.EXPIRED),
    (S.APPLIED, S.ENDED),
    (S.APPLIED, S.EXPIRED),
}
ALL_STEPS = [(a, b) for a in S for b in STEPS]


def action(state: ActionState = S.PROPOSED, **kw: Any) -> Action:
    fields: dict[str, Any] = {
        "action_id": f"t-{state}",
        "kind": ActionKind.NFTABLES,
        "target": "198.51.100.7/32",
        "measure": "M13",
        "legal_basis": LegalBasis.SELF_DEFENCE,
        "created": T0,
        "expires": EXPIRES,
        "state": state,
        **kw,
    }
    return Action(**fields)


def stored(gov: Governance, measure: str = "M13") -> list[dict[str, Any]]:
    return gov.open(measure, "actions", None, "test").arrow().to_pylist()


def action_writes(gov: Governance) -> list[dict[str, Any]]:
    return [
        {
            "measure": e.measure,
            "basis": e.legal_basis,
            "actor": e.actor,
            **json.loads(e.detail or "{}"),
        }
        for e in gov.audit.entries()
        if e.event == "write" and e.dataset == "actions"
    ]


@pytest.mark.parametrize(("start", "to"), ALL_STEPS, ids=[f"{a}->{b}" for a, b in ALL_STEPS])
def test_every_step_allowed_or_refused(
    gov: Governance, start: ActionState, to: ActionState
) -> None:
    a = action(start)
    now = AFTER if to is S.EXPIRED else BEFORE
    if (start, to) not in ALLOWED:
        with pytest.raises(InvalidTransition, match="not a step of the life cycle"):
            STEPS[to](gov, [a], "test", now=now)
        assert stored(gov) == [] and action_writes(gov) == []
        return
    [done] = STEPS[to](gov, [a], "test", now=now)
    assert done.state is to and done.action_id == a.action_id
    [row] = stored(gov)
    assert row["state"] == to.value and row["expires"] == EXPIRES
    [w] = action_writes(gov)
    assert (w["step"], w["from"], w["to"], w["action_ids"]) == (to, [start], to, [a.action_id])
    assert (w["measure"], w["basis"], w["actor"]) == ("M13", "self-defence", "test")


@pytest.mark.parametrize(
    ("start", "to", "now", "why"),
    [
        (S.PROPOSED, S.EXPIRED, BEFORE, "not yet"),
        (S.APPROVED, S.EXPIRED, BEFORE, "not yet"),
        (S.APPLIED, S.EXPIRED, EXPIRES - timedelta(milliseconds=1), "not yet"),
        (S.PROPOSED, S.APPROVED, AFTER, "only be recorded as expired"),
        (S.PROPOSED, S.REJECTED, AFTER, "only be recorded as expired"),
        (S.APPROVED, S.APPLIED, EXPIRES, "only be recorded as expired"),
        (S.APPLIED, S.ENDED, AFTER, "only be recorded as expired"),
    ],
)
def test_expiry_decides_when(
    gov: Governance, start: ActionState, to: ActionState, now: datetime, why: str
) -> None:
    with pytest.raises(InvalidTransition, match=why):
        STEPS[to](gov, [action(start)], "test", now=now)
    assert stored(gov) == []


@pytest.mark.parametrize(
    ("proposal", "why"),
    [
        (action(S.APPROVED), "starts proposed"),
        (action(approved_by="someone"), "starts proposed"),
        (action(expires=T0 + timedelta(minutes=30)), "expires before it is proposed"),
    ],
)
def test_proposals_refused(gov: Governance, proposal: Action, why: str) -> None:
    with pytest.raises(InvalidTransition, match=why):
        act.propose(gov, [proposal], "test", now=BEFORE)
    assert stored(gov) == []


def test_every_action_ends() -> None:
    with pytest.raises(ValueError, match="expires"):
        action(expires=None)
    with pytest.raises(ValueError, match="expires before it is proposed"):
        action(expires=T0)
    with pytest.raises(ValueError, match="kind"):
        action(kind="acl")  # only the seven kinds (old rows are renamed on reading)


def test_one_batch_is_all_or_nothing(gov: Governance) -> None:
    ok, over = action(S.PROPOSED, action_id="ok"), action(S.ENDED, action_id="over")
    with pytest.raises(InvalidTransition, match="over"):
        act.approve(gov, [ok, over], "test", now=BEFORE)
    assert stored(gov) == []


def test_life_cycle_versions_and_audit(gov: Governance) -> None:
    a = action(action_id="nft-1", subscribers_affected=3, finding_id="f-1")
    steps = [
        (act.propose, {}, S.PROPOSED),
        (act.approve, {"approved_by": "web:desk1"}, S.APPROVED),
        (act.apply, {}, S.APPLIED),
        (act.end, {}, S.ENDED),
    ]
    versions = []
    for i, (step, kw, state) in enumerate(steps):
        [a] = step(gov, [a], "test", now=T0 + timedelta(minutes=i + 1), **kw)
        assert a.state is state
        versions.append(a)
    assert (versions[-1].approved_by, versions[-1].start, versions[-1].end) == (
        "web:desk1",
        T0 + timedelta(minutes=3),
        T0 + timedelta(minutes=4),
    )
    # every version kept; the current one is the last step
    assert sorted(r["state"] for r in stored(gov)) == ["applied", "approved", "ended", "proposed"]
    assert act.current(gov, "test") == {"nft-1": versions[-1]}
    assert [w["step"] for w in action_writes(gov)] == ["proposed", "approved", "applied", "ended"]
    assert [w["from"] for w in action_writes(gov)] == [[], ["proposed"], ["approved"], ["applied"]]


def test_a_basis_other_than_consent_needs_its_justification(gov: Governance) -> None:
    a = action(measure="M5", kind=ActionKind.ALERT, target="N-1", legal_basis="justified-act")
    with pytest.raises(AccessRefused, match="justification"):
        act.propose(gov, [a], "test", now=BEFORE)
    why = "M5 risk test: 12 likely-infected devices in 24 h > configured level 10"
    [p] = act.propose(gov, [a.model_copy(update={"justification": why})], "test", now=BEFORE)
    [ok] = act.approve(gov, [p], "test", now=BEFORE)  # the stored justification is used again
    assert ok.justification == why
    assert [w["justification"] for w in action_writes(gov)] == [why, why]


class Recorder:
    """A back end that records what it was asked to do (and can fail)."""

    def __init__(self, kind: ActionKind = ActionKind.NFTABLES, fail: bool = False) -> None:
        self.kind = kind
        self.fail = fail
        self.calls: list[tuple[str, list[str]]] = []

    def render(self, actions: Sequence[Action]) -> list[str]:
        return [f"add element inet mamori block {{ {a.target} }}" for a in actions]

    def apply(self, actions: Sequence[Action]) -> None:
        if self.fail:
            raise OSError("nft: permission denied")
        self.calls.append(("apply", [a.action_id for a in actions]))

    def withdraw(self, actions: Sequence[Action]) -> None:
        self.calls.append(("withdraw", [a.action_id for a in actions]))


def test_back_end_acts_before_the_record(gov: Governance) -> None:
    failing = Recorder(fail=True)
    with pytest.raises(OSError, match="permission denied"):
        act.apply(gov, [action(S.APPROVED)], "test", backend=failing, now=BEFORE)
    assert stored(gov) == []  # nothing claims what the back end did not do
    with pytest.raises(ValueError, match="cannot act on nftables"):
        act.apply(gov, [action(S.APPROVED)], "test", backend=Recorder(ActionKind.RTBH), now=BEFORE)
    be = Recorder()
    [a] = act.apply(gov, [action(S.APPROVED)], "test", backend=be, now=BEFORE)
    act.end(gov, [a], "test", backend=be, now=BEFORE)
    # a proposal that expires was never in force: nothing to withdraw
    act.expire(gov, [action(S.PROPOSED, action_id="p")], "test", backend=be, now=AFTER)
    assert be.calls == [("apply", ["t-approved"]), ("withdraw", ["t-approved"])]
    assert be.render([a]) == ["add element inet mamori block { 198.51.100.7/32 }"]


def test_expire_due_sweeps_what_is_past_its_expiry(gov: Governance) -> None:
    late = {"expires": EXPIRES}
    later = {"expires": T0 + timedelta(days=30)}
    act.propose(gov, [action(action_id="p", **late)], "test", now=BEFORE)
    [b] = act.propose(gov, [action(action_id="b", **late)], "test", now=BEFORE)
    act.approve(gov, [b], "test", now=BEFORE)
    [c] = act.propose(gov, [action(action_id="c", **late)], "test", now=BEFORE)
    act.apply(gov, act.approve(gov, [c], "test", now=BEFORE), "test", now=BEFORE)
    [d] = act.propose(gov, [action(action_id="d", **later)], "test", now=BEFORE)
    act.apply(gov, act.approve(gov, [d], "test", now=BEFORE), "test", now=BEFORE)
    [e] = act.propose(gov, [action(action_id="e", **late)], "test", now=BEFORE)
    act.reject(gov, [e], "test", now=BEFORE)
    be = Recorder()
    assert act.expire_due(gov, "sweep", BEFORE, backends={ActionKind.NFTABLES: be}) == []
    done = act.expire_due(gov, "sweep", AFTER, backends={ActionKind.NFTABLES: be})
    assert sorted(a.action_id for a in done) == ["b", "c", "p"]
    assert be.calls == [("withdraw", ["c"])]  # only what was in force
    states = {k: v.state.value for k, v in act.current(gov, "test").items()}
    assert states == {
        "p": "expired",
        "b": "expired",
        "c": "expired",
        "d": "applied",
        "e": "rejected",
    }
    [w] = [w for w in action_writes(gov) if w["actor"] == "sweep"]
    assert (
        w["step"] == "expired"
        and w["sweep"]
        and sorted(w["from"])
        == [
            "applied",
            "approved",
            "proposed",
        ]
    )
    assert act.expire_due(gov, "sweep", AFTER) == []  # nothing left to do


def test_rows_from_before_the_contract_are_read_under_todays_names(gov: Governance) -> None:
    old = [
        {"action_id": "o1", "kind": "acl", "state": "pending", "end": EXPIRES},
        {"action_id": "o2", "kind": "suspend", "state": "active", "start": T0, "end": EXPIRES},
        {"action_id": "o3", "kind": "rpz", "state": "pending"},  # no expiry: shown, not decided
        {"action_id": "o4", "kind": "teleport", "state": "pending", "end": EXPIRES},
    ]
    rows = [
        {"created": T0, "target": "x", "measure": "M13", "legal_basis": "emergency", **r}
        for r in old
    ]
    gov.write("M13", "actions", pa.Table.from_pylist(rows, schema=ACTIONS.arrow), "test")
    latest = {
        r["action_id"]: r
        for r in act.latest_table(gov.open("M13", "actions", None, "t").arrow()).to_pylist()
    }
    assert {k: (r["kind"], r["state"]) for k, r in latest.items()} == {
        "o1": ("nftables", "proposed"),
        "o2": ("account-suspension", "applied"),
        "o3": ("rpz", "proposed"),
        "o4": ("teleport", "proposed"),
    }
    assert (latest["o2"]["expires"], latest["o2"]["end"]) == (EXPIRES, None)
    assert act.effective_state(latest["o2"], AFTER) == "expired"
    cur = act.current(gov, "test")
    assert sorted(cur) == ["o1", "o2"]
    [ended] = act.end(gov, [cur["o2"]], "test", now=BEFORE)
    assert act.current(gov, "test")["o2"] == ended


# ---------------------------------------------------------------- RPZ zones (`act rpz`)


def _act(gov: Governance, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setenv("MAMORI_STORE", str(gov.config.store))
    monkeypatch.setenv("MAMORI_DNS__WARNING_HOST", gov.config.dns.warning_host)
    monkeypatch.setenv("MAMORI_ACTOR", "cli-test")
    STATE.close()
    STATE._config = None
    STATE.store = None
    STATE.config_file = None
    try:
        r = CliRunner().invoke(app, ["act", *args])
    finally:
        STATE.close()
        STATE._config = None
    assert r.exit_code == 0, r.output
    return r.output


def test_act_rpz_zones_are_rpz_actions(
    dns_gov: Governance, monkeypatch: pytest.MonkeyPatch
) -> None:
    _act(dns_gov, monkeypatch, "rpz")
    first = act.current(dns_gov, "test")
    assert sorted((a.measure, a.state.value, a.approved_by) for a in first.values()) == [
        ("M7", "applied", "cli-test"),
        ("M8", "applied", "cli-test"),
    ]
    for a in first.values():
        assert a.kind is ActionKind.RPZ and a.legal_basis is LegalBasis.CONSENT
        assert a.expires - a.created == timedelta(days=dns_gov.config.dns.zone_expiry_days)
    steps = [(w["measure"], w["step"], w["actor"]) for w in action_writes(dns_gov)]
    assert steps == [
        (m, s, "cli-test") for m in ("M7", "M8") for s in ("proposed", "approved", "applied")
    ]
    _act(dns_gov, monkeypatch, "rpz")
    second = act.current(dns_gov, "test")
    assert {k: second[k].state.value for k in first} == {k: "ended" for k in first}
    assert sorted(a.state.value for k, a in second.items() if k not in first) == ["applied"] * 2


def test_an_expired_zone_is_emptied(dns_gov: Governance) -> None:
    c2 = generate_rpz(dns_gov, "test").by_measure("M7")
    assert "cc1." in c2.path.read_text()
    # a zone not rebuilt before its expiry is emptied by the sweep, at a newer serial
    later = datetime.now(UTC) + timedelta(days=dns_gov.config.dns.zone_expiry_days, hours=1)
    done = act.expire_due(dns_gov, "test", later, backends=default_backends(dns_gov.config))
    assert sorted(a.measure for a in done) == ["M7", "M8"]
    text = c2.path.read_text()
    assert "cc1." not in text and f" {c2.serial} " not in text and "SOA" in text
    states = {a.measure: a.state.value for a in act.current(dns_gov, "test").values()}
    assert states == {"M7": "expired", "M8": "expired"}


def test_act_expire(dns_gov: Governance, monkeypatch: pytest.MonkeyPatch) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    old = action(created=past, expires=past + timedelta(days=1), action_id="nft-old")
    act.propose(dns_gov, [old], "test", now=past + timedelta(minutes=1))
    out = _act(dns_gov, monkeypatch, "expire")
    assert "M13 nftables nft-old: expired" in out and "1 actions expired" in out
    assert act.current(dns_gov, "test")["nft-old"].state is S.EXPIRED
    assert "0 actions expired" in _act(dns_gov, monkeypatch, "expire")


def test_withdrawing_a_replaced_zone_leaves_the_new_one(
    dns_gov: Governance, tmp_path: Path
) -> None:
    from mamori.act.rpz import RpzBackend

    old = generate_rpz(dns_gov, "test", out_dir=tmp_path).by_measure("M7")
    new = generate_rpz(dns_gov, "test", out_dir=tmp_path).by_measure("M7")
    replaced = act.current(dns_gov, "test")[f"rpz-M7-{old.serial}"]
    assert action_serial(replaced) == old.serial
    RpzBackend(dns_gov.config, out_dir=tmp_path).withdraw([replaced])
    assert "cc1." in new.path.read_text()


# ---------------------------------------------------------------- alerts


@pytest.fixture
def alert_gov(tmp_path: Path, smtp_server: SmtpServer) -> Any:
    g = Governance(_config(tmp_path / "store", smtp_server.port, m5_infected_devices_threshold=1))
    _setup(g)
    yield g
    g.close()


def test_each_alert_sent_is_an_alert_action(alert_gov: Governance, smtp_server: SmtpServer) -> None:
    # s3 has opted out: alerted under justified act (risk test holds), s4 under consent
    _report(
        alert_gov, "infected", [("10.16.0.9", 0.5, 1, "mirai"), ("10.16.0.10", 0.5, 2, "mirai")]
    )
    queue_alerts(alert_gov, actor=ACTOR, measures=["M5"], now=_t(3))
    queued = act.current(alert_gov, "test", ["M5"])
    assert {a.state.value for a in queued.values()} == {"approved"}
    by_basis = {a.legal_basis.value: a for a in queued.values()}
    assert by_basis["consent"].approved_by == "policy:M5-consent"
    assert by_basis["justified-act"].approved_by == "policy:M5-justified-act"
    assert "M5 risk test" in (by_basis["justified-act"].justification or "")
    notes = alert_gov.open(
        "M5", "notifications", None, "t", basis="justified-act", justification="test"
    ).arrow()
    nids = set(notes.column("notification_id").to_pylist())
    for a in queued.values():  # the target names the alert, never the subscriber or an address
        assert (
            a.kind is ActionKind.ALERT and a.target in nids and a.action_id == f"alert-{a.target}"
        )
        assert a.subscribers_affected == 1
        assert a.expires == _t(3) + timedelta(hours=alert_gov.config.alerts.interval_hours)
    smtp_server.stop()
    send_queued(alert_gov, actor=ACTOR, now=_t(3))  # failed: still approved, to be retried
    assert {a.state.value for a in act.current(alert_gov, "test", ["M5"]).values()} == {"approved"}
    smtp_server.start()
    send_queued(alert_gov, actor=ACTOR, now=_t(4))
    sent = act.current(alert_gov, "test", ["M5"])
    assert {a.state.value for a in sent.values()} == {"ended"}
    assert {(a.start, a.end) for a in sent.values()} == {(_t(4), _t(4))}
    steps = [(w["step"], w["basis"]) for w in action_writes(alert_gov)]
    assert sorted(steps) == sorted(
        (s, b)
        for s in ("proposed", "approved", "applied", "ended")
        for b in ("consent", "justified-act")
    )
    for w in action_writes(alert_gov):
        assert "s3" not in json.dumps(w) and "10.16.0" not in json.dumps(w)


def test_an_alert_never_sent_expires(alert_gov: Governance, smtp_server: SmtpServer) -> None:
    _report(alert_gov, "infected", [("10.16.0.10", 0.5, 2, "mirai")])
    queue_alerts(alert_gov, actor=ACTOR, measures=["M5"], now=_t(3))
    smtp_server.stop()
    send_queued(alert_gov, actor=ACTOR, now=_t(3))
    late = _t(3) + timedelta(hours=alert_gov.config.alerts.interval_hours)
    [gone] = act.expire_due(alert_gov, "sweep", late)
    assert (gone.kind, gone.state, gone.start) == (ActionKind.ALERT, S.EXPIRED, None)
    smtp_server.start()
    send_queued(alert_gov, actor=ACTOR, now=late + timedelta(minutes=5))  # sent late: not applied
    assert act.current(alert_gov, "test", ["M5"])[gone.action_id].state is S.EXPIRED
