"""Tables for real work: the shared helper (paging, sorting, filters, prefix/CIDR, time range,
CSV) and each console table over real HTTP on a store with more rows than a page."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pyarrow as pa
import pytest

from mamori.governance import Governance
from mamori.governance.roles import Role
from mamori.schemas import FINDINGS, NOTIFICATIONS
from mamori.web import charts
from mamori.web.app import create_app
from mamori.web.auth import Accounts
from mamori.web.tables import Col, TableQuery, TableSpec, csv_bytes, page
from tests.conftest import make_config
from tests.web.conftest import ACCOUNTS, PASSWORD, T0, _t, login, populate
from tests.web.server import running

SPEC = TableSpec(
    "t",
    (
        Col("ts", "time"),
        Col("name", "name", filter="text"),
        Col("kind", "kind", filter="choice"),
        Col("n", "n"),
        Col("ip", "ip", sortable=False),
    ),
    sort="ts",
    search=("name",),
    time="ts",
    net="ip",
    per_page=25,
)


def _table(n: int = 120) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([T0 + timedelta(hours=i) for i in range(n)], pa.timestamp("ms", "UTC")),
            "name": [f"row-{i:03d}" for i in range(n)],
            "kind": ["a" if i % 3 else "b" for i in range(n)],
            "n": list(range(n)),
            "ip": [f"10.16.{i // 100}.{i % 100}" for i in range(n)],
        }
    )


def _q(**params: str) -> TableQuery:
    return TableQuery.parse(SPEC, params, "Asia/Tokyo")


def test_paging_newest_first_by_default() -> None:
    p = page(_table(), _q())
    assert (p.total, p.matched, p.pages, len(p.rows)) == (120, 120, 5, 25)
    assert p.rows[0]["name"] == "row-119"
    last = page(_table(), _q(page="5"))
    assert [r["name"] for r in last.rows][-1] == "row-000" and len(last.rows) == 20
    assert (last.first, last.last) == (101, 120)
    # a page past the end shows the last one; nonsense numbers fall back
    assert page(_table(), _q(page="99")).query.page == 5
    assert page(_table(), _q(page="x", per="7")).query.per == 25


def test_sorting_and_unknown_columns_ignored() -> None:
    assert page(_table(), _q(sort="n")).rows[0]["n"] == 0
    assert page(_table(), _q(sort="-n")).rows[0]["n"] == 119
    # not sortable or unknown: the default order
    assert page(_table(), _q(sort="ip")).rows[0]["name"] == "row-119"
    assert page(_table(), _q(sort="; DROP TABLE")).rows[0]["name"] == "row-119"


def test_filters_free_text_and_choices() -> None:
    p = page(_table(), _q(**{"f.kind": "b"}))
    assert p.matched == 40 and {r["kind"] for r in p.rows} == {"b"}
    assert p.choices["kind"] == ["a", "b"]
    assert page(_table(), _q(q="ROW-01")).matched == 10  # case-insensitive substring
    assert page(_table(), _q(**{"f.name": "row-11", "f.kind": "a"})).matched == 7


@pytest.mark.parametrize(
    ("net", "matched"),
    [
        ("10.16.1.0/24", 20),
        ("10.16.0.0/25", 100),
        ("10.16.0.7", 1),
        ("10.16.1.", 20),
        ("10.16.", 120),
        ("192.0.2.0/24", 0),
    ],
)
def test_prefix_and_cidr(net: str, matched: int) -> None:
    assert page(_table(), _q(net=net)).matched == matched


def test_bad_prefix_is_reported_not_ignored_silently() -> None:
    q = _q(net="not-an-address")
    p = page(_table(), q)
    assert p.matched == 120 and q.errors and "not an address" in q.errors[0]


def test_time_range_in_the_isps_zone() -> None:
    # T0 is 2026-11-10 09:00 UTC = 18:00 JST; "until 2026-11-10" ends at 24:00 JST = 15:00 UTC
    p = page(_table(), _q(until="2026-11-10"))
    assert p.matched == 6
    assert page(_table(), _q(since="2026-11-11", until="2026-11-11")).matched == 24
    bad = _q(since="yesterday")
    assert page(_table(), bad).matched == 120 and "not a date" in bad.errors[0]


def test_csv_has_every_matching_row_in_order() -> None:
    rows = list(csv.DictReader(io.StringIO(csv_bytes(_table(), _q(**{"f.kind": "b"})).decode())))
    assert len(rows) == 40 and rows[0]["name"] == "row-117"


def test_links_keep_the_query() -> None:
    q = _q(q="row", **{"f.kind": "a"}, sort="n")
    assert "f.kind=a" in q.link(page=2) and "page=2" in q.link(page=2) and "sort=n" in q.link()
    assert "sort=-n" in q.sort_link("n")


def test_time_axis_is_true() -> None:
    since = T0
    until = T0 + timedelta(days=2)
    svg = str(
        charts.timeseries(
            [(T0, 10), (T0 + timedelta(hours=1), 20), (T0 + timedelta(days=1), 5)],
            title="t",
            since=since,
            until=until,
            zone="Asia/Tokyo",
        )
    )
    xs = [float(x) for x in re.findall(r'<rect x="([\d.]+)"', svg)]
    assert len(xs) == 3
    # one hour after the first bar is next to it; a day later is 24 hours' width away
    assert (xs[2] - xs[0]) == pytest.approx(24 * (xs[1] - xs[0]), rel=0.01)
    assert "JST" in svg


# ---------------------------------------------------------------- over HTTP

N = 230


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Governance]]:
    base = tmp_path_factory.mktemp("tables")
    (base / "mail").mkdir()
    cfg = make_config(base / "store")
    gov = Governance(
        cfg.model_copy(update={"web": cfg.web.model_copy(update={"mailbox_dir": base / "mail"})})
    )
    populate(gov)
    rows = [
        {
            "detected": T0 + timedelta(minutes=i),
            "finding_id": f"f-bulk-{i:04d}",
            "kind": "c2" if i % 2 else "beacon",
            "method": "beacon",
            "ip": f"198.51.{100 + i // 128}.{i % 128}",
            "port": None if i % 5 == 0 else 8000 + i,
            "protocol": None if i % 5 == 0 else "tcp",
            "score": (i % 100) / 100,
            "measure": "M2",
            "evidence": json.dumps({"period_s": 60 + i, "hosts": 3}),
        }
        for i in range(N)
    ]
    gov.write("M2", "findings", _t(rows, FINDINGS.arrow), "test")
    # an alert in two versions: queued, then sent
    versions = [
        {
            "created": T0,
            "updated": T0 + timedelta(seconds=s),
            "notification_id": "n-versioned",
            "subscriber_id": "sub-0100",
            "measure": "M5",
            "legal_basis": "consent",
            "case_id": "case-100",
            "state": state,
            "sent": T0 + timedelta(seconds=s) if state == "sent" else None,
        }
        for s, state in ((0, "queued"), (30, "failed"), (60, "sent"))
    ]
    gov.write("M5", "notifications", _t(versions, NOTIFICATIONS.arrow), "test")
    accounts = Accounts(gov)
    for role, name in ACCOUNTS.items():
        accounts.add(name, role, PASSWORD)
    with running(create_app(gov)) as url:
        yield url, gov
    gov.close()


@contextmanager
def _as(url: str, role: Role) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as c:
        login(c, ACCOUNTS[role])
        yield c


def _count(html: str) -> tuple[int, int]:
    m = re.search(r'data-matched="(\d+)" data-total="(\d+)"', html)
    assert m, "no pager"
    return int(m.group(1)), int(m.group(2))


def test_findings_are_paged_sorted_and_filtered(big: tuple[str, Governance]) -> None:
    url, _ = big
    with _as(url, Role.ANALYST) as c:
        first = c.get("/findings").text
        assert _count(first) == (N + 2, N + 2)
        assert first.count("<tr data-finding=") == 50
        last = c.get("/findings", params={"page": "5"}).text
        assert last.count("<tr data-finding=") == N + 2 - 200
        by_score = c.get("/findings", params={"sort": "score"}).text
        assert "f-bulk-0000" in by_score and "f-bulk-0099" not in by_score
        top = c.get("/findings", params={"sort": "-score"}).text
        assert top.index('data-finding="f-bulk-0099"') < top.index('data-finding="f-c2-1"')
        c2 = c.get("/findings", params={"f.kind": "c2"}).text
        assert _count(c2)[0] == N // 2 + 1
        prefix = c.get("/findings", params={"net": "198.51.101.0/24"}).text
        assert _count(prefix)[0] == N - 128
        typed = c.get("/findings", params={"net": "198.51.100.1"}).text
        assert _count(typed)[0] == 1
        # an endpoint without a port is an address, never "address:None"
        assert ":None" not in first + last and "198.51.100.0</a>" in last
        csv_text = c.get("/findings", params={"format": "csv", "f.kind": "beacon"}).text
        assert len(csv_text.strip().splitlines()) == N // 2 + 1
        assert csv_text.startswith("detected,finding_id,kind")


def test_every_table_has_its_controls(big: tuple[str, Governance]) -> None:
    url, _ = big
    with _as(url, Role.ABUSE_DESK) as desk, _as(url, Role.AUDITOR) as aud:
        for c, path in (
            (desk, "/findings"),
            (desk, "/alerts"),
            (desk, "/actions"),
            (desk, "/cases"),
            (desk, "/mailbox"),
            (aud, "/auditor/log"),
        ):
            html = c.get(path).text
            assert 'class="filters"' in html and 'class="pager"' in html, path
            assert "format=csv" in html, path
            r = c.get(path, params={"format": "csv"})
            assert r.headers["content-type"].startswith("text/csv"), path


def test_alerts_one_row_per_alert_in_its_current_state(big: tuple[str, Governance]) -> None:
    url, _ = big
    with _as(url, Role.ABUSE_DESK) as c:
        html = c.get("/alerts", params={"q": "n-versioned"}).text
        assert html.count('data-alert="n-versioned"') == 1
        row = html.split('data-alert="n-versioned"')[1].split("</tr>")[0]
        assert "state-sent" in row and "state-queued" not in row
        assert 'href="/cases/case-100"' in row  # linked to its case


def test_search_by_prefix_and_cidr(big: tuple[str, Governance]) -> None:
    url, _ = big
    with _as(url, Role.ANALYST) as c:
        for q, n in (("198.51.101.0/25", 102 - 0), ("198.51.101.", N - 128), ("198.51.100.5", 1)):
            html = c.get("/search", params={"q": q}).text
            found = html.split('id="result-findings"')[1].split("</section>")[0]
            assert f"({n})" in found, q
            assert ":None" not in found


def test_audit_log_every_entry_reachable_and_filterable(big: tuple[str, Governance]) -> None:
    url, gov = big
    for i in range(250):  # more than the 200 the old page stopped at
        gov.audit.append(actor="test", event="test-entry", detail={"rows": i})
    with _as(url, Role.AUDITOR) as c:
        html = c.get("/auditor/log").text
        matched, total = _count(html)
        assert total >= 400 and matched == total
        pages = -(-matched // 100)
        last = c.get("/auditor/log", params={"page": str(pages)}).text
        assert '<tr class="ev-' in last and ">1</td>" in last  # the very first entry
        writes = c.get("/auditor/log", params={"f.event": "write", "f.measure": "M2"}).text
        n_writes = sum(1 for e in gov.audit.entries() if e.event == "write" and e.measure == "M2")
        assert _count(writes)[0] == n_writes
        mine = c.get("/auditor/log", params={"f.actor": "auditor1"}).text
        assert _count(mine)[0] >= 1 and "web:auditor1" in mine
        future = c.get("/auditor/log", params={"since": "2099-01-01"}).text
        assert _count(future)[0] == 0
        # the filters see masked text only: an address is not a way in
        probe = c.get("/auditor/log", params={"f.actor": "192.0.2"}).text
        assert _count(probe)[0] == 0
