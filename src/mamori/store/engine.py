"""The query engine interface, and its embedded DuckDB implementation.

Only governance talks to an engine. An engine scans a dataset (optionally a time window) into a
relation, runs SQL over relations and Arrow tables, and writes and lists partitions. A Spark
implementation (scale-out, :mod:`mamori.store.spark`) fits the same interface with DataFrames as
relations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from mamori.schemas import DatasetSchema
from mamori.store import parquet

__all__ = [
    "DuckDBEngine",
    "Engine",
    "Relation",
    "SandboxEngine",
    "SandboxRefused",
    "is_refusal",
]

Relation = duckdb.DuckDBPyRelation


class Engine(Protocol):
    root: Path

    def scan(
        self,
        schema: DatasetSchema,
        columns: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        equals: Mapping[str, str] | None = None,
    ) -> Any: ...

    def sql(self, query: str, params: Sequence[Any] | None = None, **inputs: Any) -> Any: ...

    def write(self, schema: DatasetSchema, table: pa.Table) -> list[Path]: ...

    def partitions(self, dataset: str) -> list[parquet.Partition]: ...


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBEngine:
    """Embedded engine: Parquet files read by DuckDB in this process."""

    def __init__(self, root: Path, threads: int | None = None) -> None:
        self.root = root
        self.con = duckdb.connect(config={"threads": threads} if threads else {})
        self.con.execute("SET TimeZone = 'UTC'")

    def close(self) -> None:
        self.con.close()

    def files(
        self, schema: DatasetSchema, start: datetime | None = None, end: datetime | None = None
    ) -> list[str]:
        """Parquet files of a dataset whose hour partition overlaps [start, end)."""
        out: list[str] = []
        for part in parquet.partitions(self.root, schema.name):
            if start is not None and part.end <= start:
                continue
            if end is not None and part.start >= end:
                continue
            out.extend(str(f) for f in part.files())
        return out

    def scan(
        self,
        schema: DatasetSchema,
        columns: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        equals: Mapping[str, str] | None = None,
    ) -> Relation:
        """The rows of ``schema`` from ``start`` to ``end`` and, with ``equals``, only those
        whose columns hold these values (a filter the Parquet reader pushes down: files whose
        statistics rule the value out are not read)."""
        cols = list(columns) if columns is not None else list(schema.column_names)
        for c in cols:
            schema.column(c)  # raises KeyError naming the column
        files = self.files(schema, start, end)
        if files:
            rel = self.con.read_parquet(files, union_by_name=not parquet.same_columns(files))
        else:
            rel = self.con.from_arrow(schema.arrow.empty_table())
        conds: list[str] = []
        ts = _quote(schema.time_column)
        if start is not None:
            conds.append(f"{ts} >= TIMESTAMPTZ '{start.isoformat()}'")
        if end is not None:
            conds.append(f"{ts} < TIMESTAMPTZ '{end.isoformat()}'")
        for col, value in (equals or {}).items():
            schema.column(col)  # raises KeyError naming the column
            literal = value.replace("'", "''")
            conds.append(f"{_quote(col)} = '{literal}'")
        if conds:
            rel = rel.filter(" AND ".join(conds))
        have = set(rel.columns)
        missing = [c for c in cols if c not in have]
        if not missing:
            return rel.select(", ".join(_quote(c) for c in cols))
        # a column added after every file read was written: nulls of its type, as union_by_name
        # gives for some of the files
        types = self.con.from_arrow(
            pa.schema([schema.column(c).field() for c in missing]).empty_table()
        ).types
        null = {c: f"CAST(NULL AS {t}) AS {_quote(c)}" for c, t in zip(missing, types, strict=True)}
        return rel.select(", ".join(null.get(c, _quote(c)) for c in cols))

    def sql(
        self, query: str, params: Sequence[Any] | None = None, **inputs: Relation | pa.Table
    ) -> Relation:
        """Run ``query`` with each keyword input visible under its name.

        Registered names stay until the same name is registered again: a lazy relation returned
        here keeps reading them.
        """
        for name, value in inputs.items():
            self.con.register(name, value)
        rel = self.con.sql(query, params=list(params) if params else None)
        if rel is None:
            raise ValueError("query returned no relation (not a SELECT?)")
        return rel

    def register(self, name: str, value: Relation | pa.Table, *, materialise: bool = False) -> None:
        """Make a relation or Arrow table visible to :meth:`sql` as ``name`` (``materialise``
        is for engines that recompute a lazy relation per query; DuckDB's planner shares it)."""
        self.con.register(name, value)

    def fetch(self, rel: Relation) -> list[tuple[Any, ...]]:
        return rel.fetchall()

    def stream(self, query: str) -> pa.RecordBatchReader:
        """``query``'s rows as an Arrow stream on a cursor of its own (a streaming result ends
        when its connection runs another statement). The reader keeps the cursor alive."""
        cursor = self.con.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        reader: pa.RecordBatchReader = cursor.sql(query).to_arrow_reader(1 << 17)
        return reader

    def write(self, schema: DatasetSchema, table: pa.Table) -> list[Path]:
        return parquet.write_partitioned(self.root, schema, table)

    def partitions(self, dataset: str) -> list[parquet.Partition]:
        return list(parquet.partitions(self.root, dataset))


class SandboxRefused(Exception):
    """A query a sandbox refused before running it (the Spark sandbox's allowlist); ``reason``
    says why, in the words of :func:`is_refusal`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}{': ' + detail if detail else ''}")


def is_refusal(exc: BaseException) -> str | None:
    """Why a sandbox query failed, when the failure is the sandbox doing its job (a file, an
    extension, a setting or a name outside it); ``None`` for an ordinary query error."""
    if isinstance(exc, SandboxRefused):
        return exc.reason
    if isinstance(exc, duckdb.PermissionException):
        return "reaches outside the grant (file, network or extension access is disabled)"
    if isinstance(exc, duckdb.CatalogException):
        return "names something that is not among the granted inputs"
    if isinstance(exc, duckdb.InvalidInputException) and "configuration has been locked" in str(
        exc
    ):
        return "changes the engine's configuration (it is locked)"
    return None


class SandboxEngine:
    """An in-memory DuckDB database that holds only what is loaded into it.

    Memory limit, spill directory, time zone and thread count are set when it is made. Before
    the first query of its holder (:meth:`lock`), external access (files, ``ATTACH``, ``COPY``,
    extensions, Python replacement scans) is switched off and the configuration locked, so no
    query run on it can read the store, change its limits or turn access back on. Until then only
    its owner (governance) runs statements on it: :meth:`load_query` copies granted rows straight
    from the store's files, the cheapest way in.
    """

    def __init__(
        self, *, memory_limit_mb: int | None, spill_dir: Path | None, threads: int | None = None
    ) -> None:
        config: dict[str, Any] = {}
        if memory_limit_mb is not None:
            config["memory_limit"] = f"{int(memory_limit_mb)}MB"
        if spill_dir is not None:
            config["temp_directory"] = str(spill_dir)
        if threads:
            config["threads"] = threads
        self.con = duckdb.connect(config=config)
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET python_enable_replacements = false")
        self.locked = False

    def lock(self) -> None:
        """Switch external access off and lock the configuration, for good."""
        if not self.locked:
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET lock_configuration = true")
            self.locked = True

    def load_query(self, name: str, query: str) -> None:
        """Table ``name`` from ``query`` over the store's files (only before :meth:`lock`)."""
        if self.locked:
            raise RuntimeError("the sandbox is locked: it reads no files any more")
        self.con.execute(f"CREATE TABLE {_quote(name)} AS {query}")

    def load(self, name: str, data: Relation | pa.Table | pa.RecordBatchReader) -> None:
        """Copy ``data`` (a relation of another engine, streamed through Arrow, or Arrow data)
        into table ``name``."""
        if isinstance(data, duckdb.DuckDBPyRelation):
            data = data.to_arrow_reader(1 << 17)
        staging = f"__load_{name}"
        self.con.register(staging, data)
        try:
            self.con.execute(f"CREATE TABLE {_quote(name)} AS SELECT * FROM {_quote(staging)}")
        finally:
            self.con.unregister(staging)

    def register_stream(self, name: str, data: pa.RecordBatchReader) -> None:
        """``name`` reads ``data`` as it streams: nothing is copied, and it can be read once."""
        self.con.register(name, data)

    def register(self, name: str, table: pa.Table) -> None:
        """Make Arrow data the caller already holds visible under ``name`` (no copy)."""
        self.lock()
        self.con.register(name, table)

    def sql(self, query: str) -> Relation:
        self.lock()
        rel = self.con.sql(query)
        if rel is None:
            raise ValueError("query returned no relation (not a SELECT?)")
        return rel

    def execute(self, query: str) -> None:
        self.lock()
        self.con.execute(query)

    def table(self, name: str) -> Relation:
        # a query, not con.table(): that one does not find views by a quoted name
        return self.sql(f"SELECT * FROM {_quote(name)}")

    def close(self) -> None:
        self.con.close()
