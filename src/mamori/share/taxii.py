"""A TAXII 2.1 server for the C&C list, and the collection store behind it.

:func:`create_taxii_app` returns a FastAPI app (mountable, e.g. under ``/taxii2/``) with:

- ``GET /``                                     discovery
- ``GET /api/``                                 API root
- ``GET /api/collections/``                     the collections this peer may read or write
- ``GET /api/collections/{id}/``                one collection
- ``GET /api/collections/{id}/objects/``        objects: ``added_after``, ``limit``, ``next``,
  ``match[id]``, ``match[type]``, ``match[version]`` (``last`` — the default — or ``all``)
- ``GET /api/collections/{id}/objects/{oid}/``  one object
- ``GET /api/collections/{id}/manifest/``       the manifest, with the same filters
- ``POST /api/collections/{id}/objects/``       add objects (collections the peer may write)

Every request needs a peer's API key (HTTP Basic with the key as password, or
``Authorization: Bearer|Token <key>``), checked against :class:`~mamori.share.trust.TrustStore`
afresh each time. A peer whose trust group may not read (or write) a collection gets 403 and an
error body, nothing more. Every read and write, and every refusal of a peer, is audited: which
peer, which collection, how many objects and their ids. Requests without a valid key are counted
and audited as one summary per ``share.refusal_summary_s`` (:mod:`.quota`).

Hostile or careless peers (``[share]`` and ``[input_limits]`` settings):

- each peer has a request rate and a daily quota of posted objects and bytes: 429 with
  ``Retry-After`` past one, the first refusal per window audited;
- a body larger than ``max_content_length`` is refused (413) from its ``Content-Length`` before
  it is read, or, when chunked, as soon as the bytes read pass it;
- nesting deeper than ``max_json_depth`` is cut before parsing; the object that held it, a STIX
  pattern past its bounds, and an object ``stix2-validator`` finds invalid are each refused as a
  failure in the status, and the other objects are added;
- an envelope in which any object names an address in this ISP's subscriber pools, in any field
  (:mod:`.objectguard`), is refused as a whole (422) and the refusal audited: a peer that sends
  one is misconfigured, and the objects around it (relationships, sightings) point at it. On the
  way out the same check withholds any stored object that names one (stored before the check, or
  before the address plan grew), in every collection.

Collections live in ``gov.state_dir("share")/collections/<alias>.jsonl``: one line per object
version, ``{"date_added": …, "object": …}``, appended under a lock with strictly increasing
``date_added``. :func:`publish` puts the current C&C list into the ``c2`` collection after the
export guard; an object is added again only when its ``modified`` changed.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import fcntl
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from stix2validator import ValidationOptions, validate_instance  # type: ignore[import-untyped]

from mamori.bounds import check_pattern, deep_line, deep_message, load_json
from mamori.config import InputLimitsConfig
from mamori.governance import Governance
from mamori.share.c2list import guard, reviewed_list
from mamori.share.objectguard import subscriber_address
from mamori.share.quota import Limited, PeerQuota, RefusalSummary, source_prefix
from mamori.share.stix import indicator_id, list_to_objects, revoked_objects
from mamori.share.trust import COLLECTIONS, Peer, TrustStore

__all__ = [
    "MEDIA_TYPE",
    "CollectionStore",
    "PublishResult",
    "collection_id",
    "create_taxii_app",
    "publish",
]

MEDIA_TYPE = "application/taxii+json;version=2.1"
_STIX_MEDIA = "application/stix+json;version=2.1"
_DEFAULT_LIMIT = 100
_MAX_LIMIT = 1000
_VALIDATION = ValidationOptions(version="2.1")

log = logging.getLogger(__name__)
_NS = uuid.UUID("0c7b8a31-2f56-4b7e-8d1e-6d616d6f7269")


def collection_id(isp_name: str, alias: str) -> str:
    return str(uuid.uuid5(_NS, f"{isp_name}/{alias}"))


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_stamp(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class CollectionStore:
    """Append-only store of STIX object versions, one JSON-lines file per collection."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory / "collections"
        # Parsed entries per (collection, all_versions), valid while the file is unchanged
        # (inode, size, mtime): a page request then costs a bisect, not a parse of the file.
        self._cache: dict[tuple[str, bool], tuple[tuple[int, int, int], Entries]] = {}
        self._cache_lock = threading.Lock()

    @classmethod
    def of(cls, gov: Governance) -> CollectionStore:
        return cls(gov.state_dir("share"))

    def _path(self, alias: str) -> Path:
        if alias not in COLLECTIONS:
            raise KeyError(alias)
        return self.dir / f"{alias}.jsonl"

    def _lines(self, alias: str) -> list[dict[str, Any]]:
        try:
            text = self._path(alias).read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line]

    def add(self, alias: str, objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append the object versions not stored yet; returns their ``{id, version, date_added}``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(alias)
        with (self.dir / f"{alias}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            lines = self.entries(alias, all_versions=True).items
            have = {(e["object"]["id"], _version(e["object"])) for e in lines}
            last = _parse_stamp(lines[-1]["date_added"]) if lines else None
            added: list[dict[str, Any]] = []
            with path.open("a") as f:
                for obj in objects:
                    key = (obj["id"], _version(obj))
                    if key in have:
                        continue
                    have.add(key)
                    now = datetime.now(UTC)
                    if last is not None and now <= last:
                        now = last + timedelta(microseconds=1)
                    last = now
                    stamp = _stamp(now)
                    f.write(json.dumps({"date_added": stamp, "object": obj}, sort_keys=True))
                    f.write("\n")
                    added.append({"id": obj["id"], "version": key[1], "date_added": stamp})
        return added

    def entries(self, alias: str, *, all_versions: bool = False) -> Entries:
        """Stored entries in ``date_added`` order; by default only the latest version per id."""
        try:
            st = self._path(alias).stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            return Entries([], [])
        with self._cache_lock:
            hit = self._cache.get((alias, all_versions))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        lines = self._lines(alias)
        if not all_versions:
            latest: dict[str, dict[str, Any]] = {}
            for e in lines:
                cur = latest.get(e["object"]["id"])
                if cur is None or _version(e["object"]) >= _version(cur["object"]):
                    latest[e["object"]["id"]] = e
            lines = list(latest.values())
        lines.sort(key=lambda e: (e["date_added"], e["object"]["id"]))
        result = Entries(lines, [(e["date_added"], e["object"]["id"]) for e in lines])
        with self._cache_lock:
            self._cache[(alias, all_versions)] = (stamp, result)
        return result


@dataclass(frozen=True)
class Entries:
    items: list[dict[str, Any]]
    keys: list[tuple[str, str]]  # (date_added, id) of each item, ascending


def _version(obj: Mapping[str, Any]) -> str:
    # Objects without `modified` (marking definitions) are versioned by `created`.
    return str(obj.get("modified") or obj.get("created") or "")


@dataclass(frozen=True)
class PublishResult:
    endpoints: int
    objects_added: int
    collection: str


def publish(
    gov: Governance,
    actor: str,
    *,
    tlp: str = "amber+strict",
    min_score: float = 0.0,
    include_candidates: bool = False,
) -> PublishResult:
    """Put the reviewed C&C list into the ``c2`` collection (after the export guard): confirmed
    and corroborated endpoints, candidates only with ``include_candidates`` (audited)."""
    reviewed = reviewed_list(gov, actor, min_score=min_score,
                             include_candidates=include_candidates)  # fmt: skip
    table = reviewed.table
    guard(gov, table, actor, what="taxii-publish")
    objects = list_to_objects(table, gov.config.isp_name, tlp)
    store = CollectionStore.of(gov)
    added = store.add("c2", objects)
    # endpoints whose share was ended or expired: a revoked version of their indicator, once
    gone = reviewed.withdrawn
    guard(gov, gone, actor, what="taxii-publish-withdrawals")
    revoked = store.add("c2", revoked_objects(gone, gov.config.isp_name, tlp))
    # which endpoints got a new indicator version, by review state (the transparency report)
    new_ids = {a["id"] for a in added}
    shared = {k: 0 for k in ("confirmed", "corroborated", "candidate")}
    for r, state in zip(table.select(["ip", "port", "protocol"]).to_pylist(), reviewed.states,
                        strict=True):  # fmt: skip
        if indicator_id(r["ip"], r["port"], r["protocol"]) in new_ids:
            shared[state] = shared.get(state, 0) + 1
    gov.audit.append(
        actor=actor,
        event="share-publish",
        measure="M3",
        dataset="findings",
        columns=table.column_names,
        detail={
            "collection": "c2",
            "endpoints": table.num_rows,
            "objects_added": len(added),
            "tlp": tlp,
            "include_candidates": include_candidates,
            "shared": shared,
            "held_back": reviewed.held_back,
            "withdrawn": len(revoked),
        },
    )
    return PublishResult(table.num_rows, len(added), "c2")


# ------------------------------------------------------------------------------ the server


class _Refusal(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        description: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.description = description
        self.headers = dict(headers or {})


def _json(
    body: Mapping[str, Any],
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    media: str = MEDIA_TYPE,
) -> Response:
    return Response(
        json.dumps(body), status_code=status, media_type=media, headers=dict(headers or {})
    )


def _key_from(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    scheme = scheme.lower()
    if scheme in ("bearer", "token"):
        return value.strip() or None
    if scheme == "basic":
        try:
            _, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or None
    return None


def _acceptable(request: Request, accept_stix: bool = False) -> bool:
    accept = request.headers.get("accept", "").replace(" ", "").lower()
    if not accept or "*/*" in accept or "application/*" in accept:
        return True
    return "application/taxii+json" in accept or (accept_stix and "application/stix+json" in accept)


def _page_token(entry: Mapping[str, Any]) -> str:
    raw = f"{entry['date_added']}|{entry['object']['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after_token(token: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _Refusal(400, "bad next token") from None
    stamp, sep, oid = raw.partition("|")
    if not sep:
        raise _Refusal(400, "bad next token")
    return stamp, oid


def _select(
    request: Request, entries: Entries, object_id: str | None = None
) -> tuple[list[dict[str, Any]], bool]:
    q = request.query_params
    start = 0
    if "added_after" in q:
        try:
            after = _stamp(_parse_stamp(q["added_after"]))
        except ValueError:
            raise _Refusal(400, "bad added_after", "use an RFC 3339 timestamp") from None
        start = bisect.bisect_right(entries.keys, (after, "\U0010ffff"))
    if "next" in q:
        start = max(start, bisect.bisect_right(entries.keys, _after_token(q["next"])))
    try:
        limit = int(q.get("limit", _DEFAULT_LIMIT))
    except ValueError:
        raise _Refusal(400, "bad limit") from None
    limit = max(1, min(limit, _MAX_LIMIT))
    wanted: list[tuple[str, set[str]]] = [
        (key, set(q[field].split(",")))
        for field, key in (("match[id]", "id"), ("match[type]", "type"))
        if field in q
    ]
    if object_id is not None:
        wanted.append(("id", {object_id}))
    page: list[dict[str, Any]] = []
    for e in itertools.islice(entries.items, start, None):
        if all(e["object"].get(key) in values for key, values in wanted):
            if len(page) == limit:
                return page, True
            page.append(e)
    return page, False


def create_taxii_app(
    gov: Governance, *, title: str | None = None, clock: Callable[[], float] = time.time
) -> FastAPI:
    """The TAXII 2.1 server over ``gov``'s collections, peers and trust groups. ``clock``
    (seconds since the epoch) times quotas and summaries; tests pass their own."""
    isp = gov.config.isp_name
    cfg, limits = gov.config.share, gov.config.input_limits
    pools = gov.config.pools()
    ids = {collection_id(isp, alias): alias for alias in COLLECTIONS}
    store = CollectionStore.of(gov)
    quota = PeerQuota(cfg, gov.state_dir("share"), clock)

    def audit(peer: str, event: str, **detail: Any) -> None:
        gov.audit.append(actor=f"taxii:{peer}", event=event, measure="M3", detail=detail)

    summary = RefusalSummary(
        cfg.refusal_summary_s,
        lambda detail: audit("summary", "refused-summary", **detail),
        clock,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        summary.flush()

    app = FastAPI(
        title=title or f"{isp} TAXII 2.1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    # the web console mounts this app (sub-apps get no lifespan): it flushes through here
    app.state.refusal_summary = summary

    def over_limit(peer: Peer, exc: Limited, request: Request) -> _Refusal:
        if exc.first:
            audit(
                peer.name,
                "refused",
                path=request.url.path,
                limit=exc.limit,
                allowed=exc.allowed,
                retry_after=exc.retry_after,
                reason=f"{exc.limit} limit reached; further refusals in this window are counted "
                "in the refused-summary",
            )
        else:
            summary.limited(peer.name, exc.limit)
        return _Refusal(
            429,
            "too many requests",
            f"{exc.limit} limit of {exc.allowed} reached",
            {"Retry-After": str(exc.retry_after)},
        )

    def authenticate(request: Request) -> Peer:
        key = _key_from(request)
        peer = TrustStore.of(gov).authenticate(key) if key else None
        if peer is None:
            route = request.scope.get("route")
            summary.unauthenticated(
                getattr(route, "path", "other"),
                source_prefix(request.client.host if request.client else None),
            )
            raise _Refusal(401, "authentication required", "send a valid, unrevoked API key")
        try:
            quota.request(peer.name)
        except Limited as exc:
            raise over_limit(peer, exc, request) from None
        if not _acceptable(request, accept_stix=True):
            raise _Refusal(406, "not acceptable", f"this server speaks {MEDIA_TYPE}")
        return peer

    def collection(peer: Peer, cid: str, need: str, request: Request) -> str:
        alias = ids.get(cid)
        if alias is None:
            raise _Refusal(404, "no such collection")
        allowed = {"read": peer.read, "write": peer.write, "any": peer.read | peer.write}[need]
        if alias not in allowed:
            audit(
                peer.name,
                "refused",
                collection=alias,
                path=request.url.path,
                reason=f"trust group {peer.group!r} may not {need} {alias!r}",
            )
            raise _Refusal(403, "forbidden", f"you may not {need} this collection")
        return alias

    def describe(peer: Peer, alias: str) -> dict[str, Any]:
        return {
            "id": collection_id(isp, alias),
            "title": alias,
            "description": COLLECTIONS[alias],
            "can_read": alias in peer.read,
            "can_write": alias in peer.write,
            "media_types": [_STIX_MEDIA],
        }

    @app.exception_handler(_Refusal)
    async def _refusal(request: Request, exc: _Refusal) -> Response:
        headers = dict(exc.headers)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="mamori-taxii"'
        body = {"title": exc.title, "http_status": str(exc.status)}
        if exc.description:
            body["description"] = exc.description
        return _json(body, exc.status, headers)

    @app.get("/", name="discovery")
    def discovery(request: Request) -> Response:
        authenticate(request)
        root = str(request.url_for("api_root"))
        return _json(
            {
                "title": app.title,
                "description": "Mamori C&C list sharing (measure M3)",
                "default": root,
                "api_roots": [root],
            }
        )

    @app.get("/api/", name="api_root")
    def api_root(request: Request) -> Response:
        authenticate(request)
        return _json(
            {
                "title": app.title,
                "versions": [MEDIA_TYPE],
                "max_content_length": cfg.max_content_length,
            }
        )

    @app.get("/api/status/{status_id}/")
    def status(request: Request, status_id: str) -> Response:
        authenticate(request)
        # Posts complete synchronously; their status is in the POST's reply and is not kept.
        raise _Refusal(404, "no such status", "additions complete synchronously")

    @app.get("/api/collections/")
    def collections(request: Request) -> Response:
        peer = authenticate(request)
        visible = [describe(peer, a) for a in COLLECTIONS if a in (peer.read | peer.write)]
        return _json({"collections": visible} if visible else {})

    @app.get("/api/collections/{cid}/")
    def one_collection(request: Request, cid: str) -> Response:
        peer = authenticate(request)
        return _json(describe(peer, collection(peer, cid, "any", request)))

    # (collection, date_added, id) → does the stored object name a subscriber address; the store
    # is append-only, so a verdict holds until the address plan changes (a new app)
    names_pool: dict[tuple[str, str, str], bool] = {}

    def withheld(alias: str, entry: Mapping[str, Any]) -> bool:
        key = (alias, str(entry["date_added"]), str(entry["object"].get("id")))
        verdict = names_pool.get(key)
        if verdict is None:
            if len(names_pool) > 200_000:
                names_pool.clear()
            verdict = names_pool[key] = subscriber_address(entry["object"], pools) is not None
        return verdict

    def envelope(request: Request, cid: str, object_id: str | None, manifest: bool) -> Response:
        peer = authenticate(request)
        alias = collection(peer, cid, "read", request)
        all_versions = request.query_params.get("match[version]", "last") == "all"
        selected, more = _select(
            request, store.entries(alias, all_versions=all_versions), object_id
        )
        hold = [withheld(alias, e) for e in selected]
        page = [e for e, h in zip(selected, hold, strict=True) if not h]
        held = [e["object"].get("id") for e, h in zip(selected, hold, strict=True) if h]
        if object_id is not None and not page and "next" not in request.query_params:
            raise _Refusal(404, "no such object")
        headers: dict[str, str] = {}
        body: dict[str, Any] = {"more": more}
        if selected:
            headers = {
                "X-TAXII-Date-Added-First": selected[0]["date_added"],
                "X-TAXII-Date-Added-Last": selected[-1]["date_added"],
            }
            if more:
                body["next"] = _page_token(selected[-1])
        if page:
            if manifest:
                body["objects"] = [
                    {
                        "id": e["object"]["id"],
                        "date_added": e["date_added"],
                        "version": _version(e["object"]),
                        "media_type": _STIX_MEDIA,
                    }
                    for e in page
                ]
            else:
                body["objects"] = [e["object"] for e in page]
        extra: dict[str, Any] = {}
        if held:
            log.warning("%s: withheld %d object(s) naming a subscriber address", alias, len(held))
            extra = {"withheld": len(held), "withheld_ids": held}
        audit(
            peer.name,
            "share-read",
            collection=alias,
            endpoint="manifest" if manifest else "objects",
            objects=len(page),
            ids=[e["object"]["id"] for e in page],
            **extra,
        )
        return _json(body, headers=headers)

    @app.get("/api/collections/{cid}/objects/")
    def get_objects(request: Request, cid: str) -> Response:
        return envelope(request, cid, None, manifest=False)

    @app.get("/api/collections/{cid}/objects/{object_id}/")
    def get_object(request: Request, cid: str, object_id: str) -> Response:
        return envelope(request, cid, object_id, manifest=False)

    @app.get("/api/collections/{cid}/manifest/")
    def get_manifest(request: Request, cid: str) -> Response:
        return envelope(request, cid, None, manifest=True)

    async def read_body(request: Request, peer: Peer) -> bytes:
        """The request body, refused (413, or 429 past the day's byte quota) as soon as it is
        known to be too large: from ``Content-Length`` before a byte is read, else while the
        chunks arrive. What was read counts against the quota."""
        cap = cfg.max_content_length
        room = quota.bytes_left(peer.name)
        declared = request.headers.get("content-length")
        try:
            if declared is not None:
                if not declared.strip().isdigit():
                    raise _Refusal(400, "bad Content-Length")
                if int(declared) > cap:
                    raise _Refusal(413, "too large", f"at most {cap} bytes")
                quota.check(peer.name, nbytes=int(declared))
            buf = bytearray()
            try:
                async for chunk in request.stream():
                    buf += chunk
                    if len(buf) > cap or len(buf) > room:
                        break
            finally:
                quota.charge(peer.name, nbytes=len(buf))
            if len(buf) > cap:
                raise _Refusal(413, "too large", f"at most {cap} bytes")
            if len(buf) > room:
                quota.check(peer.name, nbytes=len(buf))
        except Limited as exc:
            raise over_limit(peer, exc, request) from None
        return bytes(buf)

    def add(peer: Peer, alias: str, raw: bytes, request: Request) -> Response:
        try:
            doc, cut = load_json(raw, limits.max_json_depth)
        except ValueError:
            raise _Refusal(400, "not JSON") from None
        objects = doc.get("objects") if isinstance(doc, dict) else None
        if not isinstance(objects, list):
            raise _Refusal(400, "not an envelope", 'expected {"objects": [...]}')
        if len(objects) > cfg.max_objects_per_request:
            raise _Refusal(
                413, "too many objects", f"at most {cfg.max_objects_per_request} per request"
            )
        try:
            quota.check(peer.name, objects=len(objects))
        except Limited as exc:
            raise over_limit(peer, exc, request) from None
        quota.charge(peer.name, objects=len(objects))
        leaks = [
            {"index": i, "id": o.get("id") if isinstance(o, dict) else None, "field": where}
            for i, o in enumerate(objects)
            if (where := subscriber_address(o, pools)) is not None
        ]
        if leaks:
            audit(
                peer.name,
                "refused",
                collection=alias,
                path=request.url.path,
                reason="the envelope names an address in this ISP's subscriber pools; nothing "
                "from it was stored",
                objects=len(objects),
                naming=leaks[:100],
            )
            raise _Refusal(
                422,
                "subscriber address",
                f"object(s) {[x['index'] for x in leaks[:20]]} name an address in this ISP's "
                "subscriber pools; nothing from this envelope was stored",
            )
        good, failures = _check_objects(objects, limits, deep=bool(cut))
        added = store.add(alias, good)
        audit(
            peer.name,
            "share-write",
            collection=alias,
            objects=len(added),
            ids=[a["id"] for a in added],
            failed=len(failures),
        )
        request_time = _stamp(datetime.now(UTC))
        return _json(
            {
                "id": str(uuid.uuid4()),
                "status": "complete",
                "request_timestamp": request_time,
                "total_count": len(objects),
                "success_count": len(good),
                "successes": [{"id": o["id"], "version": _version(o)} for o in good],
                "failure_count": len(failures),
                "failures": failures,
                "pending_count": 0,
            },
            202,
        )

    @app.post("/api/collections/{cid}/objects/")
    async def add_objects(request: Request, cid: str) -> Response:
        peer = authenticate(request)
        alias = collection(peer, cid, "write", request)
        ctype = request.headers.get("content-type", "").replace(" ", "").lower()
        if not ctype.startswith("application/taxii+json"):
            raise _Refusal(415, "unsupported media type", f"post {MEDIA_TYPE}")
        raw = await read_body(request, peer)
        # parsing, validation and the store's lock are blocking work: off the event loop
        response: Response = await run_in_threadpool(add, peer, alias, raw, request)
        return response

    return app


def _stix_errors(obj: Mapping[str, Any]) -> list[str]:
    """What ``stix2-validator`` says a STIX 2.1 object MUST NOT be (its SHOULDs are not errors)."""
    try:
        result = validate_instance(dict(obj), _VALIDATION)
    except Exception as exc:  # it raises its own error types on input it cannot read
        return [f"cannot be validated: {type(exc).__name__}: {str(exc)[:200]}"]
    return [] if result.is_valid else [str(e)[:300] for e in result.errors]


def _check_objects(
    objects: Sequence[Any], limits: InputLimitsConfig, *, deep: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Valid STIX 2.1 objects, and the rest as TAXII failures (each with why). ``deep``: the
    body had nesting cut (:func:`mamori.bounds.load_json`), so objects are searched for it."""
    good: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for i, o in enumerate(objects):
        oid = o.get("id") if isinstance(o, dict) else None
        if not isinstance(o, dict) or not isinstance(oid, str):
            failures.append({"id": f"object {i}", "message": "not a STIX object with an id"})
            continue
        kind = o.get("type")
        line = deep_line(o) if deep else None
        pattern = o.get("pattern")
        if line is not None:
            failures.append(
                {
                    "id": oid,
                    "message": f"object {i}: {deep_message(line, limits.max_json_depth)}",
                }
            )
        elif not isinstance(kind, str) or not oid.startswith(kind + "--"):
            failures.append({"id": oid, "message": "id does not match type"})
        elif o.get("spec_version") != "2.1":
            failures.append({"id": oid, "message": "spec_version must be 2.1"})
        else:
            why: list[str] = []
            if isinstance(pattern, str):
                try:
                    check_pattern(pattern, limits)
                except ValueError as exc:
                    why = [str(exc)]
            why = why or _stix_errors(o)
            if why:
                failures.append({"id": oid, "message": f"object {i}: " + "; ".join(why[:3])})
            else:
                good.append(o)
    return good, failures
