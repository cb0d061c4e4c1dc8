"""The only door to stored data.

Every read names a measure, a dataset, the columns, the actor and the legal basis relied on.
:meth:`Governance.open` checks the request against the measure catalogue, removes the rows of
subscribers who are not in for that measure *before* anything is returned (the allocation and
consent data are joined first, so nothing downstream can ever compare their traffic), writes one
audit record, and returns a :class:`Grant`: the permitted rows and columns, copied into a
:class:`~mamori.governance.sandbox.Sandbox` that holds nothing else and cannot reach files. The
holder queries it with :meth:`Grant.sql` or combines grants with :meth:`Governance.combine`; a query
that tries to reach anything else is refused and audited. A request outside the catalogue is
refused with a clear error, and the refusal is audited too. Writes go through the same door.

Exceptions::

    GovernanceError
     └── AccessRefused      (measure, dataset, columns, reason, audit_seq)
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mamori.addresses import in_networks
from mamori.config import IPNetwork, MamoriConfig
from mamori.governance.audit import AuditLog
from mamori.governance.consent import ConsentRegistry
from mamori.governance.measures import Catalogue, LegalBasis, Measure, catalogue
from mamori.governance.sandbox import Sandbox
from mamori.schemas import ALLOCATIONS, CONSENT, DatasetSchema, dataset
from mamori.store import DuckDBEngine, Relation
from mamori.store.parquet import SchemaMismatch, StreamWriter, conform, remove_stale_streams

__all__ = [
    "AccessRefused",
    "Governance",
    "GovernanceError",
    "GovernedStream",
    "Grant",
    "Sandbox",
]

_FOREVER = "TIMESTAMPTZ '9999-12-31 00:00:00+00'"
# Columns the consent filter needs to place a two-stage CGNAT allocation row.
_TWO_STAGE = ("addr", "port_start", "port_end", "start", "end", "inside_addr")
_ORIGIN = "TIMESTAMPTZ '0001-01-01 00:00:00+00'"


class GovernanceError(Exception):
    """Base of governance errors."""


class AccessRefused(GovernanceError, PermissionError):
    """A request the catalogue does not allow. It has been written to the audit log as refused."""

    def __init__(
        self,
        reason: str,
        *,
        measure: str,
        dataset: str,
        columns: Sequence[str],
        audit_seq: int,
        message: str | None = None,
    ) -> None:
        self.reason = reason
        self.measure = measure
        self.dataset = dataset
        self.columns = tuple(columns)
        self.audit_seq = audit_seq
        super().__init__(
            message
            or f"refused: {measure} may not access {dataset}({', '.join(columns)}): {reason} "
            f"[audit entry {audit_seq}]"
        )


@dataclass(frozen=True)
class Grant:
    """What an allowed request returns: the permitted rows and columns, as table ``name`` in a
    sandbox that holds only granted inputs (see :mod:`mamori.governance.sandbox`)."""

    name: str
    sandbox: Sandbox
    measure: str
    dataset: str
    columns: tuple[str, ...]
    legal_basis: str
    audit_seq: int
    consent_filtered: bool
    # Allocations read under consent: table of the (addr, port_start, port_end, start, end) of
    # the rows withheld, without any identity, so a lookup can tell "held by someone we may not
    # look up" from "held by nobody" and never names the wrong subscriber near a reassignment.
    withheld: str | None = None

    def sql(self, query: str) -> Relation:
        """Run ``query`` in the grant's sandbox; it names the granted rows as ``self.name``."""
        return self.sandbox.sql(query)

    def table(self) -> Relation:
        """The granted rows as a relation (in the sandbox)."""
        return self.sandbox.table(self.name)

    def arrow(self) -> pa.Table:
        return self.table().to_arrow_table()

    def withheld_arrow(self) -> pa.Table | None:
        return None if self.withheld is None else self.sandbox.table(self.withheld).to_arrow_table()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _in_pools(addrs: Sequence[str], pools: Iterable[IPNetwork]) -> list[str]:
    """The addresses (text) that fall inside any of ``pools``."""
    if not addrs:
        return []
    mask = in_networks(addrs, pools)
    return [a for a, inside in zip(addrs, mask.tolist(), strict=True) if inside]


