"""C&C lists from peers into reputation data: files (STIX, MISP, CSV) and TAXII collections.

Every entry is written as a ``reputation`` row (category ``c2``) with the peer's name as ``source``
and its confidence, through ``gov.write("M3", "reputation", …)``. Bad entries are counted and
reported with their position; the good ones around them are loaded. That includes entries past
``input_limits``: JSON nesting is cut before it is parsed (files, and each page a peer's TAXII
server answers), so one object nested 100,000 deep costs that object, not the file or the poll.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import requests
from taxii2client.common import TokenAuth  # type: ignore[import-untyped]
from taxii2client.exceptions import TAXIIServiceException  # type: ignore[import-untyped]
from taxii2client.v21 import Collection, as_pages  # type: ignore[import-untyped]

from mamori.bounds import as_utf8, load_json, prune_deep
from mamori.config import InputLimitsConfig
from mamori.governance import Governance
from mamori.share.c2list import LIST_SCHEMA, ShareError
from mamori.share.csvio import csv_to_list
from mamori.share.misp import event_to_list
from mamori.share.stix import ParseReport, objects_to_list
from mamori.share.trust import TrustStore

__all__ = ["Format", "ImportResult", "import_file", "list_to_reputation", "load_list", "poll_peer"]

log = logging.getLogger(__name__)

Format = Literal["stix", "misp", "csv"]
_PAGE = 500


@dataclass
class ImportResult:
    source: str
    loaded: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    objects_received: int = 0


def list_to_reputation(table: pa.Table, source: str, loaded: datetime | None = None) -> pa.Table:
    """Reputation rows (schemas.REPUTATION) for C&C list rows (:data:`LIST_SCHEMA`)."""
    n = table.num_rows
    when = pa.array([loaded or datetime.now(UTC)] * n, pa.timestamp("ms", tz="UTC"))
    kind = pc.if_else(pc.is_valid(table["port"]), "ip-port", "ip")
    return pa.table(
        {
            "loaded": when,
            "indicator_type": kind,
            "ip": table["ip"],
            "port": table["port"],
            "protocol": table["protocol"],
            "category": pa.array(["c2"] * n, pa.string()),
            "confidence": table["confidence"],
            "first_seen": table["first_seen"],
            "last_seen": table["last_seen"],
            "source": pa.array([source] * n, pa.string()),
        }
    )


def load_list(gov: Governance, table: pa.Table, actor: str, source: str) -> int:
    if table.num_rows == 0:
        return 0
    gov.write(
        "M3", "reputation", list_to_reputation(table, source), actor, detail={"source": source}
    )
    return int(table.num_rows)


def _parse(fmt: Format, data: bytes, report: ParseReport, limits: InputLimitsConfig) -> pa.Table:
    if fmt == "csv":
        return csv_to_list(data, report)
    try:
        doc, cut = load_json(data, limits.max_json_depth)
    except ValueError as exc:
        report.skip("file", f"not JSON: {exc}")
        return LIST_SCHEMA.empty_table()
    if fmt == "misp":
        return event_to_list(doc, report, limits, deep=bool(cut))
    objects = doc.get("objects") if isinstance(doc, dict) else doc
    if not isinstance(objects, list):
        report.skip("file", "neither a STIX bundle nor a list of STIX objects")
        return LIST_SCHEMA.empty_table()
    return objects_to_list(objects, report, limits, deep=bool(cut))


def import_file(gov: Governance, path: Path, fmt: Format, actor: str, source: str) -> ImportResult:
    """Load a C&C list file (our own export formats, or STIX/MISP from others) into reputation."""
    report = ParseReport()
    table = _parse(fmt, path.read_bytes(), report, gov.config.input_limits)
    loaded = load_list(gov, table, actor, source)
    return ImportResult(source, loaded, report.skipped, report.problems)


def poll_peer(gov: Governance, name: str, actor: str) -> ImportResult:
    """Fetch what peer ``name``'s TAXII collection added since the last poll and load it.

    The position reached (the server's ``X-TAXII-Date-Added-Last``) is kept per peer, so the next
    poll asks only for newer objects. It only advances after the load succeeded.
    """
    trust = TrustStore.of(gov)
    remote = trust.remote(name)
    collection = Collection(remote.url, auth=TokenAuth(remote.key))
    limits = gov.config.input_limits
    last_added: list[str] = []
    cut: list[int] = []

    def note(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        stamp = resp.headers.get("X-TAXII-Date-Added-Last")
        if stamp:
            last_added.append(stamp)
        if resp.content:
            # the client parses the body with json.loads: cut its nesting first
            try:
                pruned, lines = prune_deep(as_utf8(resp.content), limits.max_json_depth)
            except ValueError:  # not text: the client's own parse reports it
                return
            if lines:
                cut.extend(lines)
                resp._content = pruned
                resp.encoding = "utf-8"

    # taxii2-client returns only the JSON body; the server's clock position is in a header, so a
    # requests response hook on the client's session reads it (and bounds the body's nesting).
    collection._conn.session.hooks["response"].append(note)
    objects: list[Any] = []
    try:
        for page in as_pages(
            collection.get_objects, per_request=_PAGE, added_after=remote.added_after
        ):
            objects.extend(page.get("objects", []))
    except (TAXIIServiceException, requests.RequestException) as exc:
        raise ShareError(f"polling {name} at {remote.url} failed: {exc}") from exc
    finally:
        collection.close()
    report = ParseReport()
    table = objects_to_list(objects, report, limits, deep=bool(cut))
    loaded = load_list(gov, table, actor, name)
    if last_added:
        trust.advance(name, max(last_added))
    gov.audit.append(
        actor=actor,
        event="share-poll",
        measure="M3",
        dataset="reputation",
        detail={
            "peer": name,
            "objects": len(objects),
            "loaded": loaded,
            "skipped": report.skipped,
            "added_after": remote.added_after,
        },
    )
    return ImportResult(name, loaded, report.skipped, report.problems, len(objects))
