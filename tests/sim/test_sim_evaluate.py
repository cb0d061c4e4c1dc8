from __future__ import annotations

import json
from pathlib import Path

import pytest

from mamori.sim import SimSummary, load_findings, score, score_files


def _truth(s: SimSummary) -> dict:  # type: ignore[type-arg]
    return json.loads((Path(s.out) / "truth.json").read_text())


def test_perfect_c2_detector_scores_one(small: SimSummary) -> None:
    t = _truth(small)
    findings = [
        {"ip": e["ip"], "port": e["port"], "score": 1.0}
        for e in t["endpoints"]
        if e["role"] == "cc"
    ]
    s = score("c2", findings, t)
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)
    assert s.missed == [] and s.spurious == []


def test_trap_falls_are_named(small: SimSummary, tmp_path: Path) -> None:
    t = _truth(small)
    trap = next(x for x in t["benign_traps"] if x["role"] == "iot-cloud")
    cc = next(e for e in t["endpoints"] if e["role"] == "cc")
    lines = [
        json.dumps({"ip": cc["ip"], "port": cc["port"]}),
        json.dumps({"ip": trap["ip"], "port": trap["port"]}),
    ]
    f = tmp_path / "findings.jsonl"
    f.write_text("\n".join(lines) + "\n")
    assert len(load_findings(f)) == 2
    s = score_files("c2", f, Path(small.out) / "truth.json")
    assert s.true_positives == 1 and s.false_positives == 1
    assert s.traps_hit == [f"{trap['ip']}:{trap['port']}"]
    assert 0 < s.recall < 1


def test_infected_matches_address_and_time(small: SimSummary) -> None:
    t = _truth(small)
    inf = t["infected"][0]
    a = inf["addresses"][-1]
    good = {"ip": a["ip"], "port": a["port_lo"] if a["inside_ip"] else None, "time": a["from"]}
    bad = {"ip": a["ip"], "time": "2000-01-01T00:00:00Z"}
    s = score("infected", [good, bad], t)
    assert s.true_positives == 1 and s.false_positives == 1


@pytest.mark.parametrize("kind", ["ddos", "reflection", "smtp"])
def test_other_kinds_score(small: SimSummary, kind: str) -> None:
    t = _truth(small)
    if kind == "ddos":
        f = [{"ip": v} for v in t["ddos"]["victims"]]
    elif kind == "reflection":
        f = [{"ip": r["ip"]} for r in t["reflection"]["reflectors"]]
    else:
        f = [{"auth_id": c["auth_id"]} for c in t["smtp"]["compromised_accounts"]]
    s = score(kind, f, t)
    assert s.precision == 1.0 and s.recall > 0


def test_unknown_kind_is_refused(small: SimSummary) -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        score("nope", [], _truth(small))


def test_ddos_above_threshold_only(small: SimSummary) -> None:
    """With ``min_pps``, victims attacked below it need not be found and are no false alarm;
    an address no attack touched is one."""
    t = _truth(small)
    rates = {**t["ddos"]["victim_pps"], **t["reflection"]["victim_pps"]}
    assert rates and all(r > 0 for r in rates.values())
    lo, hi = min(rates.values()), max(rates.values())
    strongest = max(rates, key=lambda v: rates[v])
    s = score("ddos", [{"ip": strongest}], t, min_pps=hi)
    assert (s.precision, s.recall) == (1.0, 1.0)
    s = score("ddos", [{"ip": strongest}], t, min_pps=lo / 2)
    assert s.recall == pytest.approx(1 / len(rates))
    s = score("ddos", [{"ip": v} for v in rates] + [{"ip": "192.0.2.250"}], t, min_pps=hi)
    assert s.false_positives == 1 and s.spurious == ["192.0.2.250"]


def test_spoofing_and_reflection_addresses(small: SimSummary) -> None:
    t = _truth(small)
    ifs = {s["input_if"] for s in t["ddos"]["spoofing"]}
    assert ifs and all(100 <= i < 104 for i in ifs)
    found = [{"ip": "127.0.1.1", "evidence": {"input_if": i}} for i in ifs]
    assert score("spoofing", found, t).f1 == 1.0
    wrong = next(i for i in range(100, 104) if i not in ifs)
    s = score("spoofing", [*found, {"ip": "127.0.1.1", "evidence": {"input_if": wrong}}], t)
    assert s.false_positives == 1 and s.recall == 1.0
    # a reflector is found at any address it held while the attack lasted
    r = t["reflection"]["reflectors"][0]
    assert r["ip"] in r["addresses"]
    s = score("reflection", [{"ip": r["addresses"][-1]}], t)
    assert s.true_positives == 1 and s.false_positives == 0
