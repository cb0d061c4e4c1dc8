"""Loading through governance, the CLI, and the simulated ISP's logs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.governance import Governance
from mamori.ingest.allocations import SubscriberMap, load_allocations
from tests.ingest.allocations.conftest import DATA, at

runner = CliRunner()


def test_load_is_audited_and_readable(gov: Governance) -> None:
    report = load_allocations(
        gov,
        DATA / "cgnat.log",
        "cgnat-syslog",
        actor="loader",
    )
    assert report.rows_stored == 4
    rows = gov.open("M13", "allocations", ["addr", "inside_addr", "source"], "t").arrow()
    assert set(rows.column("source").to_pylist()) == {"cgnat-syslog"}
    writes = [e for e in gov.audit.entries() if e.event == "write"]
    assert writes[-1].dataset == "allocations" and writes[-1].actor == "loader"


def test_dry_run_stores_nothing(gov: Governance) -> None:
    report = load_allocations(gov, DATA / "kea-leases4.csv", "kea", actor="t", dry_run=True)
    assert report.sessions == 4 and report.rows_stored == 0
    assert gov.open("M13", "allocations", ["addr"], "t").arrow().num_rows == 0


def _cli(store: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--store", str(store), *args])
    return result.exit_code, result.output


def test_cli_ingest_and_attribute(tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, out = _cli(
        store,
        "ingest",
        "allocations",
        "--format",
        "radius",
        str(DATA / "radius-detail"),
        "--subscriber-map",
        str(DATA / "subscribers.csv"),
        "--json",
    )
    assert code == 0, out
    report = json.loads(out)
    assert (report["sessions"], report["unmapped"], report["malformed"]) == (3, 4, 2)
    code, out = _cli(
        store, "ingest", "subscribers", str(DATA / "subscribers.csv"), "--opted-out-column",
        "opted_out", "--json",
    )  # fmt: skip
    assert code == 0, out
    subs = json.loads(out)
    assert (subs["rows_stored"], subs["malformed"], subs["consent_changes"]) == (3, 1, 3)
    code, out = _cli(store, "attribute", "--ip", "10.16.0.5", "--at", "2026-11-01T10:00:00Z")
    assert (code, out.strip()) == (
        0,
        "10.16.0.5 at 2026-11-01T10:00:00+00:00: ok — subscriber 1 [from radius]",
    )
    # subscriber 2 opted out of M5: not looked up under consent …
    code, out = _cli(
        store, "attribute", "--ip", "10.16.0.5", "--at", "2026-11-01T10:45:00Z", "--json"
    )
    assert code == 3 and json.loads(out)["status"] == "unknown"
    # … but under M6 (emergency) they are
    code, out = _cli(
        store, "attribute", "--ip", "10.16.0.5", "--at", "2026-11-01T10:45:00Z", "-m", "M6",
        "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["subscriber_id"] == "2"
    code, out = _cli(store, "attribute", "--ip", "10.16.0.5", "--at", "2026-11-01T10:00:00Z",
                     "-m", "M2")  # fmt: skip
    assert code == 2 and "refused" in out


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_cli_refuses_a_blank_justification(tmp_path: Path, blank: str) -> None:
    code, out = _cli(
        tmp_path, "attribute", "--ip", "10.16.0.5", "--at", "2026-11-01T10:00:00Z",
        "--basis", "justified-act", "--justification", blank,
    )  # fmt: skip
    assert code == 2 and "blank justification" in out


def test_cli_bad_format_and_missing_file(tmp_path: Path) -> None:
    code, out = _cli(tmp_path, "ingest", "allocations", "--format", "nope", str(DATA / "cgnat.log"))
    assert code == 2
    code, out = _cli(tmp_path, "ingest", "allocations", "-f", "kea", str(DATA / "cgnat.log"))
    assert code == 2 and "not a Kea lease file" in out


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mamori.sim import simulate

    out = tmp_path_factory.mktemp("sim")
    simulate("tiny", out, seed=11)
    return out


def test_simulated_isp_infected_hosts_map_to_the_right_subscribers(
    sim: Path, gov: Governance
) -> None:
    """Ingest the simulator's RADIUS, Kea and CGNAT logs, then attribute every address the truth
    says an infected subscriber held (behind CGNAT with a port in their block)."""
    import pyarrow as pa

    from mamori.attribute import attribute

    radius = load_allocations(
        gov,
        sim / "alloc" / "radius-detail",
        "radius",
        actor="t",
        subscribers=SubscriberMap.from_csv(sim / "world" / "subscribers.csv", "user_name"),
    )
    kea = load_allocations(
        gov,
        sim / "alloc" / "kea-leases4.csv",
        "kea",
        actor="t",
        kea_key="hostname",
        subscribers=SubscriberMap(pattern=r"^host-0*(\d+)$"),
    )
    cgnat = load_allocations(gov, sim / "alloc" / "cgnat.log", "cgnat-syslog", actor="t")
    for r in (radius, kea, cgnat):
        assert r.problems() == 0 and r.rows_stored > 0, r
    truth = json.loads((sim / "truth.json").read_text())
    w0, w1 = (truth["window"][k] for k in ("from", "until"))
    rows, want = [], []
    from datetime import datetime, timedelta

    def t(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    for inf in truth["infected"]:
        for a in inf["addresses"]:
            lo, hi = max(t(a["from"]), t(w0)), min(t(a["until"]), t(w1))
            for when in (lo + timedelta(seconds=5), lo + (hi - lo) / 2, hi - timedelta(seconds=5)):
                port = (a["port_lo"] + a["port_hi"]) // 2 if a["inside_ip"] else None
                rows.append({"ip": a["ip"], "port": port, "ts": when})
                want.append((str(inf["subscriber"]), a["inside_ip"]))
    assert len(rows) >= 6 and any(w[1] for w in want)  # some behind CGNAT
    queries = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [("ip", pa.string()), ("port", pa.uint16()), ("ts", pa.timestamp("ms", tz="UTC"))]
        ),
    )
    out = attribute(
        gov, queries, measure="M5", actor="t", basis="justified-act", justification="sim"
    )
    got = list(
        zip(
            out.column("subscriber_id").to_pylist(),
            out.column("inside_addr").to_pylist(),
            strict=True,
        )
    )
    assert out.column("status").to_pylist() == ["ok"] * len(rows)
    assert got == want
    assert at("00:00").year == 2026  # fixtures' day helper stays importable
