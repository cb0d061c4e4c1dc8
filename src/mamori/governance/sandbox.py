"""Where a grant's holder runs its queries: a sandbox that holds only the granted inputs.

A :class:`Sandbox` is an in-memory DuckDB database of its own. Governance copies into it the rows
and columns a grant allows (consent already applied) and nothing else; the store, the consent
registry, the allocations and every other grant stay on governance's private engine. External
access is switched off and the configuration locked before the holder gets the sandbox, so
``read_parquet``, ``glob``, ``ATTACH``, ``COPY``, ``SET``, ``INSTALL``/``LOAD`` and paths in
string literals fail however the query is written (comments, ``chr()``, catalogue lookups). A
query that fails that way is a refusal: it is written to the audit log and raised as
:class:`~mamori.governance.access.AccessRefused`.

With ``engine = "spark"``, a sandbox made for engine-neutral SQL (``Governance.sandbox(...,
neutral=True)``) lives on Spark instead (:class:`~mamori.store.spark.SparkSandboxEngine`): the
granted rows stay in Spark as private views, and each query the holder writes (in DuckDB's
dialect) is checked against an allowlist before it is translated and run, so the same refusals
hold there; :attr:`Sandbox.engine` says which engine a sandbox is on.

Memory limits come from configuration: governance sets the limit and a spill directory in the
store when it makes the sandbox (the holder cannot change them), and empties the spill directory
when the sandbox closes.
"""

from __future__ import annotations

import re
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from mamori.store import Relation, SandboxEngine, is_refusal

__all__ = ["Sandbox"]

# (reason, engine's message, query) -> the exception to raise; governance supplies it so the
# refusal is audited
Refuse = Callable[[str, str, str], Exception]


class Sandbox:
    """A database holding only granted inputs (see the module docstring).

    Made by :meth:`Governance.sandbox` (several grants a detector combines) or by
    :meth:`Governance.open` (one grant on its own). Names in it are the grants' ``name``s and
    whatever the holder creates from them.
    """

    def __init__(
        self,
        label: str,
        *,
        memory_limit_mb: int | None,
        spill_dir: Path | None,
        threads: int | None,
        refuse: Refuse,
        engine: Any = None,
    ) -> None:
        self.label = label
        self.memory_limit_mb = memory_limit_mb
        self._spill = spill_dir
        self._refuse = refuse
        # ``engine``: a Spark sandbox engine governance made; else an in-memory DuckDB database
        self._engine = engine or SandboxEngine(
            memory_limit_mb=memory_limit_mb, spill_dir=spill_dir, threads=threads
        )
        #: "duckdb" or "spark": where the holder's queries run
        self.engine: str = "spark" if engine is not None else "duckdb"
        self.names: list[str] = []
        # (measure, dataset) of every grant loaded: what a refusal here is audited under
        self.grants: list[tuple[str, str]] = []
        # streamed grants (read once): name -> already read
        self._once: dict[str, bool] = {}
        self.closed = False
        # the spill directory goes when the sandbox does, closed or merely forgotten
        self._cleanup = (
            weakref.finalize(self, shutil.rmtree, spill_dir, True)
            if spill_dir is not None
            else None
        )

    # -------------------------------------------------------------- used by governance only

    def _stream(self, name: str, data: Any) -> None:
        """Make granted rows readable once, as they stream from governance (no copy kept)."""
        self._engine.register_stream(name, data)
        self._once[name] = False
        self.names.append(name)

    def _load(self, name: str, data: Any, *, files_query: str | None = None) -> None:
        """Copy granted rows in: straight from the store's files when ``files_query`` is given
        and the holder has not queried yet (the sandbox still reads files), else through Arrow."""
        if files_query is not None and not self._engine.locked:
            self._engine.load_query(name, files_query)
        else:
            self._engine.load(name, data)
        self.names.append(name)

    # -------------------------------------------------------------- the holder's side

    def _guard(self, query: str, run: Callable[[], Any]) -> Any:
        if self.closed:
            raise ValueError(f"sandbox {self.label} is closed")
        for name, read in self._once.items():
            # a stream read a second time is silently empty: refuse instead of answering wrong
            uses = len(re.findall(rf"\b{re.escape(name)}\b", query))
            if uses and (read or uses > 1):
                raise ValueError(
                    f"{name} was granted as a stream: it can be read once, by one reference"
                )
            if uses:
                self._once[name] = True
        try:
            return run()
        except Exception as exc:  # classified below; anything else is re-raised as it was
            reason = is_refusal(exc)
            if reason is None:
                raise
            raise self._refuse(reason, str(exc).splitlines()[0][:300], query) from None

    @property
    def spark_jobs(self) -> int:
        """Queries and results this sandbox ran on Spark (0 on DuckDB)."""
        return int(getattr(self._engine, "jobs", 0))

    def sql(self, query: str) -> Relation:
        """Run a query over the granted inputs (and tables made from them)."""
        rel: Relation = self._guard(query, lambda: self._engine.sql(query))
        return rel

    def execute(self, statement: str) -> None:
        """Run a statement that stays inside the sandbox (``CREATE TABLE … AS``, ``DROP``)."""
        self._guard(statement, lambda: self._engine.execute(statement))

    def register(self, name: str, table: pa.Table) -> str:
        """Make Arrow data the caller holds (lookup keys, never stored data) visible as ``name``."""
        self._engine.register(name, table)
        return name

    def table(self, name: str) -> Relation:
        rel: Relation = self._guard(name, lambda: self._engine.table(name))
        return rel

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._engine.close()
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
