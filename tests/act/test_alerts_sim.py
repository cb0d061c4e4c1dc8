"""Acceptance on the simulated ISP (``small``): the ISP's own logs and the third-party reports go in
through the command line, alerts come out of a real SMTP server, and they are checked against the
simulator's ground truth.

* every subscriber a report is about (per ``truth.json``) who has not opted out of the measure gets
  exactly one alert per cause — M5 infected hosts, M6 takedown victims, M9 vulnerable devices;
* nobody else gets one (no wrong subscriber across reassignments and behind CGNAT);
* opted-out subscribers are not looked up under consent: no attribution audit entry names them;
* vulnerable-device reports name a port-23 service on a CGNAT public address: no port block holds
  it, so attribution answers "unknown" and no alert goes out — never a guess.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mamori.act.notify import queue_alerts, send_queued
from mamori.cli import app
from mamori.config import load_config
from mamori.governance import Governance
from mamori.sim import simulate
from tests.act.conftest import SmtpServer

runner = CliRunner()
ACTOR = "test:desk"


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _cli(*args: str) -> None:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output


def _holder(truth: dict[str, Any], ip: str, port: int, at: datetime) -> int | None:
    for inf in truth["infected"]:
        for a in inf["addresses"]:
            if (
                a["ip"] == ip
                and a["port_lo"] <= port <= a["port_hi"]
                and _ts(a["from"]) <= at < _ts(a["until"])
            ):
                return int(inf["subscriber"])
    return None


@pytest.mark.slow
def test_small_isp_alerts(tmp_path: Path, smtp_server: SmtpServer) -> None:
    sim = tmp_path / "sim"
    simulate("small", sim, seed=0)
    truth = json.loads((sim / "truth.json").read_text())
    plan = json.loads((sim / "world" / "address_plan.json").read_text())
    kinds = {"static": "static", "dynamic": "dynamic", "cgnat-public": "cgnat"}
    pools = "".join(
        f'[[address_plan]]\nname = "{p["name"]}"\nkind = "{kinds[p["kind"]]}"\n'
        f'prefixes = ["{p["prefix"]}"]\n'
        for p in plan["pools"]
        if p["kind"] in kinds
    )
    cfg_file = tmp_path / "mamori.toml"
    cfg_file.write_text(
        f'store = "{tmp_path / "store"}"\n{pools}'
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\n',
        encoding="utf-8",
    )
    c = ["--config", str(cfg_file)]
    directory = sim / "world" / "subscribers.csv"
    _cli(*c, "ingest", "subscribers", str(directory), "--opted-out-column", "opted_out")
    _cli(
        *c,
        "ingest",
        "allocations",
        "-f",
        "radius",
        str(sim / "alloc" / "radius-detail"),
        "--subscriber-pattern",
        r"^u0*(\d+)@",
    )
    _cli(
        *c,
        "ingest",
        "allocations",
        "-f",
        "kea",
        str(sim / "alloc" / "kea-leases4.csv"),
        "--kea-key",
        "hostname",
        "--subscriber-pattern",
        r"^host-0*(\d+)$",
    )
    _cli(*c, "ingest", "allocations", "-f", "cgnat-syslog", str(sim / "alloc" / "cgnat.log"))
    for kind, name in (
        ("infected", "infected-hosts"),
        ("takedown", "takedown-victims"),
        ("vulnerable", "vulnerable-devices"),
    ):
        _cli(
            *c,
            "ingest",
            "report",
            "--kind",
            kind,
            "--format",
            "csv",
            str(sim / "reports" / f"{name}.csv"),
        )

    with directory.open(encoding="utf-8") as fh:
        people = list(csv.DictReader(fh))
    email = {int(p["subscriber_id"]): p["email"] for p in people}
    out_of = {int(p["subscriber_id"]): set(filter(None, p["opted_out"].split(";"))) for p in people}

    def rows(name: str) -> list[dict[str, str]]:
        with (sim / "reports" / f"{name}.csv").open(encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    infected = {
        (_holder(truth, r["ip"], int(r["port"]), _ts(r["timestamp"])), r["infection"])
        for r in rows("infected-hosts")
    }
    victims = {
        _holder(truth, r["ip"], int(r["port"]), _ts(r["timestamp"]))
        for r in rows("takedown-victims")
    }
    vulnerable = truth["vulnerable"]
    assert None not in {s for s, _ in infected} | victims  # the truth explains every line
    # One more opt-out, made by the test: a subscriber the M5 report is about.
    target = min(s for s, _ in infected if "M5" not in out_of[s])
    gov = Governance(load_config(cfg_file))
    gov.consent.set(str(target), "M5", False, actor=str(target), channel="web")
    out_of[target].add("M5")

    queue_alerts(gov, actor=ACTOR)
    sent = send_queued(gov, actor=ACTOR)
    assert sent.server_down is False and set(sent.states) == {"sent"}

    expected = Counter(
        [(email[s], "M5", f"infected:{fam}") for s, fam in infected if "M5" not in out_of[s]]
        + [(email[s], "M6", "takedown") for s in victims]
        + [
            (email[v["subscriber"]], "M9", "vulnerable:telnet-weak-password")
            for v in {v["subscriber"]: v for v in vulnerable}.values()
            if "M9" not in out_of[v["subscriber"]] and not v["ip"].startswith("10.64.")
        ]
    )
    cases: dict[str, tuple[str, str]] = {}
    for m, basis in (("M5", "consent"), ("M6", "emergency"), ("M9", "consent")):
        for r in gov.open(m, "cases", None, ACTOR, basis=basis).arrow().to_pylist():
            cases[r["case_id"]] = (r["measure"], r["cause"])
    got = Counter(
        (str(msg["To"]), *cases[str(msg["X-Mamori-Case"])]) for msg in smtp_server.messages
    )
    assert got == expected, (got, expected)
    assert max(got.values()) == 1
    assert {m for _, m, _ in expected} == {"M5", "M6", "M9"}
    # not looked up: no attribution under consent names a subscriber who is out of that measure
    for e in gov.audit.entries():
        if e.event == "attribute" and e.legal_basis == "consent":
            named = {int(s) for s in json.loads(e.detail or "{}")["subscribers"]}
            assert not {s for s in named if e.measure in out_of[s]}, e
    # nothing more on a second run
    queue_alerts(gov, actor=ACTOR)
    assert send_queued(gov, actor=ACTOR).attempted == 0
    gov.close()
