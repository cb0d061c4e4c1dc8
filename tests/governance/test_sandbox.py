"""A grant is a capability, not a connection: the ways around it, each refused and audited.

Every query a grant's holder can run goes to a sandbox holding only the granted rows and columns
(consent already applied). These tests try what a careless or curious holder would — read the
store's files by every spelling, attach another database, reach a second grant, change the
engine's settings, find an unfiltered view in the catalogue — and expect a refusal with its own
audit entry, while the opted-out subscriber's flows never come back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from mamori.governance import AccessRefused, Governance, Grant
from tests.conftest import HOUR, T0, make_config
from tests.governance.test_access import _load_world

X_ADDR = "10.0.0.1"  # held by X (opted out of M4) until T0+1h


def _refusals(gov: Governance) -> list[dict[str, object]]:
    return [
        {**vars(e), "detail": json.loads(e.detail) if e.detail else None}
        for e in gov.audit.entries()
        if e.event == "refused"
    ]


@pytest.fixture
def opted_out(gov: Governance) -> Grant:
    _load_world(gov)
    gov.consent.set("X", "M4", False, actor="X", channel="web", at=T0 - 2 * HOUR)
    return gov.open("M4", "flows", ["time_start", "src_addr", "dst_addr"], "detector")


def _x_rows(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [
        r
        for r in rows
        if X_ADDR in (r.get("src_addr"), r.get("dst_addr")) and r["time_start"] < T0 + HOUR  # type: ignore[operator]
    ]


def _store(gov: Governance) -> Path:
    return gov.config.store.resolve()


# Each query tries to reach stored data (or change the engine) around the grant.
BYPASSES = [
    ("read_parquet", "SELECT * FROM read_parquet('{store}/flows/**/*.parquet')"),
    ("parquet_scan", "SELECT * FROM parquet_scan('{store}/flows/**/*.parquet')"),
    ("read_csv", "SELECT * FROM read_csv('{store}/audit/HEAD')"),
    ("read_csv_auto", "SELECT * FROM read_csv_auto('/etc/passwd')"),
    ("glob", "SELECT * FROM glob('{store}/**')"),
    ("path literal", "SELECT * FROM '{store}/flows/**/*.parquet'"),
    ("quoted path", 'SELECT * FROM "{store}/flows/date=2026-11-01/hour=10/part-0.parquet"'),
    ("consent", "SELECT subscriber_id, state FROM read_parquet('{store}/consent/**/*.parquet')"),
    ("ATTACH", "ATTACH '{store}/other.duckdb' AS other"),
    ("COPY out", "COPY (SELECT 1) TO '{store}/out.csv'"),
    ("COPY in", "COPY {grant} FROM '{store}/x.csv'"),
    ("SET memory_limit", "SET memory_limit = '100GB'"),
    ("RESET", "RESET memory_limit"),
    ("PRAGMA setting", "PRAGMA memory_limit = '100GB'"),
    ("turn access back on", "SET enable_external_access = true"),
    ("temp_directory", "SET temp_directory = '/tmp/elsewhere'"),
    ("INSTALL", "INSTALL httpfs"),
    ("LOAD", "LOAD httpfs"),
    ("EXPORT", "EXPORT DATABASE '{store}/exported'"),
    # issue 15: these each returned an opted-out subscriber's flows, unaudited
    (
        "read_parquet after -- in a literal",
        "SELECT '--' AS c, * FROM read_parquet('{store}/flows/**/*.parquet')",
    ),
    (
        "path built with chr()",
        "SELECT * FROM read_parquet(chr(47) || '{store_rel}/flows/**/*.parquet')",
    ),
    ("parquet_metadata", "SELECT * FROM parquet_metadata('{store}/flows/**/*.parquet')"),
    ("parquet_schema", "SELECT * FROM parquet_schema('{store}/flows/**/*.parquet')"),
    ("read_text", "SELECT * FROM read_text('{store}/audit/HEAD')"),
    ("read_json", "SELECT * FROM read_json('{store}/x.json')"),
]


@pytest.mark.parametrize(("what", "query"), BYPASSES, ids=[b[0] for b in BYPASSES])
def test_bypass_is_refused_and_audited(
    gov: Governance, opted_out: Grant, what: str, query: str
) -> None:
    store = _store(gov)
    q = query.format(store=store, store_rel=str(store)[1:], grant=opted_out.name)
    before = len(_refusals(gov))
    with pytest.raises(AccessRefused, match="refused") as info:
        opted_out.sql(q).fetchall()
    after = _refusals(gov)
    assert len(after) == before + 1, f"{what}: no audit entry for the refusal"
    entry = after[-1]
    assert entry["seq"] == info.value.audit_seq
    detail = entry["detail"]
    assert isinstance(detail, dict) and detail["mode"] == "query"
    assert detail["measures"] == ["M4"]
    # the query may hold addresses: the log keeps its digest, not its text
    assert str(store) not in json.dumps(detail)


@pytest.mark.parametrize(("what", "query"), BYPASSES[:8], ids=[b[0] for b in BYPASSES[:8]])
def test_combine_refuses_the_same(gov: Governance, opted_out: Grant, what: str, query: str) -> None:
    store = _store(gov)
    q = query.format(store=store, store_rel=str(store)[1:], grant="{g}")
    before = len(_refusals(gov))
    with pytest.raises(AccessRefused):
        gov.combine(q, g=opted_out, k=pa.table({"a": [1]})).fetchall()
    assert len(_refusals(gov)) == before + 1


def test_the_catalogue_shows_only_filtered_rows(gov: Governance, opted_out: Grant) -> None:
    """Issue 15: the unfiltered view behind a grant was found by name in the catalogue. Now
    every table the sandbox has is the grant's own, already filtered."""
    names = [
        r[0] for r in opted_out.sql("SELECT table_name FROM information_schema.tables").fetchall()
    ]
    assert names == [opted_out.name]
    names2 = [r[0] for r in opted_out.sql("SELECT table_name FROM duckdb_tables()").fetchall()]
    assert names2 == [opted_out.name]
    assert not [
        r for r in opted_out.sql("SELECT * FROM duckdb_views() WHERE NOT internal").fetchall()
    ]
    for name in names:
        rows = opted_out.sql(f"SELECT * FROM {name}").to_arrow_table().to_pylist()
        assert rows and not _x_rows(rows)


