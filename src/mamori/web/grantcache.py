"""What the console keeps of its reads through governance, so a table of 100,000 rows is paged,
sorted and filtered without reading it all again for every click.

A page reads a dataset under each of its view's measures (:func:`gov.open <mamori.governance.
Governance.open>`: the catalogue checked, consent applied, the access audited). The rows a grant
returned are kept here, in this process, with the version of the dataset they were read at: the
number of audit entries so far that may change what a read of it returns (a write or purge of that
dataset; a consent change or registry load, which may change any read — see
:data:`mamori.web.auditindex.READ_ONLY_EVENTS` and ``AFFECT_EVERY_READ``). The audit log is the
change feed: once it shows any such entry, the rows are read again through governance. Until then
a page that uses them still writes its own ``access`` entry — same actor, measure, basis, dataset
and columns, ``"cached": true`` in the detail — so the log holds every page view's access as
before. Whatever the log shows, rows are never kept longer than ``[web] kept_read_max_s``: a purge
deletes before it writes its entry, and one that died in between would otherwise leave deleted
rows on screen. Nothing is written to disk; a restart forgets everything.

:mod:`mamori.web.warm` makes these reads ahead of the first page view (at start, and again when
the log shows a change), so nobody waits for a read of 100,000 rows. Governance is not made for
two threads at once (one DuckDB connection, one audit chain): whoever uses it from the console
holds :data:`GOVERNANCE` (the console's requests hold it in a middleware).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from mamori.governance import Governance
from mamori.web.auditindex import audit_index

__all__ = ["GOVERNANCE", "Kept", "is_fresh", "keep", "read"]


@dataclass(frozen=True)
class Kept:
    table: pa.Table
    consent_filtered: bool
    legal_basis: str
    columns: tuple[str, ...]
    version: int
    at: float  # time.monotonic() of the governance read


_KEPT: dict[tuple[str, str, str, tuple[str, ...] | None], Kept] = {}
_LOCK = threading.Lock()
GOVERNANCE = threading.RLock()
#: who reads ahead of the pages (:mod:`mamori.web.warm`)
WARM_ACTOR = "web:warm"


def _key(
    gov: Governance, measure: str, dataset: str, columns: Sequence[str] | None
) -> tuple[str, str, str, tuple[str, ...] | None]:
    return (str(gov.audit.path), measure, dataset, tuple(columns) if columns else None)


def is_fresh(
    gov: Governance,
    measure: str,
    dataset: str,
    columns: Sequence[str] | None,
    *,
    margin_s: float = 0.0,
) -> bool:
    """Whether a kept read is there, at the dataset's version, and not within ``margin_s`` of
    ``kept_read_max_s``."""
    with _LOCK:
        kept = _KEPT.get(_key(gov, measure, dataset, columns))
    return (
        kept is not None
        and kept.version == audit_index(gov).changes(dataset)
        and time.monotonic() - kept.at < gov.config.web.kept_read_max_s - margin_s
    )


def read(
    gov: Governance, measure: str, dataset: str, columns: Sequence[str] | None, actor: str
) -> Kept:
    """The rows of ``dataset`` ``measure`` may read (only its own rows where the dataset names a
    measure), through governance or kept from an earlier read at the same version."""
    key = _key(gov, measure, dataset, columns)
    version = audit_index(gov).changes(dataset)
    with _LOCK:
        kept = _KEPT.get(key)
    max_age = gov.config.web.kept_read_max_s
    if kept is not None and kept.version == version and time.monotonic() - kept.at < max_age:
        if actor == WARM_ACTOR:
            # the warmer deriving the pages' tables from its own read (audited when it was made)
            return kept
        gov.audit.append(
            actor=actor,
            event="access",
            measure=measure,
            legal_basis=kept.legal_basis,
            dataset=dataset,
            columns=kept.columns,
            detail={"cached": True, "rows": kept.table.num_rows},
        )
        return kept
    return keep(gov, measure, dataset, columns, actor, version)


def keep(
    gov: Governance,
    measure: str,
    dataset: str,
    columns: Sequence[str] | None,
    actor: str,
    version: int | None = None,
) -> Kept:
    """Read through governance (audited as ``actor``'s access) and keep the rows."""
    if version is None:
        version = audit_index(gov).changes(dataset)
    # only this measure's rows, filtered as the files are read (a table of 100,000 findings of
    # one measure costs the other measures' reads next to nothing)
    grant = gov.open(measure, dataset, columns, actor, own_rows=True)  # AccessRefused: audited
    try:
        t = grant.arrow()
    finally:
        grant.sandbox.close()
    if "measure" in t.column_names:
        t = t.filter(pc.equal(t.column("measure"), measure))
    kept = Kept(
        t, grant.consent_filtered, grant.legal_basis, grant.columns, version, time.monotonic()
    )
    with _LOCK:
        _KEPT[_key(gov, measure, dataset, columns)] = kept
    return kept
