"""The query engine interface, and its embedded DuckDB implementation.

Only governance talks to an engine. An engine scans a dataset (optionally a time window) into a
relation, runs SQL over relations and Arrow tables, and writes and lists partitions. A Spark
implementation (scale-out) fits the same interface with DataFrames as relations.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from mamori.schemas import DatasetSchema
from mamori.store import parquet

__all__ = ["DuckDBEngine", "Engine", "Relation"]

Relation = duckdb.DuckDBPyRelation


class Engine(Protocol):
    root: Path

    def scan(
        self,
        schema: DatasetSchema,
        columns: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
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
    ) -> Relation:
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

    def write(self, schema: DatasetSchema, table: pa.Table) -> list[Path]:
        return parquet.write_partitioned(self.root, schema, table)

    def partitions(self, dataset: str) -> list[parquet.Partition]:
        return list(parquet.partitions(self.root, dataset))