def test_a_second_grants_data_is_out_of_reach(gov: Governance, opted_out: Grant) -> None:
    other = gov.open(
        "M2", "flows", ["time_start", "src_addr", "dst_addr"], "d", justification="C&C discovery"
    )
    # the M2 grant (justified act: no consent filter) holds X's flows …
    assert _x_rows(other.arrow().to_pylist())
    # … and the M4 grant's holder cannot name it (nor find it: see the catalogue test)
    before = len(_refusals(gov))
    with pytest.raises(AccessRefused, match="granted inputs"):
        opted_out.sql(f"SELECT * FROM {other.name}").fetchall()
    assert len(_refusals(gov)) == before + 1
    # nor the other way round
    with pytest.raises(AccessRefused):
        other.sql(f"SELECT * FROM {opted_out.name}").fetchall()


def test_holder_queries_work_inside(gov: Governance, opted_out: Grant) -> None:
    rows = opted_out.sql(
        f"SELECT src_addr, count(*) AS n FROM {opted_out.name} GROUP BY ALL ORDER BY src_addr"
    ).fetchall()
    assert ("10.0.0.2", 12) in rows
    # derived tables stay inside the sandbox
    opted_out.sandbox.execute(f"CREATE TABLE mine AS SELECT * FROM {opted_out.name}")
    assert opted_out.sql("SELECT count(*) FROM mine").fetchall()[0][0] == opted_out.arrow().num_rows
    assert not _refusals(gov)


def test_grants_in_one_sandbox_combine(gov: Governance) -> None:
    _load_world(gov)
    box = gov.sandbox(label="detector")
    a = gov.open("M2", "flows", ["src_addr", "dst_port"], "d", justification="test", sandbox=box)
    b = gov.open("M2", "flows", ["dst_addr"], "d", justification="test", sandbox=box)
    n = gov.combine(
        "SELECT (SELECT count(*) FROM {a}) + (SELECT count(*) FROM {b}) + (SELECT count(*) FROM {k})",
        a=a,
        b=b,
        k=pa.table({"x": [1, 2]}),
    ).fetchall()[0][0]
    assert n == a.arrow().num_rows * 2 + 2
    # grants from different sandboxes: combined in a new one holding copies
    c = gov.open("M14", "flows", ["dst_port"], "ops")
    m = gov.combine("SELECT count(*) FROM {a} JOIN {c} USING (dst_port)", a=a, c=c).fetchall()
    assert m[0][0] > 0


