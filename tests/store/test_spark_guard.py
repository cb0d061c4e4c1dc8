"""The Spark sandbox's allowlist: what a holder's query may be, checked before Spark sees it,
and the translation of the accepted ones (no Spark needed here)."""

from __future__ import annotations

import pytest

from mamori.store.engine import SandboxRefused
from mamori.store.spark_guard import check, to_spark

OWN = frozenset({"m4_flows_1", "mine"})

# (what, query, words of the reason): each reaches outside the sandbox's own views, or changes
# the session, or calls the JVM
REFUSED = [
    ("reflect", "SELECT reflect('java.lang.Runtime', 'getRuntime') FROM m4_flows_1", "function"),
    ("java_method", "SELECT java_method('java.lang.System', 'exit', 0)", "function"),
    ("reflect in a CTE", "WITH a AS (SELECT reflect('a', 'b') x) SELECT * FROM a", "function"),
    ("parquet.`path`", "SELECT * FROM parquet.`/store/flows`", "single query|does not run"),
    ("parquet.path", 'SELECT * FROM parquet."/store/flows"', "outside"),
    ("read_parquet", "SELECT * FROM read_parquet('/store/flows/**/*.parquet')", "outside"),
    ("path literal", "SELECT * FROM '/store/flows/x.parquet'", "granted inputs"),
    ("input_file_name", "SELECT input_file_name() FROM m4_flows_1", "function"),
    ("another grant's view", "SELECT * FROM m2_flows_2", "granted inputs"),
    ("governance's view", "SELECT * FROM mamori_sbx1_m4_flows_1", "granted inputs"),
    ("global temp view", "SELECT * FROM global_temp.x", "outside"),
    ("in a subquery", "SELECT * FROM mine WHERE x IN (SELECT x FROM consent_2)", "granted"),
    (
        "CREATE TABLE LOCATION",
        "CREATE TABLE t USING parquet LOCATION '/tmp/x' AS SELECT * FROM mine",
        "CREATE TABLE",
    ),
    ("CREATE OR REPLACE", "CREATE OR REPLACE TABLE mine AS SELECT 1", "CREATE TABLE"),
    ("CREATE VIEW of another", "CREATE VIEW v AS SELECT * FROM m2_flows_2", "granted inputs"),
    ("INSERT", "INSERT INTO mine SELECT * FROM m4_flows_1", "does not run"),
    ("SET", "SET spark.sql.runSQLOnFiles = true", "does not run"),
    ("RESET", "RESET spark.sql.runSQLOnFiles", "single query|does not run"),
    ("ADD JAR", "ADD JAR '/tmp/evil.jar'", "single query|does not run"),
    ("two statements", "SELECT 1; SELECT * FROM parquet.`/x`", "single query|does not run"),
    ("CACHE TABLE", "CACHE TABLE x AS SELECT 1", "single query|does not run"),
    ("DROP another", "DROP TABLE m2_flows_2", "granted inputs"),
    ("DROP DATABASE", "DROP DATABASE default", "DROP TABLE"),
    ("lambda", "SELECT list_transform([1], x -> x + 1)", "function"),
    ("current_user", "SELECT current_user()", "function"),
]


@pytest.mark.parametrize(("what", "query", "why"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(what: str, query: str, why: str) -> None:
    with pytest.raises(SandboxRefused, match=why):
        check(query, OWN)


def test_accepted_queries_name_only_private_views() -> None:
    views = {"m4_flows_1": "mamori_sbx7_m4_flows_1", "mine": "mamori_sbx7_mine"}
    q = (
        "WITH o AS (SELECT * FROM m4_flows_1 WHERE NOT x) "
        "SELECT o.a, m.b, epoch(o.t) AS ts, count(DISTINCT hash(o.a, o.b)) AS n, "
        "quantile_cont(o.v, [0.25, 0.5]) AS q, median(o.v) AS med, CAST(o.p AS UBIGINT) AS u "
        "FROM o SEMI JOIN mine m USING (a) GROUP BY ALL"
    )
    c = check(q, OWN)
    assert c.kind == "query"
    out = to_spark(c.tree, views)
    assert "`mamori_sbx7_m4_flows_1` AS `m4_flows_1`" in out
    assert "`mamori_sbx7_mine` AS m" in out
    for spark_spelling in ("UNIX_MICROS(", "XXHASH64(", "PERCENTILE(", "AS BIGINT"):
        assert spark_spelling in out.upper(), out
    for duckdb_only in ("UNIX_TIMESTAMP", "HASH(", "UBIGINT", "MEDIAN"):
        assert duckdb_only not in out.upper().replace("XXHASH64(", ""), out


@pytest.mark.parametrize(
    ("statement", "kind", "target"),
    [
        ("CREATE TABLE t2 AS SELECT * FROM mine", "create", "t2"),
        ("DROP TABLE mine", "drop", "mine"),
        ("DROP TABLE IF EXISTS gone", "drop", "gone"),
        ("SELECT 1 UNION ALL SELECT 2", "query", None),
    ],
)
def test_statements_the_sandbox_carries_out(statement: str, kind: str, target: str | None) -> None:
    c = check(statement, OWN)
    assert (c.kind, c.target) == (kind, target)


def test_comments_never_reach_spark() -> None:
    c = check("SELECT /*+ REPARTITION(1) */ a FROM mine -- x", OWN)
    assert "/*" not in to_spark(c.tree, {"mine": "v"})
