"""The access door: consent filtering before anything is returned, refusals, audit records."""

from __future__ import annotations

import json
from datetime import timedelta

import pyarrow as pa
import pytest

from mamori.governance import AccessRefused, Governance
from tests.conftest import HOUR, T0, flow, table, xyz_allocations

EXT = "203.0.113.50"  # an outside server both subscribers talk to


def _load_world(gov: Governance) -> None:
    """The :func:`~tests.conftest.xyz_allocations` world, and flows from both addresses and the
    CGNAT address to one outside server."""
    gov.write_registry("allocations", xyz_allocations(), "test", source="csv")
    rows = []
    for minute in range(0, 120, 10):
        at = T0 + timedelta(minutes=minute)
        rows += [
            flow("10.0.0.1", EXT, at),
            flow("10.0.0.2", EXT, at),
            flow(EXT, "10.0.0.1", at, sport=443, dport=40000),  # X's (then Y's) inbound side
            flow("198.51.100.1", EXT, at, sport=1500),  # X behind CGNAT
            flow("198.51.100.1", EXT, at, sport=2500),  # Z behind CGNAT
            flow("10.0.99.99", EXT, at),  # in a subscriber pool, but nobody's allocation
            flow("203.0.113.7", EXT, at),  # outside our pools entirely
        ]
    gov.write("M1", "flows", table(rows), "collector")


def _who(rows: list[dict[str, object]]) -> set[tuple[str, int, str]]:
    return {(r["src_addr"], r["src_port"], r["time_start"].strftime("%H:%M")) for r in rows}  # type: ignore[union-attr]


def test_opted_out_subscriber_is_removed_before_matching(gov: Governance) -> None:
    _load_world(gov)
    gov.consent.set("X", "M4", False, actor="X", channel="web", at=T0 - 2 * HOUR)
    rows = (
        gov.open("M4", "flows", ["time_start", "src_addr", "src_port", "dst_addr"], "detector")
        .arrow()
        .to_pylist()
    )
    seen = {(r["src_addr"], r["dst_addr"], r["time_start"]) for r in rows}
    # X held 10.0.0.1 until T0+1h: none of that traffic, either direction.
    assert not [
        r
        for r in rows
        if "10.0.0.1" in (r["src_addr"], r["dst_addr"]) and r["time_start"] < T0 + HOUR
    ]
    # Y's traffic on the same address after the reassignment remains, both directions.
    after = [r for r in rows if r["src_addr"] == "10.0.0.1"]
    assert len(after) == 6 and all(r["time_start"] >= T0 + HOUR for r in after)
    assert len([r for r in rows if r["dst_addr"] == "10.0.0.1"]) == 6
    # Y's other address: all 12 flows.
    assert len([r for r in rows if r["src_addr"] == "10.0.0.2"]) == 12
    # CGNAT: X's port block removed, Z's kept.
    cgnat = {r["src_port"] for r in rows if r["src_addr"] == "198.51.100.1"}
    assert cgnat == {2500}
    # Unattributed pool address is left out (cannot be checked against consent); outside kept.
    assert not [r for r in rows if r["src_addr"] == "10.0.99.99"]
    assert len([r for r in rows if r["src_addr"] == "203.0.113.7"]) == 12
    assert ("10.0.0.2", EXT, T0) in seen


def test_opt_out_during_window_excludes_only_then_if_opted_back_in(gov: Governance) -> None:
    _load_world(gov)
    # Y is out between T0+1h20 and T0+1h40, then back in.
    gov.consent.set(
        "Y", "M4", False, actor="Y", channel="web", at=T0 + HOUR + timedelta(minutes=20)
    )
    gov.consent.set("Y", "M4", True, actor="Y", channel="web", at=T0 + HOUR + timedelta(minutes=40))
    rows = gov.open("M4", "flows", ["time_start", "src_addr"], "detector").arrow().to_pylist()
    y2 = sorted(r["time_start"] for r in rows if r["src_addr"] == "10.0.0.2")
    out_period = [
        t for t in y2 if T0 + HOUR + timedelta(minutes=20) <= t < T0 + HOUR + timedelta(minutes=40)
    ]
    assert out_period == []
    assert len(y2) == 10


def test_currently_opted_out_subscriber_is_out_for_all_time(gov: Governance) -> None:
    _load_world(gov)
    gov.consent.set("Y", "M4", False, actor="Y", channel="web", at=T0 + 5 * HOUR)  # after the data
    rows = gov.open("M4", "flows", ["time_start", "src_addr"], "detector").arrow().to_pylist()
    assert not [r for r in rows if r["src_addr"] == "10.0.0.2"]
    assert not [r for r in rows if r["src_addr"] == "10.0.0.1" and r["time_start"] >= T0 + HOUR]
    assert [r for r in rows if r["src_addr"] == "10.0.0.1"]  # X's time on it remains