def test_memory_limit_from_configuration_with_spill_in_store(tmp_path: Path) -> None:
    gov = Governance(
        make_config(
            tmp_path / "store",
            governance=make_config(tmp_path / "x").governance.model_copy(
                update={"sandbox_memory_limit_mb": 256}
            ),
        )
    )
    try:
        _load_world(gov)
        g = gov.open("M14", "flows", ["dst_port"], "ops")
        limit, spill = g.sql(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchall()[0]
        assert limit.startswith(("244", "256")), limit  # 256 MB shown in MiB
        assert Path(spill).is_relative_to(gov.config.store / "_state" / "spill")
        assert Path(spill).is_dir()
        # governance's own engine is back to its default after filling the sandbox
        own = gov._engine.con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
        assert own != limit
        # a detector's own limit wins for its sandbox
        box = gov.sandbox(512)
        assert (
            box.sql("SELECT current_setting('memory_limit')")
            .fetchall()[0][0]
            .startswith(("488", "512"))
        )
        g.sandbox.close()
        assert not Path(spill).exists()
        with pytest.raises(ValueError, match="closed"):
            g.sql("SELECT 1")
    finally:
        gov.close()


def test_a_spilling_query_stays_within_the_store(tmp_path: Path) -> None:
    gov = Governance(make_config(tmp_path / "store"))
    try:
        box = gov.sandbox(100)
        box.execute(
            "CREATE TABLE big AS SELECT range AS a, md5(range::VARCHAR) AS s FROM range(4000000)"
        )
        # sorting ~300 MB of strings under 100 MB spills, into the store's spill directory
        box.execute("CREATE TABLE sorted AS SELECT * FROM big ORDER BY s")
        files = [r[0] for r in box.sql("SELECT path FROM duckdb_temporary_files()").fetchall()]
        assert files, "nothing spilled: the test no longer tests spilling"
        assert all(Path(f).is_relative_to(tmp_path / "store" / "_state" / "spill") for f in files)
        assert box.sql("SELECT count(*) FROM sorted").fetchall()[0][0] == 4_000_000
    finally:
        gov.close()
    assert not list((tmp_path / "store" / "_state" / "spill").glob("sandbox-*"))


def test_rows_read_straight_from_files_are_locked_in_as_well(gov: Governance) -> None:
    """A grant with no consent filter is copied by the sandbox itself from the store's files
    (before its holder's first query); the holder's first query locks it all the same."""
    _load_world(gov)
    box = gov.sandbox(label="detector")
    g = gov.open("M2", "flows", ["time_start", "src_addr"], "d", justification="t", sandbox=box)
    store = _store(gov)
    for _, query in BYPASSES[:6]:
        with pytest.raises(AccessRefused):
            g.sql(query.format(store=store, store_rel=str(store)[1:], grant=g.name)).fetchall()
    tables = [r[0] for r in g.sql("SELECT table_name FROM duckdb_tables()").fetchall()]
    assert tables == [g.name]
    # a grant opened after the holder's first query arrives through Arrow, with the same rows
    late = gov.open("M2", "flows", ["time_start", "src_addr"], "d", justification="t", sandbox=box)
    order = [("time_start", "ascending"), ("src_addr", "ascending")]
    assert late.arrow().sort_by(order).equals(g.arrow().sort_by(order))


def test_a_streamed_grant_is_read_once(gov: Governance) -> None:
    _load_world(gov)
    copied = gov.open("M2", "flows", ["time_start", "src_addr"], "d", justification="t").arrow()
    g = gov.open("M2", "flows", ["time_start", "src_addr"], "d", justification="t", stream=True)
    assert g.sql(f"SELECT count(*) FROM {g.name}").fetchall()[0][0] == copied.num_rows
    # a stream read again would be silently empty: refused instead
    with pytest.raises(ValueError, match="read once"):
        g.sql(f"SELECT count(*) FROM {g.name}")
    g2 = gov.open("M2", "flows", ["src_addr"], "d", justification="t", stream=True)
    with pytest.raises(ValueError, match="one reference"):
        g2.sql(f"SELECT * FROM {g2.name} UNION ALL SELECT * FROM {g2.name}")
    # under a consent filter the rows are copied as usual (and readable again)
    gov.consent.set("X", "M4", False, actor="X", channel="web", at=T0 - 2 * HOUR)
    g3 = gov.open("M4", "flows", ["time_start", "src_addr", "dst_addr"], "d", stream=True)
    first = g3.arrow()
    assert first.num_rows and not _x_rows(first.to_pylist())
    assert g3.arrow().num_rows == first.num_rows
