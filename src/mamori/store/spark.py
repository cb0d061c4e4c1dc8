"""Apache Spark as the store's read engine, for stores one machine cannot scan (scale-out).

It reads the same Parquet layout as :class:`~mamori.store.engine.DuckDBEngine`
(``<store>/<dataset>/date=YYYY-MM-DD/hour=HH/part-*.parquet``), from a local path or an object
store URL (``s3a://bucket/prefix``): partitions outside a time window are pruned by Spark from the
``date``/``hour`` directory names (``PartitionFilters`` in the plan), and only the named columns
are read. Governance runs its own fixed SQL on it (the consent filter, the allocation resolution);
what a grant's holder runs goes through :class:`SparkSandboxEngine`, which checks each query
against an allowlist (:mod:`mamori.store.spark_guard`) before Spark sees it, because Spark SQL
has no equivalent of DuckDB's locked, file-less database (``reflect()`` alone calls any Java
method).

Dialect: governance's SQL is written once, in the subset both engines accept; Spark runs it with
ANSI mode and double-quoted identifiers, and :func:`spark_sql` rewrites the two spellings only
DuckDB knows (``TIMESTAMPTZ '…'`` literals, ``NULL::USMALLINT``).

Pitfalls handled here (measured, ``RECIPES.md``): the session time zone is UTC; timestamps come
back through Arrow (``toArrow`` keeps UTC; ``toPandas`` would not); Spark has no unsigned integers,
so results are cast back to the dataset's Arrow types; ``PYSPARK_PYTHON`` is this interpreter.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from mamori.schemas import DatasetSchema
from mamori.store.spark_guard import check, to_spark

__all__ = [
    "SparkEngine",
    "SparkRelation",
    "SparkSandboxEngine",
    "arrow_to_spark_ddl",
    "session",
    "spark_sql",
    "spark_type",
]

# the settings every Mamori session needs; the operator's [spark] conf is applied over them,
# except these, which the engine's correctness rests on
_REQUIRED = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.ansi.doubleQuotedIdentifiers": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # partition values are compared as the text of their directory names ('05' stays '05')
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    # no `parquet.`/path`` in SQL: sandbox queries are checked too, this is the second lock
    "spark.sql.runSQLOnFiles": "false",
}
_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
}
_SESSIONS: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}


def session(master: str = "local[*]", conf: Mapping[str, str] | None = None) -> Any:
    """The process's Spark session for ``master`` (made once: start-up takes seconds)."""
    settings = {**_DEFAULTS, **(conf or {}), **_REQUIRED}
    key = (master, tuple(sorted(settings.items())))
    if key in _SESSIONS:
        return _SESSIONS[key]
    # workers must import this interpreter's packages; a local master binds to loopback only
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise RuntimeError(
            'engine = "spark" needs pyspark (`make venv` installs it; pip install pyspark)'
        ) from exc
    builder = SparkSession.builder.master(master).appName("mamori")
    for k, v in settings.items():
        builder = builder.config(k, v)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: say what to check, not a Py4J trace
        raise RuntimeError(
            f'engine = "spark": could not start Spark (master {master}): {exc}. Spark needs '
            "Java 17+ on PATH or JAVA_HOME (`make apt` installs default-jre-headless) and, for "
            "a cluster master, that cluster reachable"
        ) from exc
    spark.sparkContext.setLogLevel("ERROR")
    _SESSIONS[key] = spark
    return spark


def spark_type(t: pa.DataType) -> str:
    """The Spark SQL type a Parquet column of Arrow type ``t`` is read as (no unsigned types in
    Spark: each widens to the next signed one, as Spark's Parquet reader does)."""
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    simple = {
        pa.string(): "STRING",
        pa.large_string(): "STRING",
        pa.bool_(): "BOOLEAN",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INT",
        pa.int64(): "BIGINT",
        pa.uint8(): "SMALLINT",
        pa.uint16(): "INT",
        pa.uint32(): "BIGINT",
        pa.uint64(): "DECIMAL(20,0)",
    }
    if t in simple:
        return simple[t]
    raise TypeError(f"no Spark type for Arrow type {t}")


