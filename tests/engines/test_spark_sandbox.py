"""The Spark sandbox refuses what the DuckDB sandbox refuses (tests/governance/test_sandbox.py),
each refusal audited, and runs what a detector writes: a grant on Spark is still a capability,
not a session. Spark SQL can call Java (``reflect``), read files (``parquet.`path```), write
tables on paths and see every temporary view of the session; none of it gets through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mamori.config import SparkConfig
from mamori.governance import AccessRefused, Governance, Grant
from tests.conftest import HOUR, T0, make_config
from tests.engines.conftest import MASTER
from tests.governance.test_access import _load_world
from tests.governance.test_sandbox import X_ADDR, _refusals, _x_rows

pytestmark = pytest.mark.slow  # starts Spark


# one governance and one grant for the module: a refusal changes nothing but the audit log, and
# every consent-filtered read on Spark is a dozen jobs
@pytest.fixture(scope="module")
def sgov(tmp_path_factory: pytest.TempPathFactory, spark_session: Any) -> Iterator[Governance]:
    cfg = make_config(
        tmp_path_factory.mktemp("spark-sandbox") / "store",
        engine="spark",
        spark=SparkConfig(master=MASTER, conf={"spark.sql.shuffle.partitions": "4"}),
    )
    with Governance(cfg) as g:
        _load_world(g)
        g.consent.set("X", "M4", False, actor="X", channel="web", at=T0 - 2 * HOUR)
        yield g


@pytest.fixture(scope="module")
def grant(sgov: Governance) -> Grant:
    box = sgov.sandbox(label="detector", neutral=True)
    return sgov.open("M4", "flows", ["time_start", "src_addr", "dst_addr"], "d", sandbox=box)


# Spark's own ways around a grant, and DuckDB's (tests/governance/test_sandbox.py) as written
BYPASSES = [
    ("reflect", "SELECT reflect('java.lang.System', 'getProperty', 'user.home')"),
    ("java_method", "SELECT java_method('java.lang.Runtime', 'getRuntime')"),
    ("reflect beside the grant", "SELECT reflect('java.util.UUID', 'randomUUID') FROM {grant}"),
    ("parquet.`path`", "SELECT * FROM parquet.`{store}/flows`"),
    ("json.`path`", "SELECT * FROM json.`{store}/audit`"),
    ("input_file_name", "SELECT input_file_name() AS f FROM {grant}"),
    (
        "CREATE TABLE … LOCATION",
        "CREATE TABLE t USING parquet LOCATION '{store}/flows' AS SELECT * FROM {grant}",
    ),
    ("CREATE TABLE … USING", "CREATE TABLE t USING parquet AS SELECT * FROM {grant}"),
    ("CREATE TEMP VIEW", "CREATE TEMPORARY VIEW v AS SELECT * FROM parquet.`{store}/flows`"),
    (
        "INSERT OVERWRITE DIRECTORY",
        "INSERT OVERWRITE DIRECTORY '{store}/x' USING parquet SELECT * FROM {grant}",
    ),
    ("SET runSQLOnFiles", "SET spark.sql.runSQLOnFiles = true"),
    ("RESET", "RESET"),
    ("ADD JAR", "ADD JAR '{store}/x.jar'"),
    ("CREATE FUNCTION", "CREATE FUNCTION f AS 'org.example.F' USING JAR '{store}/x.jar'"),
    ("SHOW TABLES", "SHOW TABLES"),
    ("global_temp", "SELECT * FROM global_temp.x"),
    ("catalogue", "SELECT * FROM spark_catalog.default.x"),
    ("read_parquet", "SELECT * FROM read_parquet('{store}/flows/**/*.parquet')"),
    ("path literal", "SELECT * FROM '{store}/flows/**/*.parquet'"),
    ("ATTACH", "ATTACH '{store}/other.duckdb' AS other"),
    ("COPY out", "COPY (SELECT 1) TO '{store}/out.csv'"),
    ("SET memory_limit", "SET memory_limit = '100GB'"),
    ("INSTALL", "INSTALL httpfs"),
    ("two statements", "SELECT 1 FROM {grant}; SELECT * FROM parquet.`{store}/flows`"),
]


@pytest.mark.parametrize(("what", "query"), BYPASSES, ids=[b[0] for b in BYPASSES])
def test_bypass_is_refused_and_audited(
    sgov: Governance, grant: Grant, what: str, query: str
) -> None:
    assert grant.sandbox.engine == "spark"
    store = sgov.config.store.resolve()
    q = query.format(store=store, grant=grant.name)
    before = len(_refusals(sgov))
    with pytest.raises(AccessRefused, match="refused") as info:
        grant.sql(q).fetchall()
    after = _refusals(sgov)
    assert len(after) == before + 1, f"{what}: no audit entry for the refusal"
    entry = after[-1]
    assert entry["seq"] == info.value.audit_seq
    detail = entry["detail"]
    assert isinstance(detail, dict) and detail["mode"] == "query"
    assert detail["measures"] == ["M4"]
    assert "query_sha256" in detail and str(store) not in json.dumps(detail)


def test_other_views_of_the_session_are_out_of_reach(sgov: Governance, grant: Grant) -> None:
    other = sgov.open(
        "M2",
        "flows",
        ["time_start", "src_addr", "dst_addr"],
        "d",
        justification="C&C discovery",
        sandbox=sgov.sandbox(label="other", neutral=True),
    )
    assert other.sandbox.engine == "spark"
    assert _x_rows(other.arrow().to_pylist())  # unfiltered (justified act) …
    spark = sgov._reader.spark
    views = [t.name for t in spark.catalog.listTables()]
    assert views  # … and every view of the session (governance's own too) is refused by name
    for view in [other.name, *views]:
        with pytest.raises(AccessRefused, match="granted inputs"):
            grant.sql(f"SELECT * FROM {view}").fetchall()
    # a derived table is the sandbox's own, under a private name the holder never sees
    grant.sandbox.execute(f"CREATE TABLE mine2 AS SELECT * FROM {grant.name}")
    with pytest.raises(AccessRefused):
        other.sql("SELECT * FROM mine2").fetchall()
    grant.sandbox.execute("DROP TABLE mine2")


def test_holder_queries_run_on_spark_and_see_only_granted_rows(
    sgov: Governance, grant: Grant
) -> None:
    jobs = grant.sandbox.spark_jobs
    rows = grant.sql(
        f"SELECT src_addr, count(*) AS n FROM {grant.name} GROUP BY ALL ORDER BY src_addr"
    ).fetchall()
    assert ("10.0.0.2", 12) in rows
    assert grant.sandbox.spark_jobs > jobs
    assert not _x_rows(grant.arrow().to_pylist())
    assert X_ADDR in {r[0] for r in rows}  # X's flows after the opt-out window stay
    grant.sandbox.execute(
        f"CREATE TABLE mine AS SELECT * FROM {grant.name} WHERE src_addr = '10.0.0.2'"
    )
    assert grant.sql("SELECT count(*) FROM mine").fetchall() == [(12,)]
    grant.sandbox.execute("DROP TABLE mine")
    with pytest.raises(AccessRefused):
        grant.sql("SELECT * FROM mine").fetchall()


def test_without_neutral_sql_a_grant_stays_in_duckdb(sgov: Governance) -> None:
    g = sgov.open("M4", "flows", ["src_addr"], "d")
    assert g.sandbox.engine == "duckdb" and g.sandbox.spark_jobs == 0