class GovernedStream:
    """Returned by :meth:`Governance.open_stream`."""

    def __init__(
        self,
        gov: Governance,
        measure: str,
        schema: DatasetSchema,
        actor: str,
        basis: str,
        detail: dict[str, Any],
        max_open: int = 64,
    ) -> None:
        self._gov = gov
        self._writer = StreamWriter(gov.config.store, schema, max_open)
        self.measure = measure
        self.schema = schema
        self.actor = actor
        self.basis = basis
        self.detail = detail

    @property
    def pending_rows(self) -> int:
        return self._writer.rows

    @property
    def closed_early(self) -> int:
        """Files closed before their commit to keep at most ``max_open`` open."""
        return self._writer.closed_early

    def remove_stale(self) -> int:
        """Remove the hidden files that crashed writers of this dataset left behind (never a
        running writer's); returns how many."""
        return remove_stale_streams(self._gov.config.store, self.schema.name)

    def write(self, table: pa.Table) -> int:
        try:
            return self._writer.write(table)
        except SchemaMismatch as exc:
            raise self._gov._refuse(
                str(exc),
                measure=self.measure,
                ds=self.schema.name,
                columns=tuple(table.column_names),
                actor=self.actor,
                case=None,
                basis=self.basis,
                mode="write",
            ) from None

    def commit(self) -> tuple[list[Path], int]:
        files, rows = self._writer.commit()
        if files:
            try:
                self._gov.audit.append(
                    actor=self.actor,
                    event="write",
                    measure=self.measure,
                    legal_basis=self.basis,
                    dataset=self.schema.name,
                    columns=self.schema.column_names,
                    detail={**self.detail, "rows_stored": rows, "files": len(files)},
                )
            except OSError:
                # No stored row without its audit entry: the files go again (a full disk is
                # the usual cause); their rows count as not stored.
                for f in files:
                    f.unlink(missing_ok=True)
                self._writer.rows = rows
                raise
        return files, rows

    def abort(self) -> None:
        self._writer.abort()


