"""Attribution: reassignment, CGNAT two stages, port-required, ambiguous, unknown, consent, audit."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from mamori.attribute import QUERY_SCHEMA, RESULT_SCHEMA, attribute, attribute_one
from mamori.governance import AccessRefused, Governance
from tests.conftest import HOUR, T0, table

S = timedelta(seconds=1)
PUB = "198.51.100.1"  # in the test plan's cgnat pool
RISK = "M5 risk test: 1,200 likely-infected devices > threshold 1,000"


def _world(gov: Governance) -> None:
    """10.0.0.1: X until T0+1h, then Y. 10.0.0.3: P and Q overlap for ten minutes.
    Behind CGNAT: PUB ports 1024-2047 → inside 100.64.0.5 (Z all along); ports 2048-3071 →
    100.64.0.6, which W holds until T0 and V after."""
    gov.write_registry(
        "allocations",
        table(
            [
                {"start": T0 - HOUR, "end": T0 + HOUR, "addr": "10.0.0.1", "subscriber_id": "X"},
                {"start": T0 + HOUR, "end": None, "addr": "10.0.0.1", "subscriber_id": "Y"},
                {"start": T0 - HOUR, "end": T0, "addr": "10.0.0.3", "subscriber_id": "P"},
                {
                    "start": T0 - timedelta(minutes=10),
                    "end": None,
                    "addr": "10.0.0.3",
                    "subscriber_id": "Q",
                },
                {"start": T0 - HOUR, "end": None, "addr": "100.64.0.5", "subscriber_id": "Z"},
                {"start": T0 - HOUR, "end": T0, "addr": "100.64.0.6", "subscriber_id": "W"},
                {"start": T0 + S, "end": None, "addr": "100.64.0.6", "subscriber_id": "V"},
            ]
        ),
        "test",
        source="radius",
    )
    gov.write_registry(
        "allocations",
        table(
            [
                {
                    "start": T0 - HOUR,
                    "end": None,
                    "addr": PUB,
                    "port_start": 1024,
                    "port_end": 2047,
                    "inside_addr": "100.64.0.5",
                },
                {
                    "start": T0 - HOUR,
                    "end": None,
                    "addr": PUB,
                    "port_start": 2048,
                    "port_end": 3071,
                    "inside_addr": "100.64.0.6",
                },
            ]
        ),
        "test",
        source="cgnat-syslog",
    )


CASES = [
    # ip, port, at, status, subscriber, inside
    ("10.0.0.1", None, T0, "ok", "X", None),
    ("10.0.0.1", 40000, T0, "ok", "X", None),  # a port on an unshared address changes nothing
    ("10.0.0.1", None, T0 + 2 * HOUR, "ok", "Y", None),
    ("10.0.0.1", None, T0 + HOUR - 3 * S, "ok", "X", None),  # outside the 2 s tolerance
    ("10.0.0.1", None, T0 + HOUR + 3 * S, "ok", "Y", None),
    ("10.0.0.1", None, T0 + HOUR - S, "ambiguous", None, None),  # reassignment within skew
    ("10.0.0.1", None, T0 + HOUR, "ambiguous", None, None),
    ("10.0.0.1", None, T0 - HOUR - 10 * S, "unknown", None, None),  # before anybody held it
    ("10.0.0.3", None, T0 - timedelta(minutes=5), "ambiguous", None, None),  # overlap
    ("10.0.0.3", None, T0 - timedelta(minutes=30), "ok", "P", None),
    ("10.0.0.3", None, T0 + HOUR, "ok", "Q", None),
    ("10.0.0.9", None, T0, "unknown", None, None),  # nobody's
    (PUB, 1500, T0, "ok", "Z", "100.64.0.5"),
    (PUB, 1024, T0, "ok", "Z", "100.64.0.5"),
    (PUB, 2047, T0, "ok", "Z", "100.64.0.5"),
    (PUB, 2500, T0 - timedelta(minutes=30), "ok", "W", "100.64.0.6"),
    (PUB, 2500, T0 + timedelta(minutes=30), "ok", "V", "100.64.0.6"),  # inside reassigned
    (PUB, 2500, T0, "ambiguous", None, None),  # inside reassignment within skew
    (PUB, 3072, T0, "unknown", None, None),  # a port outside every block
    (PUB, None, T0, "port-required", None, None),
    ("198.51.100.7", None, T0, "port-required", None, None),  # cgnat pool, never allocated
    ("198.51.100.7", 1500, T0, "unknown", None, None),
    ("100.64.0.5", None, T0, "ok", "Z", None),  # the inside address itself
]


@pytest.mark.parametrize(("ip", "port", "at", "status", "sub", "inside"), CASES)
def test_lookup(
    gov: Governance,
    ip: str,
    port: int | None,
    at: datetime,
    status: str,
    sub: str | None,
    inside: str | None,
) -> None:
    _world(gov)
    got = attribute_one(gov, ip, port, at, measure="M5", actor="desk")
    assert (got.status, got.subscriber_id, got.inside_addr) == (status, sub, inside)
    if status == "ok":
        assert got.allocation_source == ("cgnat-syslog+radius" if inside else "radius")
    else:
        assert got.allocation_source is None


def test_batch_keeps_order_and_columns_and_audits_once(gov: Governance) -> None:
    _world(gov)
    rows = [
        {"ip": ip, "port": port, "ts": at, "ref": i} for i, (ip, port, at, *_) in enumerate(CASES)
    ]
    queries = pa.Table.from_pylist(rows, schema=QUERY_SCHEMA.append(pa.field("ref", pa.int64())))
    before = len(list(gov.audit.entries()))
    out = attribute(gov, queries, measure="M5", actor="desk", case="case-7")
    assert out.column("ref").to_pylist() == list(range(len(CASES)))
    assert out.column("status").to_pylist() == [c[3] for c in CASES]
    assert out.column("subscriber_id").to_pylist() == [c[4] for c in CASES]
    for name in ("ip", "port", "ts", "status", "subscriber_id", "inside_addr", "allocation_source"):
        assert out.schema.field(name).type == RESULT_SCHEMA.field(name).type
    entries = list(gov.audit.entries())[before:]
    assert [e.event for e in entries] == ["access", "attribute"]
    entry = entries[-1]
    assert (entry.measure, entry.legal_basis, entry.case_id) == ("M5", "consent", "case-7")
    detail = json.loads(entry.detail or "{}")
    assert detail["subscribers"] == ["P", "Q", "V", "W", "X", "Y", "Z"]
    assert detail["status"] == {
        s: sum(1 for c in CASES if c[3] == s)
        for s in ("ok", "ambiguous", "unknown", "port-required")
    }
    # who was looked up, never what was asked about
    assert "10.0.0" not in (entry.detail or "") and PUB not in (entry.detail or "")


def test_empty_lookup(gov: Governance) -> None:
    _world(gov)
    empty = pa.table(
        {
            "ip": pa.array([], pa.string()),
            "port": pa.array([], pa.uint16()),
            "ts": pa.array([], pa.timestamp("ms", tz="UTC")),
        }
    )
    out = attribute(gov, empty, measure="M5", actor="desk")
    assert out.num_rows == 0 and "status" in out.column_names


def test_skew_is_configurable_per_call(gov: Governance) -> None:
    _world(gov)
    at = T0 + HOUR - 3 * S
    assert attribute_one(gov, "10.0.0.1", None, at, measure="M5", actor="d").status == "ok"
    wide = attribute_one(gov, "10.0.0.1", None, at, measure="M5", actor="d", skew_s=5)
    assert wide.status == "ambiguous"
    exact = attribute_one(gov, "10.0.0.1", None, T0 + HOUR, measure="M5", actor="d", skew_s=0)
    assert (exact.status, exact.subscriber_id) == ("ok", "Y")


def test_same_subscriber_from_two_sources_is_not_ambiguous(gov: Governance) -> None:
    _world(gov)
    gov.write_registry(
        "allocations",
        table([{"start": T0 - HOUR, "end": T0 + HOUR, "addr": "10.0.0.1", "subscriber_id": "X"}]),
        "test",
        source="csv",
    )
    got = attribute_one(gov, "10.0.0.1", None, T0, measure="M5", actor="desk")
    assert (got.status, got.subscriber_id, got.allocation_source) == ("ok", "X", "csv,radius")


def test_direct_port_block_rows(gov: Governance) -> None:
    """A CGNAT whose log already names subscribers (one stage)."""
    gov.write_registry(
        "allocations",
        table(
            [
                {
                    "start": T0 - HOUR,
                    "end": None,
                    "addr": PUB,
                    "port_start": 1024,
                    "port_end": 2047,
                    "subscriber_id": "D",
                }
            ]
        ),
        "test",
        source="csv",
    )
    got = attribute_one(gov, PUB, 2000, T0, measure="M5", actor="desk")
    assert (got.status, got.subscriber_id, got.inside_addr) == ("ok", "D", None)


def test_changed_block_size_overlapping_layouts(gov: Governance) -> None:
    """Blocks of 512 then of 1024 ports on the same address: both layouts are probed."""
    rows = [
        {"start": T0 - HOUR, "end": T0, "addr": PUB, "port_start": 1024, "port_end": 1535,
         "subscriber_id": "A"},
        {"start": T0, "end": None, "addr": PUB, "port_start": 1024, "port_end": 2047,
         "subscriber_id": "B"},
        {"start": T0 - HOUR, "end": None, "addr": PUB, "port_start": 1536, "port_end": 2047,
         "subscriber_id": "C"},
    ]  # fmt: skip
    gov.write_registry("allocations", table(rows), "test", source="csv")
    at = T0 - timedelta(minutes=30)
    assert attribute_one(gov, PUB, 1100, at, measure="M5", actor="d").subscriber_id == "A"
    assert attribute_one(gov, PUB, 1600, at, measure="M5", actor="d").subscriber_id == "C"
    later = T0 + timedelta(minutes=30)
    assert attribute_one(gov, PUB, 1100, later, measure="M5", actor="d").subscriber_id == "B"
    assert attribute_one(gov, PUB, 1600, later, measure="M5", actor="d").status == "ambiguous"


def _attribute_events(gov: Governance) -> list[dict[str, object]]:
    return [json.loads(e.detail or "{}") for e in gov.audit.entries() if e.event == "attribute"]


def test_opted_out_subscriber_is_not_looked_up_under_consent(gov: Governance) -> None:
    _world(gov)
    gov.consent.set("X", "M5", False, actor="X", channel="web", at=T0 - 2 * HOUR)
    gov.consent.set("Z", "M5", False, actor="Z", channel="web", at=T0 - 2 * HOUR)
    queries = [
        ("10.0.0.1", None, T0, "unknown", None),  # X's time
        ("10.0.0.1", None, T0 + HOUR - S, "ambiguous", None),  # never Y by mistake
        ("10.0.0.1", None, T0 + HOUR + 3 * S, "ok", "Y"),
        (PUB, 1500, T0, "unknown", None),  # Z behind CGNAT
        (PUB, 2500, T0 - timedelta(minutes=30), "ok", "W"),
    ]
    for ip, port, at, status, sub in queries:
        got = attribute_one(gov, ip, port, at, measure="M5", actor="desk")
        assert (got.status, got.subscriber_id) == (status, sub), (ip, port, at)
    looked_up = {s for d in _attribute_events(gov) for s in d["subscribers"]}  # type: ignore[attr-defined]
    assert looked_up == {"Y", "W"}


def test_opted_out_subscriber_is_found_under_justified_act(gov: Governance) -> None:
    _world(gov)
    gov.consent.set("X", "M5", False, actor="X", channel="web", at=T0 - 2 * HOUR)
    gov.consent.set("Z", "M5", False, actor="Z", channel="web", at=T0 - 2 * HOUR)
    for ip, port, sub in (("10.0.0.1", None, "X"), (PUB, 1500, "Z")):
        got = attribute_one(
            gov,
            ip,
            port,
            T0,
            measure="M5",
            actor="desk",
            basis="justified-act",
            justification=RISK,
        )
        assert (got.status, got.subscriber_id) == ("ok", sub)
    entries = [e for e in gov.audit.entries() if e.event == "attribute"]
    assert {e.legal_basis for e in entries} == {"justified-act"}
    assert [json.loads(e.detail or "{}")["subscribers"] for e in entries] == [["X"], ["Z"]]
    assert json.loads(entries[0].detail or "{}")["justification"] == RISK


@pytest.mark.parametrize(
    ("measure", "basis", "justification", "reason"),
    [
        ("M2", None, None, "does not let M2"),
        ("M5", "justified-act", None, "needs a recorded justification"),
        ("M5", "emergency", "x", "cannot rest on emergency"),
    ],
)
def test_refused(
    gov: Governance, measure: str, basis: str | None, justification: str | None, reason: str
) -> None:
    _world(gov)
    with pytest.raises(AccessRefused, match=reason):
        attribute_one(
            gov,
            "10.0.0.1",
            None,
            T0,
            measure=measure,
            actor="desk",
            basis=basis,
            justification=justification,
        )
    assert not _attribute_events(gov)


def test_m6_emergency_needs_no_consent(gov: Governance) -> None:
    _world(gov)
    gov.consent.set("X", "M5", False, actor="X", channel="web", at=T0 - 2 * HOUR)
    got = attribute_one(gov, "10.0.0.1", None, T0, measure="M6", actor="desk")
    assert (got.status, got.subscriber_id) == ("ok", "X")
    assert [e.legal_basis for e in gov.audit.entries() if e.event == "attribute"] == ["emergency"]


def test_bad_queries_are_refused_clearly(gov: Governance) -> None:
    with pytest.raises(ValueError, match="missing"):
        attribute(gov, pa.table({"addr": ["10.0.0.1"]}), measure="M5", actor="d")
    with pytest.raises(ValueError, match="negative"):
        attribute_one(gov, "10.0.0.1", None, T0, measure="M5", actor="d", skew_s=-1)
