"""Storage: partitioned Parquet and the query engines. Only ``mamori.governance`` imports this."""

from mamori.store.engine import DuckDBEngine, Engine, Relation, SandboxEngine, is_refusal
from mamori.store.parquet import Partition, SchemaMismatch

__all__ = [
    "DuckDBEngine",
    "Engine",
    "Partition",
    "Relation",
    "SandboxEngine",
    "SchemaMismatch",
    "is_refusal",
]
