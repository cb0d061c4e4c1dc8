"""Review before anything leaves (M3): only C&C endpoints an analyst confirmed or a feed listed
after we found them are shared; candidates only with an explicit, audited flag; rejected ones
never. The transparency report's counts are rebuilt here from the audit log."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from mamori.detect.reviews import Reviews
from mamori.governance import Governance
from mamori.report.transparency import build_report
from mamori.share import export, publish, reviewed_list
from tests.conftest import T0
from tests.share.conftest import finding, write_findings

CONFIRMED, CANDIDATE, REJECTED, LISTED_LATER = (
    ("198.18.1.1", 443), ("198.18.1.2", 8080), ("198.18.1.3", 443), ("198.18.1.4", 7080),
)  # fmt: skip


def _fid(ep: tuple[str, int]) -> str:
    return f"f-{ep[0]}-{ep[1]}-0"


def _world(gov: Governance) -> None:
    write_findings(gov, [finding(ip, port) for ip, port in
                         (CONFIRMED, CANDIDATE, REJECTED, LISTED_LATER)])  # fmt: skip
    reviews = Reviews(gov)
    reviews.record(_fid(CONFIRMED), "M2", "confirmed", "web:analyst1")
    reviews.record(_fid(REJECTED), "M2", "rejected", "web:analyst1")
    # a feed lists one endpoint a day after we found it (any port: a bare address)
    gov.write_registry(
        "reputation",
        pa.table({
            "loaded": pa.array([T0 + timedelta(days=1)], pa.timestamp("ms", tz="UTC")),
            "indicator_type": ["ip"],
            "ip": [LISTED_LATER[0]],
            "port": pa.array([None], pa.uint16()),
            "category": ["c2"],
            "first_seen": pa.array([T0 + timedelta(days=1)], pa.timestamp("ms", tz="UTC")),
        }),
        "test",
        source="feodo",
    )  # fmt: skip


def _csv_endpoints(data: bytes) -> set[tuple[str, int]]:
    return {(r["ip"], int(r["port"])) for r in csv.DictReader(io.StringIO(data.decode()))}


def _events(gov: Governance, event: str) -> list[dict[str, Any]]:
    return [json.loads(e.detail or "{}") for e in gov.audit.entries() if e.event == event]


def test_only_confirmed_and_corroborated_leave(gov: Governance) -> None:
    _world(gov)
    data, n = export(gov, "csv", "test")
    assert _csv_endpoints(data) == {CONFIRMED, LISTED_LATER} and n == 2
    # the listing was recorded once, as a review of the finding, naming the feed
    corr = [d for d in _events(gov, "review") if d["decision"] == "corroborated"]
    assert corr == [{"finding": _fid(LISTED_LATER), "decision": "corroborated",
                     "source": "feodo"}]  # fmt: skip
    assert Reviews(gov).latest()[_fid(LISTED_LATER)].verdict == "corroborated"
    export(gov, "csv", "test")
    assert len([d for d in _events(gov, "review") if d["decision"] == "corroborated"]) == 1
    # candidates only on request, and the request is in the audit log; rejections never
    data, n = export(gov, "csv", "test", include_candidates=True)
    assert _csv_endpoints(data) == {CONFIRMED, CANDIDATE, LISTED_LATER}
    details = _events(gov, "share-export")
    assert [d["include_candidates"] for d in details] == [False, False, True]
    assert details[0]["shared"] == {"confirmed": 1, "corroborated": 1, "candidate": 0}
    assert details[0]["held_back"] == {"candidate": 1, "rejected": 1}
    assert details[2]["shared"] == {"confirmed": 1, "corroborated": 1, "candidate": 1}
    rl = reviewed_list(gov, "test", include_candidates=True)
    assert REJECTED[0] not in rl.table.column("ip").to_pylist()


def test_publish_counts_new_indicators_by_state(gov: Governance) -> None:
    _world(gov)
    first = publish(gov, "test")
    assert first.endpoints == 2
    again = publish(gov, "test")
    assert again.objects_added == 0
    more = publish(gov, "test", include_candidates=True)
    assert more.endpoints == 3
    shared = [d["shared"] for d in _events(gov, "share-publish")]
    assert shared == [
        {"confirmed": 1, "corroborated": 1, "candidate": 0},
        {"confirmed": 0, "corroborated": 0, "candidate": 0},
        {"confirmed": 0, "corroborated": 0, "candidate": 1},
    ]


def test_transparency_counts_rebuilt_from_the_audit_log(gov: Governance) -> None:
    _world(gov)
    export(gov, "stix", "test")
    publish(gov, "test")
    publish(gov, "test", include_candidates=True)
    Reviews(gov).record(_fid(CANDIDATE), "M2", "false-positive", "web:analyst2")
    now = datetime.now(UTC)
    period = f"{now.year:04d}-{now.month:02d}"
    by = {m.measure: m for m in build_report(gov, period, actor="test").measures}

    # from the audit log alone
    reviews = _events(gov, "review")
    shares = _events(gov, "share-export") + _events(gov, "share-publish")

    def shared(state: str) -> int:
        return sum(int(d["shared"][state]) for d in shares)

    def decided(*decisions: str) -> int:
        return sum(d["decision"] in decisions for d in reviews)

    m2, m3 = by["M2"], by["M3"]
    assert (m3.cc_shared_confirmed, m3.cc_shared_corroborated, m3.cc_shared_candidates) == (
        shared("confirmed"), shared("corroborated"), shared("candidate"))  # fmt: skip
    assert (m2.findings_confirmed, m2.findings_corroborated, m2.findings_rejected) == (
        decided("confirmed"), decided("corroborated"), decided("rejected", "false-positive"))  # fmt: skip
    # and what this month was: export 2 (1+1), first publish 2, second publish 1 candidate
    assert (m3.cc_shared_confirmed, m3.cc_shared_corroborated, m3.cc_shared_candidates) == (2, 2, 1)
    assert (m2.findings_confirmed, m2.findings_corroborated, m2.findings_rejected) == (1, 1, 2)