def _bq(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def arrow_to_spark_ddl(schema: pa.Schema) -> str:
    return ", ".join(f"{_bq(f.name)} {spark_type(f.type)}" for f in schema)


_TSTZ = re.compile(r"\bTIMESTAMPTZ\s+'", re.IGNORECASE)
_NULL_CAST = re.compile(r"\bNULL::(USMALLINT|UINTEGER|INTEGER|SMALLINT|BIGINT|VARCHAR)\b", re.I)
_NULL_TYPES = {
    "USMALLINT": "INT",
    "SMALLINT": "SMALLINT",
    "INTEGER": "INT",
    "UINTEGER": "BIGINT",
    "BIGINT": "BIGINT",
    "VARCHAR": "STRING",
}


def spark_sql(query: str) -> str:
    """Governance's SQL (the subset both engines accept, plus two DuckDB spellings) for Spark."""
    query = _TSTZ.sub("TIMESTAMP '", query)
    return _NULL_CAST.sub(lambda m: f"CAST(NULL AS {_NULL_TYPES[m.group(1).upper()]})", query)


def _hour(t: datetime) -> datetime:
    t = t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    return t.replace(minute=0, second=0, microsecond=0)


class SparkEngine:
    """Reads the store with Spark (see the module docstring). ``root`` is the store's path or
    URL; relations are Spark DataFrames."""

    name = "spark"

    def __init__(self, root: str | Path, spark: Any) -> None:
        self.root = str(root).rstrip("/")
        self.spark = spark
        self._n = 0

    # ---------------------------------------------------------------- reading

    def _exists(self, path: str) -> bool:
        jvm = self.spark.sparkContext._jvm
        p = jvm.org.apache.hadoop.fs.Path(path)
        fs = p.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        return bool(fs.exists(p))

    def window_filter(self, start: datetime | None, end: datetime | None) -> str:
        """Spark SQL over the partition columns that keeps the hours overlapping [start, end)."""
        conds: list[str] = []
        if start is not None:
            h = _hour(start)
            d, hh = h.strftime("%Y-%m-%d"), h.strftime("%H")
            conds.append(f"(`date` > '{d}' OR (`date` = '{d}' AND `hour` >= '{hh}'))")
        if end is not None:
            # the last hour that starts before ``end``
            last = _hour(end - timedelta(microseconds=1))
            d, hh = last.strftime("%Y-%m-%d"), last.strftime("%H")
            conds.append(f"(`date` < '{d}' OR (`date` = '{d}' AND `hour` <= '{hh}'))")
        return " AND ".join(conds)

    def scan(
        self,
        schema: DatasetSchema,
        columns: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        equals: Mapping[str, str] | None = None,
    ) -> Any:
        from pyspark.sql import functions as F  # noqa: N812 (Spark's own convention)

        cols = list(columns) if columns is not None else list(schema.column_names)
        for c in cols:
            schema.column(c)  # raises KeyError naming the column
        ddl = arrow_to_spark_ddl(schema.arrow)
        path = f"{self.root}/{schema.name}"
        if not self._exists(path):
            return self.spark.createDataFrame([], ddl).select(*[_bq(c) for c in cols])
        # The declared schema (not the files' own) is read: a column added after some files
        # were written comes out null there, as DuckDB's union_by_name gives.
        df = (
            self.spark.read.schema(f"{ddl}, `date` STRING, `hour` STRING")
            .option("pathGlobFilter", "part-*.parquet")
            .parquet(path)
        )
        prune = self.window_filter(start, end)
        if prune:
            df = df.filter(prune)
        ts = F.col(_bq(schema.time_column))
        if start is not None:
            df = df.filter(ts >= F.lit(start.astimezone(UTC)))
        if end is not None:
            df = df.filter(ts < F.lit(end.astimezone(UTC)))
        for column, value in (equals or {}).items():
            df = df.filter(F.col(_bq(schema.column(column).name)) == F.lit(value))
        return df.select(*[_bq(c) for c in cols])

    def register(self, name: str, value: Any, *, materialise: bool = False) -> None:
        """Make a DataFrame or Arrow table visible to :meth:`sql` as ``name``.

        ``materialise``: compute it now and keep the result on the executors (registry-sized
        intermediates the consent filter reads several times); otherwise every query naming it
        would recompute its whole lineage."""
        if isinstance(value, pa.Table):
            value = self.from_arrow(value)
        if materialise:
            value = value.localCheckpoint(eager=True)
        value.createOrReplaceTempView(name)

    def from_arrow(self, table: pa.Table) -> Any:
        ddl = arrow_to_spark_ddl(table.schema)
        if table.num_rows == 0:
            return self.spark.createDataFrame([], ddl)
        # unsigned and other types Spark cannot take from Arrow: cast to what it reads them as
        signed = pa.schema(
            [pa.field(f.name, _arrow_for_spark(f.type), f.nullable) for f in table.schema]
        )
        return self.spark.createDataFrame(table.cast(signed))

    def sql(self, query: str, params: Sequence[Any] | None = None, **inputs: Any) -> Any:
        if params:
            raise ValueError("SparkEngine.sql takes no positional parameters")
        for name, value in inputs.items():
            self.register(name, value)
        return self.spark.sql(spark_sql(query))

    def fetch(self, rel: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in rel.collect()]

    def arrow(self, rel: Any, schema: DatasetSchema) -> pa.Table:
        """``rel``'s rows as Arrow, each column cast back to the dataset's type (Spark widened
        unsigned integers and reads times as microseconds)."""
        table: pa.Table = rel.toArrow()
        arrays = []
        fields = []
        for name in table.column_names:
            want = schema.column(name).field() if name in schema else table.schema.field(name)
            arrays.append(table.column(name).cast(want.type))
            fields.append(pa.field(name, want.type))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def explain(self, rel: Any) -> str:
        """The physical plan (``PartitionFilters`` shows the pruning)."""
        plan: str = rel._jdf.queryExecution().executedPlan().toString()
        return plan

    def close(self) -> None:
        """Nothing per engine: the session is the process's and outlives it."""


def _arrow_for_spark(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    mapped = {
        pa.uint8(): pa.int16(),
        pa.uint16(): pa.int32(),
        pa.uint32(): pa.int64(),
        pa.uint64(): pa.decimal128(20, 0),
        pa.large_string(): pa.string(),
    }
    return mapped.get(t, t)


def _arrow_back(t: pa.DataType) -> pa.DataType:
    """The Arrow type DuckDB gives for a result column Spark gives as ``t``: whole decimals
    (Spark's sum of integers, unsigned 64-bit) are integers, others doubles; times are UTC."""
    if pa.types.is_decimal(t):
        return pa.int64() if t.scale == 0 and t.precision <= 20 else pa.float64()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    return t


class SparkRelation:
    """A query's result in a Spark sandbox: the subset of DuckDB's relation its holders use."""

    def __init__(self, engine: SparkSandboxEngine, df: Any) -> None:
        self._engine = engine
        self.df = df

    @property
    def columns(self) -> list[str]:
        return list(self.df.columns)

    def to_arrow_table(self) -> pa.Table:
        self._engine._job()
        table: pa.Table = self.df.toArrow()
        fields = [pa.field(f.name, _arrow_back(f.type)) for f in table.schema]
        return table.cast(pa.schema(fields))

    arrow = to_arrow_table

    def fetchall(self) -> list[tuple[Any, ...]]:
        t = self.to_arrow_table()
        cols = [c.to_pylist() for c in t.columns]
        return list(zip(*cols, strict=True)) if cols else []

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    def create(self, name: str) -> None:
        """Keep the result as the sandbox's table ``name`` (computed now, held by Spark)."""
        self._engine.keep(name, self.df)


class SparkSandboxEngine:
    """A grant's sandbox on Spark: the same methods as DuckDB's ``SandboxEngine``.

    What it holds are private temporary views (``mamori_sbx<N>_<name>``) over DataFrames that
    governance filled with granted rows only; the holder never gets the session. Each query is
    checked (:func:`~mamori.store.spark_guard.check`), its names mapped to this sandbox's views
    and only then given to Spark; ``CREATE TABLE … AS`` and ``DROP TABLE`` are carried out here
    (the result is computed and kept by Spark under a private name), never sent as DDL. ``jobs``
    counts the queries and results it ran on Spark.
    """

    _ids = itertools.count(1)
    name = "spark"
    #: Spark jobs run by every Spark sandbox of the process (what tests check ran on Spark)
    total_jobs = 0

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self._prefix = f"mamori_sbx{next(self._ids)}_"
        self._views: dict[str, str] = {}
        self._kept: dict[str, Any] = {}
        self.locked = False
        self.jobs = 0

    def _job(self) -> None:
        self.jobs += 1
        SparkSandboxEngine.total_jobs += 1

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._views)

    def lock(self) -> None:
        self.locked = True

    def keep(self, name: str, df: Any, *, lazy: bool = False) -> None:
        """``df`` computed once (``lazy``: each time it is read, a view) and readable as
        ``name`` (the holder's name for it)."""
        if name in self._views:
            raise ValueError(f"table {name} already exists in the sandbox")
        if not lazy:
            self._job()
            df = df.localCheckpoint(eager=True)
        view = self._prefix + re.sub(r"\W", "_", name)
        df.createOrReplaceTempView(view)
        self._views[name] = view
        self._kept[name] = df

    def _drop(self, name: str) -> None:
        view = self._views.pop(name)
        self._kept.pop(name, None)
        self.spark.catalog.dropTempView(view)

    def load_query(self, name: str, query: str) -> None:
        raise RuntimeError("a Spark sandbox is filled with DataFrames, not file queries")

    def load(self, name: str, data: Any) -> None:
        """Granted rows (a DataFrame of governance's, or Arrow) as table ``name``."""
        if isinstance(data, pa.Table):
            data = SparkEngine("", self.spark).from_arrow(data)
        self.keep(name, data)

    register_stream = load

    def register(self, name: str, table: pa.Table) -> None:
        """Arrow data the caller holds (lookup keys) as ``name``."""
        self.lock()
        if name in self._views:
            self._drop(name)
        self.load(name, table)

    def _checked(self, query: str) -> Any:
        self.lock()
        return check(query, self.names)

    def sql(self, query: str) -> SparkRelation:
        c = self._checked(query)
        if c.kind != "query":
            raise ValueError("query returned no relation (not a SELECT?)")
        return SparkRelation(self, self.spark.sql(to_spark(c.tree, self._views)))

    def execute(self, statement: str) -> None:
        c = self._checked(statement)
        if c.kind in {"create", "view"} and c.target is not None:
            df = self.spark.sql(to_spark(c.tree, self._views))
            self.keep(c.target, df, lazy=c.kind == "view")
        elif c.kind == "drop" and c.target is not None:
            if c.target in self._views:
                self._drop(c.target)
        else:
            self.spark.sql(to_spark(c.tree, self._views)).collect()

    def table(self, name: str) -> SparkRelation:
        return self.sql(f'SELECT * FROM "{name}"')

    def close(self) -> None:
        for name in list(self._views):
            self._drop(name)
