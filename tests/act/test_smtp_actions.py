"""SMTP AUTH actions through the action contract: what the back ends write, the policy that applies
them, the owner's alert, restore, expiry, and the transparency report's counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mamori.act import base as act
from mamori.act.base import Action, ActionKind, ActionState
from mamori.act.smtp import (
    act_on_findings,
    plan_refusal,
    render_owner_alert,
    restore,
    smtp_backends,
    withdraw_expired,
)
from mamori.act.smtp_backends import DovecotDenyFile, NftSubmissionSet, PostfixAccessMap
from mamori.cli import app
from mamori.config import MailConfig, MamoriConfig, SmtpConfig
from mamori.governance import Governance
from mamori.report.transparency import build_report
from mamori.schemas import FINDINGS
from mamori.sim.mailsink import MailSink
from mamori.web.maildir import read_mailbox
from tests.conftest import make_config

NOW = datetime.now(UTC).replace(microsecond=0)
MIN = timedelta(minutes=1)


def _finding(kind: str, *, ip: str | None = None, auth_id: str | None = None,
             fid: str = "f1", span: timedelta = 5 * MIN) -> dict[str, Any]:  # fmt: skip
    ev = (
        {"failures": 40, "auth_ids_tried": 7, "trigger": NOW.isoformat()}
        if kind == "smtp-brute-force"
        else {"trigger": "recipient-counts", "recipients_per_hour": 300, "networks": 2,
              "baseline_busiest_hour": 4, "signs": ["new_network"], "failures_before_success": 0}
    )  # fmt: skip
    return {
        "detected": NOW,
        "finding_id": fid,
        "kind": kind,
        "method": "burst" if kind == "smtp-brute-force" else "recipient-counts",
        "ip": ip,
        "port": None,
        "protocol": "tcp",
        "score": 0.9,
        "first_seen": NOW - span,
        "last_seen": NOW,
        "measure": "M12" if kind == "smtp-brute-force" else "M11",
        "evidence": json.dumps(ev),
        "auth_id": auth_id,
    }


def _table(*rows: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=FINDINGS.arrow)


@pytest.fixture
def sink(tmp_path: Path) -> Any:
    s = MailSink(tmp_path / "mailboxes").start()
    yield s
    s.stop()


def _config(tmp_path: Path, sink: Any | None = None, **mail: Any) -> MamoriConfig:
    base = {"postmap_command": ("true",), "refusal_min_s": 600, "refusal_margin_s": 3600}
    update: dict[str, Any] = {"mail": MailConfig(**{**base, **mail})}
    if sink is not None:
        update["smtp"] = SmtpConfig(host=sink.host, port=sink.port, sender="abuse@isp.example")
    return make_config(tmp_path / "store", **update)


def test_a_refusal_lasts_the_attack_so_far_plus_the_margin(config: MamoriConfig) -> None:
    cfg = config.model_copy(update={"mail": MailConfig(refusal_min_s=600, refusal_margin_s=3600)})
    a = plan_refusal(cfg, _finding("smtp-brute-force", ip="203.0.113.9", span=30 * MIN), NOW)
    assert a.expires == NOW + 30 * MIN + timedelta(hours=1)
    assert (a.kind, a.target, a.measure, a.legal_basis.value) == (
        ActionKind.SMTP_AUTH_REFUSAL, "203.0.113.9", "M12", "justified-act"
    )  # fmt: skip
    assert a.subscribers_affected == 0  # an outside address
    short = plan_refusal(cfg, _finding("smtp-brute-force", ip="10.0.3.4", span=MIN), NOW)
    assert short.expires == NOW + timedelta(seconds=600 + 3600)  # at least refusal_min_s
    assert short.subscribers_affected == 1  # inside the ISP's pools: a subscriber's device


def _action(aid: str, target: str, kind: str, seconds: float) -> Action:
    now = datetime.now(UTC)  # not the module's NOW: the expiry is checked against the clock
    return Action(action_id=aid, kind=ActionKind(kind), target=target, measure="M12",
                  legal_basis="justified-act", justification="t", created=now,
                  expires=now + timedelta(seconds=seconds))  # fmt: skip


def test_back_ends_write_what_is_in_force_and_nothing_past_its_expiry(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    pf = PostfixAccessMap(cfg)
    a, b = (
        _action("a", "203.0.113.9", "smtp-auth-refusal", 600),
        _action("b", "2001:db8::7", "smtp-auth-refusal", 60),
    )
    pf.apply([a, b])
    text = pf.path.read_text()
    assert "203.0.113.9\t450 4.7.1 too many failed logins" in text
    assert "2001:db8::7\t" in text
    assert text.splitlines()[0].startswith("#")
    pf.withdraw([b])
    assert "2001:db8::7" not in pf.path.read_text()
    pf.withdraw([b])  # twice is harmless
    # an entry past its expiry is never written again, even before the sweep withdraws it
    assert "203.0.113.9" not in pf.text(pf._entries.load(), a.expires + timedelta(seconds=1))

    nft = NftSubmissionSet(cfg)
    script = nft.render([a, b])
    assert "delete table inet mamori_smtp" in script
    assert "203.0.113.9 timeout" in script and "2001:db8::7 timeout" in script
    assert "tcp dport { 25, 465, 587 } ip saddr @refused4 counter reject with tcp reset" in script

    deny = DovecotDenyFile(cfg)
    s = _action("s", "u7@x.jp", "account-suspension", 600)
    deny.apply([s])
    assert deny.path.read_text() == "u7@x.jp\n"
    deny.withdraw([s])
    assert deny.path.read_text() == ""


def test_a_failing_postmap_stops_the_step_and_nothing_is_recorded(tmp_path: Path) -> None:
    with Governance(_config(tmp_path, postmap_command=("false",))) as gov:
        from mamori.act.smtp_backends import BackendError

        with pytest.raises(BackendError):
            act_on_findings(gov, _table(_finding("smtp-brute-force", ip="203.0.113.9")), actor="t")
        cur = act.current(gov, "t", ["M12"])
        # proposed and approved are recorded; "applied" is not, since the back end failed
        assert [a.state for a in cur.values()] == [ActionState.APPROVED]


def test_policy_applies_refusals_and_suspensions_and_tells_the_owner(
    tmp_path: Path, sink: Any
) -> None:
    cfg = _config(tmp_path, sink)
    with Governance(cfg) as gov:
        findings = _table(
            _finding("smtp-brute-force", ip="203.0.113.9", fid="bf1"),
            _finding("smtp-compromised", ip="198.51.100.20", auth_id="u7@isp.example", fid="c1"),
        )
        report = act_on_findings(gov, findings, actor="t")
        assert sorted((a.kind.value, a.state.value) for a in report.applied) == [
            ("account-suspension", "applied"),
            ("smtp-auth-refusal", "applied"),
        ]
        assert {a.approved_by for a in report.applied} == {
            "policy:M12-refusal", "policy:M11-suspension"
        }  # fmt: skip
        assert "203.0.113.9" in PostfixAccessMap(cfg).path.read_text()
        assert DovecotDenyFile(cfg).path.read_text() == "u7@isp.example\n"
        assert list(report.alerts.values()) == ["sent"]
        (mail,) = read_mailbox(sink.directory)
        assert mail.recipients == ("u7@isp.example",)
        assert "u7@isp.example" in mail.body and "パスワード" in mail.body
        assert "change the password" in mail.body and "ref." in mail.body
        alert = act.current(
            gov,
            "t",
            ["M11"],
            ids=[f"alert-{report.applied[0].action_id}", f"alert-{report.applied[1].action_id}"],
        )
        assert [a.state for a in alert.values()] == [ActionState.ENDED]
        # the same findings again: nothing new (already answered)
        again = act_on_findings(gov, findings, actor="t")
        assert (again.proposed, again.already_open) == ([], 2)


def test_without_auto_the_actions_wait_for_the_desk(tmp_path: Path) -> None:
    with Governance(_config(tmp_path, auto_refuse=False, auto_suspend=False)) as gov:
        report = act_on_findings(
            gov,
            _table(_finding("smtp-brute-force", ip="203.0.113.9"),
                   _finding("smtp-compromised", auth_id="u7@x.jp", fid="c1")),
            actor="t",
        )  # fmt: skip
        assert report.applied == [] and len(report.proposed) == 2
        assert not PostfixAccessMap(gov.config).path.exists()


def test_an_auth_id_a_passwd_file_cannot_hold_is_not_suspended(tmp_path: Path) -> None:
    with Governance(_config(tmp_path)) as gov:
        report = act_on_findings(
            gov, _table(_finding("smtp-compromised", auth_id="evil:x@y", fid="c1")), actor="t"
        )
        assert report.proposed == [] and "not writable" in report.unusable[0]


def test_restore_ends_a_suspension_with_its_reason_audited(tmp_path: Path, sink: Any) -> None:
    with Governance(_config(tmp_path, sink)) as gov:
        act_on_findings(gov, _table(_finding("smtp-compromised", auth_id="u7@x.jp")), actor="t")
        (ended,) = restore(gov, "u7@x.jp", actor="desk", reason="owner changed the password")
        assert ended.state is ActionState.ENDED
        assert DovecotDenyFile(gov.config).path.read_text() == ""
        last = [e for e in gov.audit.entries() if e.dataset == "actions"][-1]
        detail = json.loads(last.detail or "{}")
        assert (last.measure, last.legal_basis, last.actor) == ("M11", "justified-act", "desk")
        assert detail["step"] == "ended" and detail["restore"] == "owner changed the password"
        assert restore(gov, "u7@x.jp", actor="desk", reason="again") == []


def test_expiry_withdraws_both_and_the_report_counts_them(tmp_path: Path) -> None:
    with Governance(_config(tmp_path)) as gov:
        act_on_findings(
            gov,
            _table(_finding("smtp-brute-force", ip="203.0.113.9"),
                   _finding("smtp-compromised", auth_id="u7@x.jp", fid="c1")),
            actor="t", alert=False,
        )  # fmt: skip
        later = NOW + timedelta(days=2)
        done = withdraw_expired(gov, "sweep", now=later)
        assert sorted(a.kind.value for a in done) == ["account-suspension", "smtp-auth-refusal"]
        assert "203.0.113.9" not in PostfixAccessMap(gov.config).path.read_text()
        assert DovecotDenyFile(gov.config).path.read_text() == ""
        report = build_report(gov, NOW.strftime("%Y-%m"), actor="t", now=later)
        by = {m.measure: m for m in report.measures}
        assert (by["M12"].auth_refusals, by["M12"].blocks) == (1, 1)
        assert (by["M11"].account_suspensions, by["M11"].blocks) == (1, 1)


def test_act_expire_uses_the_smtp_back_ends(tmp_path: Path) -> None:
    cfg = _config(tmp_path, refusal_min_s=1, refusal_margin_s=0, refusal_max_s=1)
    with Governance(cfg) as gov:
        act_on_findings(gov, _table(_finding("smtp-brute-force", ip="203.0.113.9", span=MIN * 0)),
                        actor="t")  # fmt: skip
    access = PostfixAccessMap(cfg).path
    assert "203.0.113.9" in access.read_text()
    toml = tmp_path / "mamori.toml"
    toml.write_text(f'[mail]\npostmap_command = ["true"]\npostfix_access_map = "{access}"\n')
    import time

    time.sleep(1.5)
    r = CliRunner().invoke(app, ["--store", str(cfg.store), "--config", str(toml), "act", "expire"])
    assert r.exit_code == 0, r.output
    assert "smtp-auth-refusal" in r.output
    assert "203.0.113.9" not in access.read_text()


def test_the_owner_alert_is_bilingual_and_names_no_one_else(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    s = _action("smtp-suspension-x", "u7@x.jp", "account-suspension", 3600)
    msg = render_owner_alert(cfg, s, _finding("smtp-compromised", auth_id="u7@x.jp"), "u7@x.jp")
    body = msg.get_content()
    assert msg["To"] == "u7@x.jp" and "smtp-suspension-x" in msg["Subject"]
    assert body.index("確認された内容") < body.index("What we observed")
    assert "300" in body  # recipients per hour
    assert "198.51.100" not in body  # no address of anyone


def test_cli_act_smtp_one_pass_and_restore(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    with Governance(cfg) as gov:
        gov.write("M12", "findings", _table(_finding("smtp-brute-force", ip="203.0.113.9")), "t")
    toml = tmp_path / "mamori.toml"
    access = PostfixAccessMap(cfg).path
    toml.write_text(f'[mail]\npostmap_command = ["true"]\npostfix_access_map = "{access}"\n')
    base = ["--store", str(cfg.store), "--config", str(toml), "act"]
    r = CliRunner().invoke(app, [*base, "smtp"])
    assert r.exit_code == 0, r.output
    assert "smtp-auth-refusal 203.0.113.9: applied" in r.output
    r = CliRunner().invoke(app, [*base, "smtp-restore", "203.0.113.9", "--reason", "false alarm"])
    assert r.exit_code == 0, r.output
    assert "ended" in r.output and "203.0.113.9" not in access.read_text()
    r = CliRunner().invoke(app, [*base, "smtp-restore", "203.0.113.9", "--reason", "again"])
    assert r.exit_code == 1


def test_every_kind_has_its_back_end(config: MamoriConfig) -> None:
    from mamori.act.backends import default_backends

    b = default_backends(config)
    assert set(smtp_backends(config)) <= set(b)
    assert b[ActionKind.ACCOUNT_SUSPENSION].kind is ActionKind.ACCOUNT_SUSPENSION