def test_measure_not_resting_on_consent_sees_everything(gov: Governance) -> None:
    _load_world(gov)
    gov.consent.set("X", "M4", False, actor="X", channel="web", at=T0 - 2 * HOUR)
    grant = gov.open("M2", "flows", ["time_start", "src_addr", "dst_addr"], "detector")
    assert not grant.consent_filtered
    assert grant.arrow().num_rows == 7 * 12


def test_time_window(gov: Governance) -> None:
    _load_world(gov)
    grant = gov.open(
        "M2", "flows", ["time_start"], "d", start=T0 + HOUR, end=T0 + HOUR + timedelta(minutes=30)
    )
    times = grant.arrow().column("time_start").to_pylist()
    assert len(times) == 3 * 7
    assert min(times) == T0 + HOUR and max(times) == T0 + HOUR + timedelta(minutes=20)


@pytest.mark.parametrize(
    ("measure", "dataset", "columns", "reason"),
    [
        ("M2", "allocations", None, "does not let M2"),  # subscriber identities
        ("M2", "subscribers", ["subscriber_id", "email"], "does not let M2"),
        ("M14", "flows", ["src_addr"], "outside M14's catalogue entry"),
        ("M10", "flows", ["dst_addr", "src_addr"], "outside M10's catalogue entry"),
        ("M4", "flows", ["no_such_column"], "has no column"),
        ("M4", "no_such_dataset", ["x"], "unknown dataset"),
        ("M99", "flows", ["src_addr"], "unknown measure"),
        ("M3", "flows", ["src_addr"], "does not let M3"),  # raw flows are never shared
    ],
)
def test_refusals_are_raised_and_audited(
    gov: Governance, measure: str, dataset: str, columns: list[str] | None, reason: str
) -> None:
    with pytest.raises(AccessRefused, match=reason) as info:
        gov.open(measure, dataset, columns, "analyst:alice", case="case-1")
    last = list(gov.audit.entries())[-1]
    assert last.event == "refused"
    assert last.seq == info.value.audit_seq
    assert last.measure == measure and last.dataset == dataset and last.actor == "analyst:alice"
    assert reason.split()[0] in json.loads(last.detail or "{}")["reason"]
    assert gov.audit.verify().ok