class Governance:
    """Opens the store on behalf of a measure. One per process (or per request in the web app)."""

    def __init__(self, config: MamoriConfig, measures: Catalogue | None = None) -> None:
        self.config = config
        self.catalogue = measures or catalogue()
        self._engine = DuckDBEngine(config.store)
        # What governed reads scan and filter: the same DuckDB engine, or Spark (``engine =
        # "spark"``) for stores one machine cannot scan. Writes, consent changes and retention
        # stay on DuckDB over the local store; grants are DuckDB sandboxes either way.
        self._reader: Any = self._engine
        if config.engine == "spark":
            from mamori.store.spark import SparkEngine, session

            self._reader = SparkEngine(
                config.spark.store_url or config.store,
                session(config.spark.master, config.spark.conf),
            )
        self.audit = AuditLog.for_config(config)
        self.consent = ConsentRegistry(self._engine, self.audit, self.catalogue)
        self._names = itertools.count(1)
        # weak: a sandbox nobody holds any more (no grant, no relation) is freed with its data
        self._sandboxes: weakref.WeakSet[Sandbox] = weakref.WeakSet()

    # ---------------------------------------------------------------- checks

    def _refuse(
        self,
        reason: str,
        *,
        measure: str,
        ds: str,
        columns: Sequence[str],
        actor: str,
        case: str | None,
        basis: str | None,
        mode: str,
    ) -> AccessRefused:
        entry = self.audit.append(
            actor=actor,
            event="refused",
            measure=measure,
            legal_basis=basis,
            dataset=ds,
            columns=columns,
            case_id=case,
            detail={"mode": mode, "reason": reason},
        )
        return AccessRefused(
            reason, measure=measure, dataset=ds, columns=columns, audit_seq=entry.seq
        )

    def _check(
        self,
        measure_id: str,
        ds: str,
        columns: Sequence[str] | None,
        *,
        actor: str,
        case: str | None,
        basis: str | None,
        justification: str | None,
        mode: str,
    ) -> tuple[Measure, DatasetSchema, tuple[str, ...], LegalBasis]:
        cols = tuple(columns) if columns is not None else ()

        def refuse(reason: str) -> AccessRefused:
            return self._refuse(
                reason,
                measure=measure_id,
                ds=ds,
                columns=cols,
                actor=actor,
                case=case,
                basis=basis,
                mode=mode,
            )

        measure = self.catalogue.get(measure_id)
        if measure is None:
            raise refuse("unknown measure; measures are M1 … M14")
        if not self.config.measure_enabled(measure_id):
            raise refuse(f"{measure_id} is switched off in the configuration")
        try:
            schema = dataset(ds)
        except KeyError as exc:
            raise refuse(str(exc.args[0])) from None
        allowed = measure.may_read(ds) if mode == "read" else measure.may_write(ds)
        if not allowed:
            what = "read" if mode == "read" else "write"
            raise refuse(f"the catalogue does not let {measure_id} ({measure.name}) {what} {ds}")
        if columns is None:
            cols = allowed
        unknown = [c for c in cols if c not in schema]
        if unknown:
            raise refuse(f"{ds} has no column(s) {unknown}")
        outside = [c for c in cols if c not in allowed]
        if outside:
            raise refuse(f"column(s) {outside} are outside {measure_id}'s catalogue entry")
        if basis is None:
            chosen = measure.legal_bases[0]
        else:
            try:
                chosen = LegalBasis(basis)
            except ValueError:
                raise refuse(f"unknown legal basis {basis!r}") from None
        if chosen not in measure.legal_bases:
            allowed_bases = ", ".join(b.value for b in measure.legal_bases)
            raise refuse(f"{measure_id} cannot rest on {chosen.value}; it rests on {allowed_bases}")
        if justification is not None and not justification.strip():
            # whitespace is not a risk test: refused wherever one is given, needed or not
            raise refuse("a blank justification is none; say which risk test holds")
        if measure.consent != "none" and chosen is not LegalBasis.CONSENT and not justification:
            raise refuse(
                f"{measure_id} normally rests on consent; relying on {chosen.value} needs a "
                "recorded justification (the risk test that holds)"
            )
        return measure, schema, cols, chosen

    # ---------------------------------------------------------------- consent filter

    def _fresh(self, stem: str) -> str:
        return f"{stem}_{next(self._names)}"

    def _resolved_allocations(self, eng: Any) -> tuple[str, str]:
        """All allocations as (addr, port_start, port_end, start, end, subscriber_id), CGNAT rows
        that name an inside address resolved to whoever held that address meanwhile (one row per
        overlap, clipped to it)."""
        alloc = self._reg_on(
            eng,
            "alloc_raw",
            eng.scan(
                ALLOCATIONS,
                ["addr", "port_start", "port_end", "start", "end", "subscriber_id", "inside_addr"],
            ),
        )
        return alloc, self._reg_on(
            eng,
            "alloc",
            eng.sql(
                'SELECT addr, port_start, port_end, start, "end", subscriber_id '
                f"FROM {alloc} WHERE subscriber_id IS NOT NULL "
                "UNION ALL "
                "SELECT c.addr, c.port_start, c.port_end, greatest(c.start, i.start), "
                f'least(coalesce(c."end", {_FOREVER}), coalesce(i."end", {_FOREVER})), '
                "i.subscriber_id "
                f"FROM {alloc} c JOIN {alloc} i ON i.addr = c.inside_addr "
                "WHERE c.subscriber_id IS NULL AND i.subscriber_id IS NOT NULL "
                f'AND c.start < coalesce(i."end", {_FOREVER}) '
                f'AND i.start < coalesce(c."end", {_FOREVER})'
            ),
        )

    def _consent_filter(
        self,
        measure: Measure,
        schema: DatasetSchema,
        data: Any,
        out_cols: Sequence[str],
        eng: Any = None,
    ) -> tuple[Any, dict[str, Any], Any]:
        """``data`` without the rows of subscribers who are out of ``measure``; for allocations
        also the rows withheld (periods only, no identity)."""
        # the engine holding ``data``: the store's reader, or DuckDB for rows being written
        eng = eng if eng is not None else self._engine
        # measure.id matched the catalogue's ^M\d+$ pattern: safe to inline.
        consent_rows = eng.scan(CONSENT, ["subscriber_id", "changed", "measure", "state"]).filter(
            f"measure = '{measure.id}'"
        )
        cr = self._reg_on(eng, "consent", consent_rows)
        bs = self._reg_on(eng, "blocked_subs", eng.sql(self.consent.blocked_sql(measure, cr)))
        default_out = measure.consent_default is False
        detail: dict[str, Any] = {
            "consent_mode": measure.consent,
            "subscribers_out": int(
                eng.fetch(eng.sql(f"SELECT count(DISTINCT subscriber_id) FROM {bs}"))[0][0]
            ),
        }
        d = self._reg_on(eng, "data", data)
        sel = ", ".join(f"d.{_q(c)}" for c in out_cols)

        if schema.subscriber_column is not None:
            sc = _q(schema.subscriber_column)
            out_sql = f"SELECT subscriber_id FROM {bs} WHERE e >= {_FOREVER}"
            cond = f"d.{sc} NOT IN ({out_sql})"
            if default_out:
                cond += f" AND d.{sc} IN (SELECT subscriber_id FROM {cr})"
            if schema.name != ALLOCATIONS.name:
                return eng.sql(f"SELECT {sel} FROM {d} AS d WHERE {cond}"), detail, None
            # A CGNAT row naming an inside address goes with the subscribers who held that
            # address while the port block was allocated: withheld if any of them is out.
            inside = self._reg_on(
                eng,
                "inside",
                eng.scan(ALLOCATIONS, ["addr", "start", "end", "subscriber_id"]).filter(
                    "subscriber_id IS NOT NULL"
                ),
            )
            holder_out = f"i.subscriber_id IN ({out_sql})"
            if default_out:
                holder_out += f" OR i.subscriber_id NOT IN (SELECT subscriber_id FROM {cr})"
            two_stage = (
                f"(d.{sc} IS NULL AND d.inside_addr IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
                f"{inside} i WHERE i.addr = d.inside_addr "
                f'AND i.start < coalesce(d."end", {_FOREVER}) '
                f'AND d.start < coalesce(i."end", {_FOREVER}) AND ({holder_out})))'
            )
            keep = f"(({cond}) OR {two_stage})"
            withheld = eng.sql(
                f'SELECT d.addr, d.port_start, d.port_end, d.start, d."end" FROM {d} AS d '
                f"WHERE NOT coalesce({keep}, FALSE)"
            )
            return eng.sql(f"SELECT {sel} FROM {d} AS d WHERE {keep}"), detail, withheld

        raw, alloc = self._resolved_allocations(eng)
        blocked_parts = [
            f"SELECT a.addr, a.port_start, a.port_end, greatest(a.start, b.s) AS s, "
            f'least(coalesce(a."end", {_FOREVER}), b.e) AS e '
            f"FROM {alloc} a JOIN {bs} b USING (subscriber_id) "
            f'WHERE a.start < b.e AND b.s < coalesce(a."end", {_FOREVER})'
        ]
        if default_out:
            blocked_parts.append(
                f'SELECT addr, port_start, port_end, start AS s, coalesce("end", {_FOREVER}) AS e '
                f"FROM {alloc} WHERE subscriber_id NOT IN (SELECT subscriber_id FROM {cr})"
            )
        if self.config.governance.unattributed == "exclude" and self.config.address_plan:
            # An address in our subscriber pools that no allocation covers cannot be checked
            # against consent: its uncovered time is blocked like an opted-out subscriber's.
            # (Behind CGNAT, coverage is per address: a port outside every block while some
            # block is allocated counts as covered — no subscriber holds it.)
            addr_union = " UNION ".join(
                f"SELECT {_q(a)} AS addr FROM {d}" for a, _ in schema.subscriber_endpoints
            )
            distinct = [
                r[0] for r in eng.fetch(eng.sql(f"SELECT DISTINCT addr FROM ({addr_union})"))
            ]
            in_pool = _in_pools(distinct, self.config.pools())
            pool = self._reg_on(
                eng, "pool_addrs", pa.table({"addr": pa.array(in_pool, pa.string())})
            )
            covered = self._reg_on(
                eng,
                "covered",
                eng.sql(
                    f'SELECT addr, start AS s, coalesce("end", {_FOREVER}) AS e, '
                    'max(coalesce("end", ' + _FOREVER + ")) OVER (PARTITION BY addr ORDER BY start "
                    "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach "
                    f"FROM {alloc} WHERE addr IN (SELECT addr FROM {pool})"
                ),
            )
            blocked_parts += [
                # before the first allocation and between allocations
                f"SELECT addr, NULL::USMALLINT, NULL::USMALLINT, coalesce(reach, {_ORIGIN}), s "
                f"FROM {covered} WHERE reach IS NULL OR reach < s",
                # after the last allocation ended
                f"SELECT addr, NULL::USMALLINT, NULL::USMALLINT, max(e), {_FOREVER} "
                f"FROM {covered} GROUP BY addr HAVING max(e) < {_FOREVER}",
                # never allocated at all
                f"SELECT addr, NULL::USMALLINT, NULL::USMALLINT, {_ORIGIN}, {_FOREVER} "
                f"FROM {pool} WHERE addr NOT IN (SELECT addr FROM {covered})",
            ]
            # A CGNAT port block whose inside address nobody is known to have held meanwhile
            blocked_parts.append(
                f'SELECT c.addr, c.port_start, c.port_end, c.start, coalesce(c."end", {_FOREVER}) '
                f"FROM {raw} c WHERE c.subscriber_id IS NULL AND NOT EXISTS (SELECT 1 FROM {raw} i "
                "WHERE i.addr = c.inside_addr AND i.subscriber_id IS NOT NULL "
                f'AND c.start < coalesce(i."end", {_FOREVER}) '
                f'AND i.start < coalesce(c."end", {_FOREVER}))'
            )
            detail["pool_addresses_seen"] = len(in_pool)
        blocked = self._reg_on(eng, "blocked", eng.sql(" UNION ALL ".join(blocked_parts)))
        ts = f"d.{_q(schema.time_column)}"
        conds: list[str] = []
        for addr_col, port_col in schema.subscriber_endpoints:
            addr = f"d.{_q(addr_col)}"
            port = (
                f" AND (b.port_start IS NULL OR d.{_q(port_col)} BETWEEN b.port_start AND "
                "b.port_end)"
                if port_col
                else ""
            )
            conds.append(
                f"NOT EXISTS (SELECT 1 FROM {blocked} b WHERE b.addr = {addr} AND {ts} >= b.s "
                f"AND {ts} < b.e{port})"
            )
        where = " AND ".join(conds) if conds else "TRUE"
        return eng.sql(f"SELECT {sel} FROM {d} AS d WHERE {where}"), detail, None

    def _reg(self, stem: str, value: Relation | pa.Table) -> str:
        return self._reg_on(self._engine, stem, value)

    def _reg_on(self, eng: Any, stem: str, value: Any) -> str:
        name = self._fresh(stem)
        # everything but the rows being filtered is registry-sized: computed once (Spark)
        eng.register(name, value, materialise=stem != "data")
        return name

    # ---------------------------------------------------------------- the door

    def open(
        self,
        measure: str,
        dataset: str,
        columns: Sequence[str] | None,
        actor: str,
        case: str | None = None,
        *,
        basis: str | None = None,
        justification: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        sandbox: Sandbox | None = None,
        stream: bool = False,
        own_rows: bool = False,
    ) -> Grant:
        """Read ``columns`` of ``dataset`` for ``measure`` (``None``: every column it may read).

        With ``own_rows``, only the rows the dataset records as ``measure``'s (its ``measure``
        column), filtered as the files are read: a narrowing, never a widening, for a reader that
        wants no other measure's records (the console's tables).

        The rows are copied into ``sandbox`` (one made by :meth:`sandbox`, holding the other
        inputs the caller will combine them with), else into a new sandbox of their own. With
        ``stream``, nothing is copied: the rows stream into the one query that reads them (a
        large input read by a single query); reading the grant again is refused."""
        m, schema, cols, chosen = self._check(
            measure,
            dataset,
            columns,
            actor=actor,
            case=case,
            basis=basis,
            justification=justification,
            mode="read",
        )
        filtered = chosen is LegalBasis.CONSENT and schema.names_subscribers
        equals = {"measure": m.id} if own_rows and "measure" in schema.column_names else None
        if filtered:
            need = list(
                dict.fromkeys(
                    [
                        *cols,
                        schema.time_column,
                        *(c for pair in schema.subscriber_endpoints for c in pair if c),
                        *([schema.subscriber_column] if schema.subscriber_column else []),
                        *(_TWO_STAGE if schema.name == ALLOCATIONS.name else ()),
                    ]
                )
            )
            rel, detail, withheld = self._consent_filter(
                m,
                schema,
                self._reader.scan(schema, need, start, end, equals),
                cols,
                self._reader,
            )
        else:
            rel, detail, withheld = self._reader.scan(schema, cols, start, end, equals), {}, None
        if start or end:
            detail["window"] = [
                start.isoformat() if start else None,
                end.isoformat() if end else None,
            ]
        if justification:
            detail["justification"] = justification.strip()
        if equals:
            detail["own_rows"] = True
        box = sandbox if sandbox is not None else self.sandbox(label=f"{measure}-{dataset}")
        if box.closed or box not in self._sandboxes:
            raise GovernanceError("that sandbox is closed or was not made by this governance")
        name = self._fresh(f"{measure}_{dataset}".lower())
        # Rows that need no consent filter are a plain scan of the store's files: the sandbox
        # reads them itself (before its holder's first query locks it), which saves a copy.
        spark = self._reader is not self._engine
        direct = (
            None
            if spark or filtered or not self._engine.files(schema, start, end)
            else rel.sql_query()
        )
        with self._bounded(box.memory_limit_mb):
            if box.engine == "spark":
                # the granted rows stay in Spark: the sandbox keeps them as private views
                box._load(name, rel)
                if withheld is not None:
                    box._load(name + "_withheld", withheld)
            elif spark:
                # Spark computed the granted rows; they reach the sandbox as Arrow, in the
                # dataset's own types (Spark has no unsigned integers)
                box._load(name, self._reader.arrow(rel, schema))
                if withheld is not None:
                    box._load(name + "_withheld", self._reader.arrow(withheld, schema))
            else:
                if stream and direct is not None:
                    # its own cursor: a stream dies when its connection runs another statement
                    box._stream(name, self._engine.stream(direct))
                else:
                    box._load(name, rel, files_query=direct)
                if withheld is not None:
                    box._load(name + "_withheld", withheld)
        box.grants.append((measure, dataset))
        entry = self.audit.append(
            actor=actor,
            event="access",
            measure=measure,
            legal_basis=chosen.value,
            dataset=dataset,
            columns=cols,
            case_id=case,
            detail={**detail, "sandbox": box.label} if detail else {"sandbox": box.label},
        )
        return Grant(
            name,
            box,
            measure,
            dataset,
            cols,
            chosen.value,
            entry.seq,
            filtered,
            name + "_withheld" if withheld is not None else None,
        )

    def sandbox(
        self, memory_limit_mb: int | None = None, *, label: str = "sandbox", neutral: bool = False
    ) -> Sandbox:
        """A new, empty sandbox to open several grants into and query them together.

        ``neutral``: the holder's SQL is engine-neutral (DuckDB's dialect, only what the Spark
        sandbox's allowlist accepts), so with ``engine = "spark"`` the sandbox is on Spark and
        the detector's aggregations run there; otherwise (and always on DuckDB) it is a DuckDB
        database of its own.

        ``memory_limit_mb`` (default ``[governance] sandbox_memory_limit_mb``) bounds its memory;
        past it, work spills to a directory in the store that is removed when it closes. The
        holder cannot change either. Closed with the governance object, or earlier by the
        holder."""
        n = next(self._names)
        limit = memory_limit_mb or self.config.governance.sandbox_memory_limit_mb
        on_spark = neutral and self._reader is not self._engine
        # Spark spills to its own local directories
        spill = self.state_dir("spill") / f"sandbox-{n}" if limit and not on_spark else None
        if spill is not None:
            spill.mkdir(parents=True, exist_ok=True)
        if on_spark:
            from mamori.store.spark import SparkSandboxEngine
        box = Sandbox(
            f"{label}#{n}",
            memory_limit_mb=limit,
            spill_dir=spill,
            threads=None,
            refuse=lambda reason, message, query: self._refuse_query(box, reason, message, query),
            engine=SparkSandboxEngine(self._reader.spark) if on_spark else None,
        )
        self._sandboxes.add(box)
        return box

    def _refuse_query(self, box: Sandbox, reason: str, message: str, query: str) -> AccessRefused:
        """Audit a sandbox query that reached beyond its inputs. The entry keeps why, not the
        query or the engine's message: both may hold addresses (the holder sees the message)."""
        measures = sorted({m for m, _ in box.grants})
        datasets = sorted({d for _, d in box.grants})
        entry = self.audit.append(
            actor="sandbox",
            event="refused",
            measure=measures[0] if len(measures) == 1 else None,
            dataset=",".join(datasets) or None,
            detail={
                "mode": "query",
                "reason": reason,
                "sandbox": box.label,
                "measures": measures,
                # the query itself may hold addresses: its digest identifies it for the auditor
                "query_sha256": hashlib.sha256(query.encode()).hexdigest(),
            },
        )
        return AccessRefused(
            reason,
            measure=",".join(measures) or "-",
            dataset=",".join(datasets) or "-",
            columns=(),
            audit_seq=entry.seq,
            message=f"refused: a query in sandbox {box.label} reaches beyond its granted inputs: "
            f"it {reason} ({message}) [audit entry {entry.seq}]",
        )

    def combine(self, query: str, **inputs: Grant | pa.Table) -> Relation:
        """SQL over grants already given and Arrow tables the caller supplies (lookup keys, not
        stored data). ``query`` names each input as ``{name}``. It runs in the grants' sandbox
        (a new one holding copies of them when they live in different sandboxes), so it reaches
        nothing else; the grants were audited when given, and a query that tries to reach
        anything else is refused and audited."""
        grants = {k: v for k, v in inputs.items() if isinstance(v, Grant)}
        homes = {id(g.sandbox): g.sandbox for g in grants.values()}
        names: dict[str, str] = {}
        if len(homes) == 1:
            box = next(iter(homes.values()))
            names.update({k: g.name for k, g in grants.items()})
        else:
            box = self.sandbox(label="combine")
            for key, g in grants.items():
                names[key] = self._fresh(key)
                rows = g.table()
                box._load(
                    names[key], rows.to_arrow_table() if g.sandbox.engine == "spark" else rows
                )
                box.grants.append((g.measure, g.dataset))
        for key, value in inputs.items():
            if not isinstance(value, Grant):
                names[key] = box.register(self._fresh(key), value)
        return box.sql(query.format_map(names))

    @contextmanager
    def _bounded(self, megabytes: int | None) -> Iterator[None]:
        """Bound governance's own engine while it fills a sandbox; what does not fit spills to
        a directory in the store (never the working directory), emptied afterwards."""
        if megabytes is None:
            yield
            return
        spill = self.state_dir("spill")
        con = self._engine.con
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute(f"SET memory_limit = '{int(megabytes)}MB'")
        try:
            yield
        finally:
            con.execute("RESET memory_limit")
            for leftover in spill.iterdir():
                if leftover.is_file():
                    with contextlib.suppress(OSError):
                        leftover.unlink()

    def write(
        self,
        measure: str,
        dataset: str,
        table: pa.Table,
        actor: str,
        case: str | None = None,
        *,
        basis: str | None = None,
        justification: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> list[Path]:
        """Store ``table`` in ``dataset`` on behalf of ``measure``.

        Under consent, rows of subscribers who are out are dropped before anything is stored.
        """
        m, schema, cols, chosen = self._check(
            measure,
            dataset,
            table.column_names,
            actor=actor,
            case=case,
            basis=basis,
            justification=justification,
            mode="write",
        )
        rows_in = table.num_rows
        info: dict[str, Any] = {"rows_offered": rows_in, **(detail or {})}
        try:
            table = conform(schema, table)
            if chosen is LegalBasis.CONSENT and schema.names_subscribers:
                rel, fdetail, _ = self._consent_filter(
                    m, schema, self._engine.con.from_arrow(table), schema.column_names
                )
                table = rel.to_arrow_table()
                info.update(fdetail)
            files = self._engine.write(schema, table)
        except SchemaMismatch as exc:
            raise self._refuse(
                str(exc),
                measure=measure,
                ds=dataset,
                columns=cols,
                actor=actor,
                case=case,
                basis=chosen.value,
                mode="write",
            ) from None
        info["rows_stored"] = table.num_rows
        info["files"] = len(files)
        self.audit.append(
            actor=actor,
            event="write",
            measure=measure,
            legal_basis=chosen.value,
            dataset=dataset,
            columns=cols,
            case_id=case,
            detail=info,
        )
        return files

    def open_stream(
        self,
        measure: str,
        dataset: str,
        actor: str,
        *,
        detail: Mapping[str, Any] | None = None,
        max_open: int = 64,
    ) -> GovernedStream:
        """A writer for a continuous source (the flow collector): batches go into hidden files,
        :meth:`GovernedStream.commit` makes them visible and writes one audit entry. At most
        ``max_open`` hour partitions have a file open at once.

        Only for measures that do not rest on consent — a stream is not filtered per subscriber.
        """
        m, schema, cols, chosen = self._check(
            measure,
            dataset,
            None,
            actor=actor,
            case=None,
            basis=None,
            justification=None,
            mode="write",
        )
        if chosen is LegalBasis.CONSENT:
            raise self._refuse(
                "a stream cannot rest on consent (rows are not filtered per subscriber); use "
                "write()",
                measure=measure,
                ds=dataset,
                columns=cols,
                actor=actor,
                case=None,
                basis=chosen.value,
                mode="write",
            )
        if tuple(cols) != schema.column_names:
            raise self._refuse(
                f"{measure} may write only some columns of {dataset}; a stream writes them all",
                measure=measure,
                ds=dataset,
                columns=cols,
                actor=actor,
                case=None,
                basis=chosen.value,
                mode="write",
            )
        return GovernedStream(self, m.id, schema, actor, chosen.value, dict(detail or {}), max_open)

    def open_stream_read(
        self,
        measure: str,
        dataset: str,
        columns: Sequence[str],
        actor: str,
        *,
        justification: str | None = None,
    ) -> tuple[str, ...]:
        """Authorise ``measure`` to look at ``columns`` of a continuous source as it arrives (the
        collector's decoded batches, for streaming detection), with one audit entry now; the
        holder must keep to the columns returned. Like :meth:`open_stream`, only for measures
        that do not rest on consent — a stream is not filtered per subscriber."""
        _, _, cols, chosen = self._check(
            measure, dataset, columns, actor=actor, case=None, basis=None,
            justification=justification, mode="read",
        )  # fmt: skip
        if chosen is LegalBasis.CONSENT:
            raise self._refuse(
                "a stream cannot rest on consent (rows are not filtered per subscriber)",
                measure=measure, ds=dataset, columns=cols, actor=actor, case=None,
                basis=chosen.value, mode="read",
            )  # fmt: skip
        detail: dict[str, Any] = {"stream": True}
        if justification:
            detail["justification"] = justification
        self.audit.append(
            actor=actor, event="access", measure=measure, legal_basis=chosen.value,
            dataset=dataset, columns=cols, detail=detail,
        )  # fmt: skip
        return cols

    def write_registry(
        self, dataset: str, table: pa.Table, actor: str, *, source: str
    ) -> list[Path]:
        """Load subscriber records (allocations, the subscriber directory) from the ISP's systems."""
        cols = tuple(table.column_names)
        if dataset not in self.catalogue.registry:
            raise self._refuse(
                f"{dataset} is not a subscriber-record dataset; data of measures is written with "
                "write()",
                measure="-",
                ds=dataset,
                columns=cols,
                actor=actor,
                case=None,
                basis=None,
                mode="write",
            )
        schema = dataset_schema = self._schema(dataset)
        if dataset == ALLOCATIONS.name and table.num_rows:
            sub = table.column("subscriber_id") if "subscriber_id" in cols else None
            inside = table.column("inside_addr") if "inside_addr" in cols else None
            named = [pc.is_valid(c) for c in (sub, inside) if c is not None]
            one = pc.xor(*named) if len(named) == 2 else (named[0] if named else None)
            bad = table.num_rows if one is None else table.num_rows - pc.sum(one).as_py()
            if bad:
                raise self._refuse(
                    f"{bad} allocation row(s) name neither a subscriber nor a CGNAT inside address "
                    "(or both); every row names exactly one",
                    measure="-",
                    ds=dataset,
                    columns=cols,
                    actor=actor,
                    case=None,
                    basis=None,
                    mode="write",
                )
        if "source" in schema and "source" not in cols:
            table = table.append_column("source", pa.array([source] * table.num_rows, pa.string()))
        try:
            files = self._engine.write(schema, table)
        except SchemaMismatch as exc:
            raise self._refuse(
                str(exc),
                measure="-",
                ds=dataset,
                columns=cols,
                actor=actor,
                case=None,
                basis=None,
                mode="write",
            ) from None
        self.audit.append(
            actor=actor,
            event="write",
            dataset=dataset,
            columns=dataset_schema.column_names,
            detail={"rows_stored": table.num_rows, "files": len(files), "source": source},
        )
        return files

    def state_dir(self, component: str) -> Path:
        """A directory in the store for a component's operational state (collector templates,
        counters) — never communications data, which only goes through :meth:`write`."""
        if not component.isidentifier():
            raise ValueError(f"bad component name {component!r}")
        path = self.config.store / "_state" / component
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _schema(name: str) -> DatasetSchema:
        return dataset(name)

    def close(self) -> None:
        for box in list(self._sandboxes):
            box.close()
        self._sandboxes.clear()
        self._engine.close()

    def __enter__(self) -> Governance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
