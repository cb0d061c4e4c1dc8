"""The console's kept reads (:mod:`mamori.web.grantcache`) never outlive what governance would
return now: a consent change, a purge or a write by another process makes the next page read
again through governance, and every page view still writes its own access entry."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from mamori.governance import Governance
from mamori.governance.retention import purge
from mamori.web import grantcache
from tests.conftest import make_config
from tests.web.conftest import T0, populate


@pytest.fixture
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Governance]:
    g = Governance(make_config(tmp_path_factory.mktemp("grantcache") / "store"))
    populate(g)
    yield g
    g.close()


def _notified(gov: Governance) -> set[str]:
    kept = grantcache.read(gov, "M5", "notifications", None, "web:desk")
    return set(kept.table.column("subscriber_id").to_pylist())


def _accesses(gov: Governance) -> list[dict[str, object]]:
    return [
        {"measure": e.measure, "dataset": e.dataset, **json.loads(e.detail or "{}")}
        for e in gov.audit.entries()
        if e.event == "access" and e.actor == "web:desk"
    ]


def _opt_out(gov: Governance) -> None:
    gov.consent.set("sub-0002", "M5", False, actor="subscriber:sub-0002", channel="web")


def _purge(gov: Governance) -> None:
    # long after the records' retention: the notifications' partitions go
    purge(gov, actor="test", now=T0 + timedelta(days=gov.config.retention.notifications + 2))


def _other_process(gov: Governance) -> None:
    # another Governance on the same store (the CLI, a stage): its consent change is in the log
    other = Governance(gov.config)
    try:
        _opt_out(other)
    finally:
        other.close()


CHANGES: list[tuple[str, Callable[[Governance], None], set[str]]] = [
    ("consent", _opt_out, {"sub-0001"}),
    ("purge", _purge, set()),
    ("other-process", _other_process, {"sub-0001"}),
]


@pytest.mark.parametrize(("name", "change", "after"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_change_in_the_log_ends_the_kept_read(
    gov: Governance, name: str, change: Callable[[Governance], None], after: set[str]
) -> None:
    assert _notified(gov) == {"sub-0001", "sub-0002"}
    assert _notified(gov) == {"sub-0001", "sub-0002"}  # kept
    change(gov)
    assert _notified(gov) == after
    cached = [a.get("cached", False) for a in _accesses(gov)]
    assert cached == [False, True, False]


def test_every_page_view_is_an_access_entry(gov: Governance) -> None:
    first = grantcache.read(gov, "M5", "notifications", None, "web:desk")
    again = grantcache.read(gov, "M5", "notifications", None, "web:desk")
    assert again is first
    a, b = [e for e in gov.audit.entries() if e.event == "access" and e.actor == "web:desk"]
    same = ("actor", "measure", "legal_basis", "dataset", "columns")
    assert [getattr(b, k) for k in same] == [getattr(a, k) for k in same]
    assert "cached" not in json.loads(a.detail or "{}")
    assert json.loads(b.detail or "{}") == {"cached": True, "rows": first.table.num_rows}


def test_reads_of_other_measures_or_columns_are_not_shared(gov: Governance) -> None:
    m5 = grantcache.read(gov, "M5", "notifications", None, "web:desk")
    m6 = grantcache.read(gov, "M6", "notifications", None, "web:desk")
    assert set(m5.table.column("measure").to_pylist()) == {"M5"}
    assert set(m6.table.column("measure").to_pylist()) == {"M6"}
    narrow = grantcache.read(gov, "M5", "notifications", ["notification_id"], "web:desk")
    assert narrow.table.column_names == ["notification_id"]


def test_nothing_is_kept_longer_than_configured(tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg = make_config(tmp_path_factory.mktemp("grantcache0") / "store")
    g = Governance(
        cfg.model_copy(update={"web": cfg.web.model_copy(update={"kept_read_max_s": 0})})
    )
    try:
        populate(g)
        first = grantcache.read(g, "M5", "notifications", None, "web:desk")
        assert grantcache.read(g, "M5", "notifications", None, "web:desk") is not first
        assert [
            json.loads(e.detail or "{}").get("cached")
            for e in g.audit.entries()
            if e.actor == "web:desk"
        ] == [None, None]
    finally:
        g.close()


def test_a_write_to_another_dataset_keeps_the_read(gov: Governance) -> None:
    import pyarrow as pa

    first = grantcache.read(gov, "M5", "notifications", None, "web:desk")
    flow = {
        "time_start": T0,
        "time_end": T0,
        "src_addr": "192.0.2.1",
        "dst_addr": "192.0.2.2",
        "src_port": 1,
        "dst_port": 2,
        "protocol": 17,
        "packets": 1,
        "bytes": 60,
        "exporter": "192.0.2.254",
    }
    gov.write("M1", "flows", pa.Table.from_pylist([flow]), "collector")  # the collector, always
    assert grantcache.read(gov, "M5", "notifications", None, "web:desk") is first
    gov.write_registry(  # an allocation load changes whom consent covers: every read again
        "allocations",
        pa.Table.from_pylist(
            [{"start": T0, "end": None, "addr": "10.9.9.9", "subscriber_id": "sub-0009"}]
        ),
        "test",
        source="test",
    )
    assert grantcache.read(gov, "M5", "notifications", None, "web:desk") is not first