def test_switched_off_measure_is_refused(config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with (
        Governance(config.model_copy(update={"measures": {**config.measures, "M4": False}})) as g,
        pytest.raises(AccessRefused, match="switched off"),
    ):
        g.open("M4", "flows", ["src_addr"], "d")


def test_other_basis_needs_justification_and_skips_consent(gov: Governance) -> None:
    _load_world(gov)
    gov.consent.set("X", "M5", False, actor="X", channel="web", at=T0 - 2 * HOUR)
    with pytest.raises(AccessRefused, match="justification"):
        gov.open("M5", "allocations", None, "desk", basis="justified-act")
    with pytest.raises(AccessRefused, match="cannot rest on emergency"):
        gov.open("M5", "allocations", None, "desk", basis="emergency", justification="x")
    consent_rows = gov.open("M5", "allocations", ["subscriber_id"], "desk").arrow()
    assert "X" not in consent_rows.column("subscriber_id").to_pylist()
    risk = "1,240 likely-infected devices > configured 1,000"
    justified = gov.open(
        "M5", "allocations", ["subscriber_id"], "desk", basis="justified-act", justification=risk
    ).arrow()
    assert "X" in justified.column("subscriber_id").to_pylist()
    entry = list(gov.audit.entries())[-1]
    assert entry.legal_basis == "justified-act" and risk in (entry.detail or "")


@pytest.mark.parametrize("blank", ["", " ", "\t\n "])
def test_blank_justification_is_refused_and_audited(gov: Governance, blank: str) -> None:
    _load_world(gov)
    with pytest.raises(AccessRefused, match="blank justification"):
        gov.open("M5", "allocations", None, "desk", basis="justified-act", justification=blank)
    # refused even where none is needed: whitespace is never a reason on record
    with pytest.raises(AccessRefused, match="blank justification"):
        gov.open("M13", "allocations", None, "desk", justification=blank)
    entry = list(gov.audit.entries())[-1]
    assert entry.event == "refused" and "blank justification" in (entry.detail or "")


def test_opt_in_measure_defaults_out(gov: Governance, request: pytest.FixtureRequest) -> None:
    """An opt-in measure sees nobody until they say yes (catalogue variant with M4 opt-in)."""
    from mamori.governance.measures import Catalogue, catalogue

    cat = catalogue()
    m4 = cat["M4"].model_copy(update={"consent": "opt-in"})
    g = Governance(gov.config, Catalogue({**dict(cat), "M4": m4}, cat.registry))
    request.addfinalizer(g.close)
    _load_world(g)
    assert (
        g.open("M4", "flows", ["src_addr"], "d").arrow().column("src_addr").to_pylist()
        == ["203.0.113.7"] * 12
    )
    g.consent.set("Y", "M4", True, actor="Y", channel="web", at=T0 - 2 * HOUR)
    rows = g.open("M4", "flows", ["src_addr"], "d").arrow().column("src_addr").to_pylist()
    assert rows.count("10.0.0.2") == 12 and rows.count("10.0.0.1") == 6
    assert "198.51.100.1" not in rows  # X and Z never said yes


def test_every_access_is_audited_with_measure_columns_basis(gov: Governance) -> None:
    _load_world(gov)
    before = len(list(gov.audit.entries()))
    gov.open("M4", "flows", ["src_addr", "dst_addr"], "detector:m4", case="c-7")
    entries = list(gov.audit.entries())
    assert len(entries) == before + 1
    e = entries[-1]
    assert (e.event, e.measure, e.dataset, e.columns, e.legal_basis, e.actor, e.case_id) == (
        "access",
        "M4",
        "flows",
        "src_addr,dst_addr",
        "consent",
        "detector:m4",
        "c-7",
    )


def test_consent_based_write_drops_opted_out_before_storing(gov: Governance) -> None:
    _load_world(gov)
    gov.consent.set("X", "M7", False, actor="X", channel="web", at=T0 - 2 * HOUR)
    queries = table(
        [
            {"ts": T0, "client_addr": "10.0.0.1", "client_port": 5353, "qname": "c2.example.net"},
            {"ts": T0, "client_addr": "10.0.0.2", "client_port": 5353, "qname": "c2.example.net"},
        ]
    )
    gov.write("M7", "dns_queries", queries, "resolver")
    stored = gov.open("M7", "dns_queries", ["client_addr"], "d", basis="consent").arrow()
    assert stored.column("client_addr").to_pylist() == ["10.0.0.2"]
    # Nothing of X's reached the disk, not even under a non-filtering read.
    raw = b"".join(p.read_bytes() for p in (gov.config.store / "dns_queries").rglob("*.parquet"))
    assert b"10.0.0.1" not in raw


def test_write_outside_catalogue_refused(gov: Governance) -> None:
    with pytest.raises(AccessRefused, match="does not let M2"):
        gov.write("M2", "flows", table([flow("10.0.0.1", EXT, T0)]), "x")
    with pytest.raises(AccessRefused, match="not a subscriber-record dataset"):
        gov.write_registry("flows", table([flow("10.0.0.1", EXT, T0)]), "x", source="csv")


def test_write_of_oversized_string_refused(gov: Governance) -> None:
    big = "A" * 5000
    with pytest.raises(AccessRefused, match="exceeds the declared maximum"):
        gov.write("M1", "flows", table([flow(big, EXT, T0)]), "x")
    assert not list((gov.config.store / "flows").rglob("*.parquet"))


def test_grant_is_arrow(gov: Governance) -> None:
    _load_world(gov)
    t = gov.open("M14", "flows", ["dst_port", "bytes"], "ops").arrow()
    assert t.schema == pa.schema([("dst_port", pa.uint16()), ("bytes", pa.uint64())])


def test_combine_runs_over_its_inputs(gov: Governance) -> None:
    rel = gov.combine(
        "SELECT a * 2 AS b, 'ok' AS s FROM {t} -- a comment may say copy or read_parquet",
        t=pa.table({"a": [1, 2]}),
    )
    assert rel.to_arrow_table().to_pylist() == [{"b": 2, "s": "ok"}, {"b": 4, "s": "ok"}]


def test_own_rows_narrows_to_the_measures_records(gov: Governance) -> None:
    rows = [
        {"detected": T0, "finding_id": f"f-{m}", "kind": "c2", "measure": m, "ip": "192.0.2.1"}
        for m in ("M2", "M13")
    ]
    for m, r in zip(("M2", "M13"), rows, strict=True):
        gov.write(m, "findings", table([r]), "test")
    every = gov.open("M13", "findings", ["finding_id", "measure"], "test").arrow()
    assert sorted(every.column("finding_id").to_pylist()) == ["f-M13", "f-M2"]
    own = gov.open("M13", "findings", ["finding_id"], "test", own_rows=True).arrow()
    assert own.column("finding_id").to_pylist() == ["f-M13"]  # without reading the column
    entry = [e for e in gov.audit.entries() if e.event == "access"][-1]
    assert json.loads(entry.detail or "{}")["own_rows"] is True
    # a dataset that names no measure is read whole
    assert gov.open("M1", "flows", ["time_start"], "test", own_rows=True).arrow().num_rows == 0
