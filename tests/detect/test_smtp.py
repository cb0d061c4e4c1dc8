"""SMTP AUTH detectors: brute force (M12) rule by rule, the owners' mistakes held back, and
compromised accounts (M11) from queue samples or recipient counts, against their own baseline."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mamori.detect.base import Window
from mamori.detect.registry import build
from mamori.detect.smtp_accounts import CompromisedDetector, CompromisedParams
from mamori.detect.smtp_bruteforce import BruteForceDetector, BruteForceParams
from mamori.governance import Governance
from tests.conftest import T0, table

S = timedelta(seconds=1)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)
ALL = Window()


def ev(
    at: datetime,
    ip: str,
    name: str | None,
    ok: bool,
    *,
    rcpt: int | None = None,
    service: str = "smtp",
    attempts: int = 1,
) -> dict[str, object]:
    return {
        "ts": at,
        "client_addr": ip,
        "auth_id": name,
        "sender": name if rcpt is not None else None,
        "success": ok,
        "recipients": rcpt,
        "service": service,
        "attempts": attempts,
    }


def _store(gov: Governance, rows: list[dict[str, object]]) -> None:
    gov.write("M11", "auth_events", table(rows), "test")


def _bf(gov: Governance, window: Window = ALL, **params: Any) -> list[dict[str, Any]]:
    run = BruteForceDetector(BruteForceParams(**params), write=False).run(gov, window, actor="t")
    return run.findings.to_pylist()


def _fails(
    ip: str, name: str | None, start: datetime, n: int, every: timedelta
) -> list[dict[str, object]]:
    return [ev(start + k * every, ip, name, False) for k in range(n)]


def test_five_failures_in_ten_minutes_is_a_burst_four_is_not(gov: Governance) -> None:
    rows = _fails("203.0.113.5", "a@x.jp", T0, 5, MIN)  # five in four minutes
    rows += _fails("203.0.113.4", "a@x.jp", T0, 4, MIN)
    rows += _fails("203.0.113.6", "a@x.jp", T0, 5, 3 * MIN)  # five in twelve minutes
    _store(gov, rows)
    (f,) = _bf(gov, rules=("burst",))
    ev_ = json.loads(f["evidence"])
    assert (f["ip"], f["method"], f["kind"], f["measure"]) == (
        "203.0.113.5", "burst", "smtp-brute-force", "M12"
    )  # fmt: skip
    assert (ev_["failures"], ev_["trigger"]) == (5, (T0 + 4 * MIN).isoformat())
    assert f["first_seen"] == T0 and f["last_seen"] == T0 + 4 * MIN
    assert f["auth_id"] is None and "a@x.jp" not in f["evidence"]  # M12 names the address only
    # the thresholds are parameters: 5 in 12 minutes with a 15-minute window
    assert {x["ip"] for x in _bf(gov, rules=("burst",), find_time_s=900)} == {
        "203.0.113.5", "203.0.113.6"
    }  # fmt: skip


def test_dovecot_attempts_count_and_services_can_be_left_out(gov: Governance) -> None:
    _store(gov, [ev(T0, "203.0.113.7", "a", False, service="imap", attempts=3),
                 ev(T0 + S, "203.0.113.7", "a", False, service="auth", attempts=2)])  # fmt: skip
    assert [f["ip"] for f in _bf(gov, rules=("burst",))] == ["203.0.113.7"]
    assert _bf(gov, rules=("burst",), services=("imap", "smtp")) == []


def test_a_finding_is_reported_by_the_window_its_rule_fired_in(gov: Governance) -> None:
    _store(gov, _fails("203.0.113.5", "a", T0, 8, MIN))
    assert len(_bf(gov, Window(T0, T0 + 5 * MIN))) == 1  # fired at T0+4min
    assert _bf(gov, Window(T0 + 5 * MIN, T0 + H)) == []  # fired before: an earlier run's


def test_an_owner_mistyping_is_held_back(gov: Governance) -> None:
    rows = _fails("10.0.0.8", "me@x.jp", T0, 6, 10 * S)
    rows.append(ev(T0 + MIN, "10.0.0.8", "me@x.jp", True))
    # two users behind one NAT address, each mistyping then logging in
    rows += _fails("198.51.100.1", "u1@x.jp", T0, 3, 10 * S)
    rows += _fails("198.51.100.1", "u2@x.jp", T0 + 40 * S, 3, 10 * S)
    rows += [ev(T0 + 2 * MIN, "198.51.100.1", n, True) for n in ("u1@x.jp", "u2@x.jp")]
    # an attacker who guessed right after six tries is not an owner: one name failed before
    rows += _fails("203.0.113.9", "v@x.jp", T0, 6, 10 * S) + _fails(
        "203.0.113.9", "w@x.jp", T0, 1, S
    )
    rows += [ev(T0 + MIN, "203.0.113.9", "v@x.jp", True)]
    _store(gov, rows)
    run = BruteForceDetector(write=False).run(gov, Window(), actor="t")
    assert [f["ip"] for f in run.findings.to_pylist()] == ["203.0.113.9"]
    assert run.summary["held_back_as_owner"] == 2
    # 0 switches it off
    assert len(_bf(gov, typo_max_failures=0)) == 3


def test_user_name_enumeration(gov: Governance) -> None:
    rows = [ev(T0 + k * 5 * MIN, "203.0.113.20", f"user{k}", False) for k in range(6)]
    _store(gov, rows)
    assert _bf(gov, rules=("burst",)) == []  # one failure per five minutes: no burst
    (f,) = _bf(gov, rules=("enumeration",))
    assert (f["ip"], f["method"], json.loads(f["evidence"])["auth_ids_tried"]) == (
        "203.0.113.20", "enumeration", 6
    )  # fmt: skip


def test_a_distributed_attack_on_one_account_flags_each_source_but_its_owner(
    gov: Governance,
) -> None:
    rows: list[dict[str, object]] = []
    for k in range(6):  # six addresses, two failures each, within the hour
        rows += _fails(f"203.0.113.{30 + k}", "boss@x.jp", T0 + k * 5 * MIN, 2, MIN)
    # the owner mistyped once from home, and logs in from there
    rows += [ev(T0, "10.0.0.5", "boss@x.jp", False), ev(T0 + S, "10.0.0.5", "boss@x.jp", True)]
    _store(gov, rows)
    found = _bf(gov, rules=("distributed",))
    assert sorted(f["ip"] for f in found) == [f"203.0.113.{30 + k}" for k in range(6)]
    assert {f["method"] for f in found} == {"distributed"}
    # fewer sources than the threshold: nothing
    assert _bf(gov, rules=("distributed",), dist_min_sources=7) == []


def test_slow_brute_force_over_hours_and_a_stale_device_held_back(gov: Governance) -> None:
    # one failure every 40 minutes for 8 hours: never 5 in 10 minutes
    rows = [ev(T0 + k * 40 * MIN, "203.0.113.40", f"n{k % 3}", False) for k in range(12)]
    # a phone with an old password, at home where the same account logs in
    rows += [ev(T0 + k * 30 * MIN, "10.0.0.9", "me@x.jp", False, service="imap") for k in range(16)]
    rows += [ev(T0 + 2 * H, "10.0.0.9", "me@x.jp", True, rcpt=1)]
    _store(gov, rows)
    window = Window(T0, T0 + 9 * H)
    assert _bf(gov, window, rules=("burst", "enumeration", "distributed")) == []
    (f,) = _bf(gov, window)
    ev_ = json.loads(f["evidence"])
    assert (f["ip"], f["method"], ev_["failures"]) == ("203.0.113.40", "slow", 12)
    # fired once the sixth distinct hour was reached with ten failures
    assert ev_["trigger"] == (T0 + 9 * 40 * MIN).isoformat()
    assert _bf(gov, window, slow_min_hours=9) == []


# ---------------------------------------------------------------- compromised accounts (M11)


def _acc(
    gov: Governance, window: Window = ALL, **params: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    run = CompromisedDetector(CompromisedParams(**params), write=False).run(gov, window, actor="t")
    return run.findings.to_pylist(), run.summary


def _normal_day(start: datetime, hours: int = 10) -> list[dict[str, object]]:
    """Forty accounts sending a message an hour from home: the usual queue."""
    return [
        ev(start + h * H + k * MIN, f"10.0.1.{k}", f"u{k}@x.jp", True, rcpt=1)
        for h in range(hours)
        for k in range(40)
    ]


def test_a_burst_from_a_new_network_after_a_recipient_spike_is_found(gov: Governance) -> None:
    rows = _normal_day(T0)
    # u7's password is used from abroad: 30 messages of 5 recipients in twenty minutes
    rows += [
        ev(T0 + 6 * H + k * 40 * S, "203.0.113.77", "u7@x.jp", True, rcpt=5) for k in range(30)
    ]
    _store(gov, rows)
    found, summary = _acc(gov)
    (f,) = found
    ev_ = json.loads(f["evidence"])
    assert (f["auth_id"], f["ip"], f["kind"], f["measure"], f["method"]) == (
        "u7@x.jp", "203.0.113.77", "smtp-compromised", "M11", "recipient-counts"
    )  # fmt: skip
    # its own hourly message counts too
    assert ev_["recipients_per_hour"] == 151 and ev_["new_networks"] == 1
    assert "new_network" in ev_["signs"] and ev_["baseline_busiest_hour"] == 1
    assert summary["triggers"] == ["recipient-counts"]
    # without a spike there is no trigger, whatever one account does
    assert _acc(gov, spike_min_recipients=500)[0] == []


def test_an_account_that_always_sends_much_is_its_own_baseline(gov: Governance) -> None:
    rows = _normal_day(T0 - 24 * H, 24) + _normal_day(T0)
    # a newsletter account: 100 recipients every hour from its own server, every day
    rows += [ev(T0 - 24 * H + h * H, "192.0.2.50", "news@x.jp", True, rcpt=100) for h in range(34)]
    _store(gov, rows)
    # the second day, with the first as its baseline (on the first, nothing is usual yet)
    day2 = Window(T0, T0 + 10 * H)
    found, summary = _acc(gov, day2, spike_factor=1.5)
    assert found == []
    assert summary["below_volume"] >= 1
    # the same volume from a new account (no history) with the same spike is found
    _store(
        gov,
        [ev(T0 + 8 * H + k * MIN, "203.0.113.80", "new@x.jp", True, rcpt=20) for k in range(10)],
    )
    assert [f["auth_id"] for f in _acc(gov, day2, spike_factor=1.5)[0]] == ["new@x.jp"]


def test_volume_alone_is_held_back_unless_allowed(gov: Governance) -> None:
    rows = _normal_day(T0)
    # the account's usual network (a day ago), now sending far more
    rows += [ev(T0 - 20 * H, "10.0.1.7", "u7@x.jp", True, rcpt=1)]
    rows += [ev(T0 + 6 * H + k * 40 * S, "10.0.1.7", "u7@x.jp", True, rcpt=5) for k in range(30)]
    _store(gov, rows)
    found, summary = _acc(gov)
    assert found == [] and summary["held_back_volume_only"] == 1
    assert [f["auth_id"] for f in _acc(gov, require_evidence=False)[0]] == ["u7@x.jp"]


def test_a_success_right_after_failures_is_evidence(gov: Governance) -> None:
    rows = _normal_day(T0)
    rows += [ev(T0 - 20 * H, "10.0.1.7", "u7@x.jp", True, rcpt=1)]
    rows += [ev(T0 + 6 * H - 10 * MIN + k * S, "10.0.1.7", "u7@x.jp", False) for k in range(8)]
    rows += [ev(T0 + 6 * H + k * 40 * S, "10.0.1.7", "u7@x.jp", True, rcpt=5) for k in range(30)]
    _store(gov, rows)
    (f,) = _acc(gov)[0]
    ev_ = json.loads(f["evidence"])
    assert ev_["signs"] == ["failures_before_success"] and ev_["failures_before_success"] == 8


def test_queue_samples_are_the_trigger_where_a_sampler_runs(
    gov: Governance, tmp_path: Path
) -> None:
    rows = _normal_day(T0)
    thieves = ("203.0.113.90", "203.0.113.91", "203.0.113.200", "203.0.113.201")
    rows += [ev(T0 + 6 * H + k * 40 * S, thieves[k % 4], "u7@x.jp", True, rcpt=5)
             for k in range(30)]  # fmt: skip
    _store(gov, rows)
    samples = [{"ts": T0 + k * 10 * MIN, "server": "mx", "messages": 30} for k in range(36)]
    samples.append({"ts": T0 + 6 * H + 25 * MIN, "server": "mx", "messages": 400})
    gov.write("M11", "mail_queue", table(samples), "test")
    asn = tmp_path / "asn.csv"
    asn.write_text("prefix,asn,country\n203.0.113.0/25,64500,JP\n203.0.113.128/25,64501,US\n")
    (f,) = _acc(gov, asn_table=asn)[0]
    ev_ = json.loads(f["evidence"])
    # four thieves and the owner's usual address; two ASNs (the table covers the thieves only)
    assert (f["method"], ev_["spike_size"], ev_["sources"], ev_["asns"]) == (
        "queue-samples", 400, 5, 2
    )  # fmt: skip
    assert {"sources", "new_network", "asns", "networks"} <= set(ev_["signs"])
    # the queue's usual size rules: a queue always that full is no spike
    assert _acc(gov, queue_min_messages=500)[0] == []


def test_registry_builds_both_from_their_sections() -> None:
    bf = build("smtp-brute-force", {"smtp-brute-force": {"max_failures": 3}}, write=False)
    acc = build("smtp-compromised", {"smtp-compromised": {"baseline_days": 2}}, write=False)
    assert isinstance(bf, BruteForceDetector) and bf.params.max_failures == 3
    assert isinstance(acc, CompromisedDetector) and acc.params.baseline_days == 2
    with pytest.raises(ValueError, match="unknown rules"):
        BruteForceParams(rules=("burst", "psychic"))
