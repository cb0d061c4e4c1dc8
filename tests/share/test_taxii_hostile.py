"""The TAXII server against careless and hostile peers, over real HTTP on 127.0.0.1.

Subscriber addresses neither come in nor go out, in any collection or object type; posted objects
are validated; each peer has a request rate and daily quotas; a body is refused for its size before
it is read; requests without a key are summarised in the audit log; a body nested 100,000 deep
or a pattern of 20,000 ``OR`` costs its object only.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from mamori.config import AddressPool, ShareConfig
from mamori.governance import Governance
from mamori.share.taxii import MEDIA_TYPE, CollectionStore, create_taxii_app
from mamori.share.trust import TrustStore
from tests.conftest import PLAN, make_config
from tests.share.conftest import c2_url, serving

# 10:00 UTC: the daily quotas have 14 hours to run
NOW = datetime(2026, 11, 1, 10, 0, tzinfo=UTC).timestamp()
V6_POOL = AddressPool(name="home-v6", kind="dynamic", prefixes=("2001:db8:100::/48",))
HEADERS = {"Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE}


@dataclass
class Taxii:
    gov: Governance
    app: FastAPI
    base: str
    keys: dict[str, str]

    def url(self, alias: str = "submissions", path: str = "objects/") -> str:
        return c2_url(self.base, self.gov, alias) + path

    def post(self, objects: list[Any], peer: str = "sender") -> httpx.Response:
        return self.post_raw(json.dumps({"objects": objects}).encode(), peer)

    def post_raw(self, body: bytes, peer: str = "sender") -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.keys[peer]}"}
        return httpx.post(self.url(), content=body, headers={**HEADERS, **auth}, timeout=60)

    def get(self, url: str, peer: str | None = "reader") -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.keys[peer]}"} if peer else {}
        return httpx.get(url, headers={"Accept": MEDIA_TYPE, **auth}, timeout=60)

    def audit(self, actor: str, event: str | None = None) -> list[dict[str, Any]]:
        return [
            {"event": e.event, **json.loads(e.detail or "{}")}
            for e in self.gov.audit.entries()
            if e.actor == f"taxii:{actor}" and event in (None, e.event)
        ]


@contextmanager
def taxii(tmp_path: Path, **share: Any) -> Iterator[Taxii]:
    """A store whose plan has an IPv6 pool too, peers ``sender`` (writes submissions),
    ``reader`` (reads everything) and ``other``; its server on a fixed clock."""
    cfg = make_config(
        tmp_path / "store",
        address_plan=(*PLAN, V6_POOL),
        share=ShareConfig(refusal_summary_s=3600, **share),
    )
    gov = Governance(cfg)
    trust = TrustStore.of(gov)
    trust.set_group("writers", read=[], write=["submissions"])
    trust.set_group("readers", read=["c2", "submissions"], write=[])
    keys = {p: trust.add_peer(p, g) for p, g in [("sender", "writers"), ("reader", "readers")]}
    keys["other"] = trust.add_peer("other", "readers")
    app = create_taxii_app(gov, clock=lambda: NOW)
    try:
        with serving(gov, app) as base:
            yield Taxii(gov, app, base, keys)
    finally:
        gov.close()


def _id(kind: str) -> str:
    return f"{kind}--{uuid.uuid4()}"


STAMP = "2026-11-01T00:00:00.000Z"


def sdo(kind: str, **props: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "spec_version": "2.1",
        "id": _id(kind),
        "created": STAMP,
        "modified": STAMP,
        **props,
    }


def indicator(pattern: str, **props: Any) -> dict[str, Any]:
    return sdo(
        "indicator",
        name="C&C server",
        pattern=pattern,
        pattern_type="stix",
        valid_from=STAMP,
        **props,
    )


def sco(kind: str, **props: Any) -> dict[str, Any]:
    return {"type": kind, "spec_version": "2.1", "id": _id(kind), **props}


GOOD = indicator("[ipv4-addr:value = '198.18.5.5']")

# Each names a subscriber-pool address (10.0.0.0/16, 192.0.2.0/24, 198.51.100.0/28,
# 2001:db8:100::/48) somewhere else.
NAMING_SUBSCRIBERS = {
    "indicator pattern": indicator("[ipv4-addr:value = '10.0.3.4']"),
    "network-traffic pattern": indicator(
        "[network-traffic:src_ref.value = '198.51.100.3' AND network-traffic:dst_port = 23]"
    ),
    "pattern prefix": indicator("[ipv4-addr:value ISSUBSET '10.0.8.0/24']"),
    "ipv4-addr": sco("ipv4-addr", value="192.0.2.7"),
    "ipv4-addr prefix": sco("ipv4-addr", value="10.0.0.0/24"),
    "ipv6-addr": sco("ipv6-addr", value="2001:db8:100::5"),
    "ipv4-mapped ipv6": sco("ipv6-addr", value="::ffff:10.0.0.5"),
    "observed-data objects": sdo(
        "observed-data",
        first_observed=STAMP,
        last_observed=STAMP,
        number_observed=1,
        objects={"0": {"type": "ipv4-addr", "value": "10.0.1.1"}},
    ),
    "infrastructure description": sdo(
        "infrastructure", name="bot", description="panel reached from 10.0.0.44 nightly"
    ),
    "sighting defanged": sdo(
        "sighting",
        sighting_of_ref=GOOD["id"],
        description="seen at 198.51.100[.]3",
    ),
    "note leading zeros": sdo("note", content="victim 010.000.000.005", object_refs=[GOOD["id"]]),
    "custom property": indicator(
        "[ipv4-addr:value = '198.18.5.6']", x_seen_from={"hosts": ["192.0.2.200"]}
    ),
    "dictionary key": indicator("[ipv4-addr:value = '198.18.5.7']", x_counts={"10.0.0.5": 3}),
}


@pytest.mark.parametrize("bad", NAMING_SUBSCRIBERS.values(), ids=NAMING_SUBSCRIBERS.keys())
def test_submission_naming_a_subscriber_is_refused_whole_and_audited(
    tmp_path: Path, bad: dict[str, Any]
) -> None:
    with taxii(tmp_path) as t:
        r = t.post([GOOD, bad])
        assert r.status_code == 422
        assert r.json()["title"] == "subscriber address"
        assert "[1]" in r.json()["description"]
        got = t.get(t.url())
        assert got.status_code == 200 and "objects" not in got.json()
        refused = t.audit("sender", "refused")
        assert len(refused) == 1
        assert refused[0]["naming"][0]["index"] == 1
        assert refused[0]["naming"][0]["id"] == bad["id"]
        assert not t.audit("sender", "share-write")


ELSEWHERE = {
    "outside the /16": sco("ipv4-addr", value="10.1.0.1"),
    "outside the /28": sco("ipv4-addr", value="198.51.100.16"),
    "other ipv6": sco("ipv6-addr", value="2001:db8:200::1"),
    "times and versions": indicator(
        "[ipv4-addr:value = '203.0.113.9']", description="v1.10.0 at 10:00:00.000"
    ),
}


@pytest.mark.parametrize("obj", ELSEWHERE.values(), ids=ELSEWHERE.keys())
def test_addresses_outside_the_pools_are_accepted(tmp_path: Path, obj: dict[str, Any]) -> None:
    with taxii(tmp_path) as t:
        r = t.post([obj])
        assert r.status_code == 202 and r.json()["success_count"] == 1
        assert [o["id"] for o in t.get(t.url()).json()["objects"]] == [obj["id"]]


@pytest.mark.parametrize("alias", ["c2", "submissions"])
def test_stored_objects_naming_a_subscriber_are_withheld_on_the_way_out(
    tmp_path: Path, alias: str
) -> None:
    """Objects stored before the check (or before the address plan grew) never leave."""
    with taxii(tmp_path) as t:
        clean = indicator("[ipv4-addr:value = '203.0.113.7']")
        leaky = [NAMING_SUBSCRIBERS["indicator pattern"], NAMING_SUBSCRIBERS["ipv6-addr"]]
        CollectionStore.of(t.gov).add(alias, [clean, *leaky])
        objects = t.get(t.url(alias)).json()["objects"]
        assert [o["id"] for o in objects] == [clean["id"]]
        manifest = t.get(t.url(alias, "manifest/")).json()["objects"]
        assert [m["id"] for m in manifest] == [clean["id"]]
        assert t.get(t.url(alias, f"objects/{leaky[0]['id']}/")).status_code == 404
        reads = t.audit("reader", "share-read")
        assert reads[0]["withheld"] == 2
        assert set(reads[0]["withheld_ids"]) == {o["id"] for o in leaky}


INVALID = {
    "id not a UUID": ({**GOOD, "id": "indicator--x"}, "id"),
    "no pattern": ({k: v for k, v in indicator("[x:y = 1]").items() if k != "pattern"}, "pattern"),
    "pattern syntax": (indicator("[ipv4-addr:value = ]"), "Pattern failed"),
    "timestamp": (sdo("malware", name="x", is_family=False, created="yesterday"), "created"),
    "pattern of 20,000 OR": (
        indicator(
            "["
            + " OR ".join(f"ipv4-addr:value = '203.0.113.{i % 250}'" for i in range(20_000))
            + "]"
        ),
        "characters",
    ),
    "pattern of 1,000 OR": (
        indicator("[" + " OR ".join("x-y:z = 1" for _ in range(1_000)) + "]"),
        "999 operators",
    ),
}


@pytest.mark.parametrize(("bad", "why"), INVALID.values(), ids=INVALID.keys())
def test_invalid_objects_fail_and_the_rest_are_added(
    tmp_path: Path, bad: dict[str, Any], why: str
) -> None:
    with taxii(tmp_path) as t:
        r = t.post([GOOD, bad])
        assert r.status_code == 202
        status = r.json()
        assert (status["success_count"], status["failure_count"]) == (1, 1)
        assert status["failures"][0]["id"] == bad["id"]
        assert why in status["failures"][0]["message"]
        assert [o["id"] for o in t.get(t.url()).json()["objects"]] == [GOOD["id"]]


DEEP = "[" * 100_000 + "]" * 100_000


def test_object_nested_100000_deep_costs_only_itself(tmp_path: Path) -> None:
    with taxii(tmp_path) as t:
        deep = json.dumps(indicator("[ipv4-addr:value = '198.18.5.9']"))[:-1]
        deep += ', "x_nested": ' + DEEP + "}"
        body = '{"objects": [' + json.dumps(GOOD) + ",\n" + deep + "]}"
        r = t.post_raw(body.encode())
        assert r.status_code == 202
        status = r.json()
        assert (status["success_count"], status["failure_count"]) == (1, 1)
        assert "object 1: nested deeper than 64 levels" in status["failures"][0]["message"]
        # a body that is nothing but nesting is not an envelope: 400, not a crash
        assert t.post_raw(DEEP.encode()).status_code == 400


# (limit, settings, the requests within it, the request past it, Retry-After)
QUOTAS = [
    ("rate", {"rate_requests": 3, "rate_window_s": 3600}, 3, "get", 3600),
    ("objects", {"quota_objects_per_day": 2}, 2, "post", 14 * 3600),
    ("bytes", {"quota_bytes_per_day": 4000}, 2, "post", 14 * 3600),
]


@pytest.mark.parametrize(
    ("limit", "settings", "within", "action", "retry"), QUOTAS, ids=[q[0] for q in QUOTAS]
)
def test_quota_429_with_retry_after_audited_once_per_window(
    tmp_path: Path, limit: str, settings: dict[str, Any], within: int, action: str, retry: int
) -> None:
    with taxii(tmp_path, **settings) as t:

        def act() -> httpx.Response:
            if action == "get":
                return t.get(t.url(), "other")
            # about 1,600 bytes: two fit in 4,000 bytes, not three
            return t.post(
                [indicator("[ipv4-addr:value = '198.18.5.5']", description="x" * 1200)], "sender"
            )

        peer = "other" if action == "get" else "sender"
        assert [act().status_code for _ in range(within)] == [
            200 if action == "get" else 202
        ] * within
        refused = [act() for _ in range(11)]
        assert {r.status_code for r in refused} == {429}
        assert {int(r.headers["Retry-After"]) for r in refused} == {retry}
        audited = [a for a in t.audit(peer, "refused") if a.get("limit") == limit]
        assert len(audited) == 1 and audited[0]["retry_after"] == retry
        t.app.state.refusal_summary.flush()
        summaries = t.audit("summary", "refused-summary")
        assert [s["limited"] for s in summaries] == [{f"{peer}:{limit}": 10}]


def _raw(t: Taxii, head: str, body: bytes = b"") -> str:
    """Send a request by hand (its body possibly incomplete) and read the status line."""
    u = urlsplit(t.url())
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(
            (
                f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                f"Authorization: Bearer {t.keys['sender']}\r\nAccept: {MEDIA_TYPE}\r\n"
                f"Content-Type: {MEDIA_TYPE}\r\n{head}\r\n"
            ).encode()
            + body
        )
        # the body is never finished: only an answer given before reading it all arrives
        return s.recv(4096).decode("latin-1").split("\r\n")[0]


def test_too_large_is_refused_before_the_body_is_read(tmp_path: Path) -> None:
    with taxii(tmp_path, max_content_length=4096) as t:
        assert _raw(t, "Content-Length: 1000000000\r\n") == "HTTP/1.1 413 Request Entity Too Large"
        chunk = b"3e8\r\n" + b" " * 1000 + b"\r\n"  # chunks of 1,000 bytes, and no last chunk
        status = _raw(t, "Transfer-Encoding: chunked\r\n", chunk * 6)
        assert status == "HTTP/1.1 413 Request Entity Too Large"
        assert t.get(t.base + "/api/", "sender").json()["max_content_length"] == 4096


def test_unauthenticated_requests_are_one_summary_not_one_entry_each(tmp_path: Path) -> None:
    with taxii(tmp_path) as t:
        routes = [t.base + "/", t.url("c2"), t.url("c2", ""), t.url("submissions", "manifest/")]
        with httpx.Client(headers={"Accept": MEDIA_TYPE}) as client:
            for i in range(200):
                key = {} if i % 2 else {"Authorization": "Bearer mamori_000000000000_" + "x" * 43}
                assert client.get(routes[i % 4], headers=key).status_code == 401
        assert t.audit("unauthenticated") == t.audit("summary") == []
        t.app.state.refusal_summary.flush()
        summaries = t.audit("summary")
        assert [s["event"] for s in summaries] == ["refused-summary"]
        s = summaries[0]
        assert s["unauthenticated"] == 200
        assert s["by_source"] == {"127.0.0.0/24": 200}
        assert s["by_route"] == {
            "/": 50,
            "/api/collections/{cid}/objects/": 50,
            "/api/collections/{cid}/": 50,
            "/api/collections/{cid}/manifest/": 50,
        }
