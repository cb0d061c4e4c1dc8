"""The TAXII 2.1 server over real HTTP on 127.0.0.1: keys, trust groups, paging, audit."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from taxii2client.common import TokenAuth
from taxii2client.v21 import Collection, Server

from mamori.governance import Governance
from mamori.share import publish
from mamori.share.taxii import MEDIA_TYPE, create_taxii_app
from mamori.share.trust import TrustStore
from tests.share.conftest import c2_url, finding, serving, write_findings

ACCEPT = {"Accept": MEDIA_TYPE}


@pytest.fixture
def taxii_app(gov: Governance) -> FastAPI:
    return create_taxii_app(gov)


@pytest.fixture
def server(gov: Governance, taxii_app: FastAPI) -> Iterator[tuple[str, dict[str, str]]]:
    """Store A with 5 published endpoints (17 objects), groups and three peers; yields the base
    URL and each peer's key."""
    write_findings(gov, [finding(f"203.0.113.{i}", 443 + i) for i in range(1, 6)])
    publish(gov, "test", include_candidates=True)
    trust = TrustStore.of(gov)
    trust.set_group("isac", read=["c2", "submissions"], write=["submissions"])
    trust.set_group("readers", read=["c2"], write=[])
    trust.set_group("droppers", read=[], write=["submissions"])
    keys = {
        p: trust.add_peer(p, g)
        for p, g in [("isac-jp", "isac"), ("isp-r", "readers"), ("isp-d", "droppers")]
    }
    with serving(gov, taxii_app) as base:
        yield base, keys


def _get(url: str, key: str | None, **params: str) -> httpx.Response:
    headers = dict(ACCEPT)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.get(url, headers=headers, params=params)


def test_discovery_api_root_and_media_type(server: tuple[str, dict[str, str]]) -> None:
    base, keys = server
    r = _get(base + "/", keys["isp-r"])
    assert r.status_code == 200
    assert r.headers["content-type"] == MEDIA_TYPE
    assert r.json()["api_roots"] == [base + "/api/"]
    root = _get(base + "/api/", keys["isp-r"]).json()
    assert root["versions"] == [MEDIA_TYPE]
    # taxii2-client walks it the same way (HTTP Basic, the key as password)
    srv = Server(base + "/", user="isp-r", password=keys["isp-r"])
    assert [c.title for c in srv.api_roots[0].collections] == ["c2"]
    srv.close()


@pytest.mark.parametrize(
    ("peer", "visible"),
    [
        ("isac-jp", {"c2": (True, False), "submissions": (True, True)}),
        ("isp-r", {"c2": (True, False)}),
        ("isp-d", {"submissions": (False, True)}),
    ],
)
def test_collections_listed_by_rights(
    server: tuple[str, dict[str, str]], peer: str, visible: dict[str, tuple[bool, bool]]
) -> None:
    base, keys = server
    cols = _get(base + "/api/collections/", keys[peer]).json()["collections"]
    assert {c["title"]: (c["can_read"], c["can_write"]) for c in cols} == visible


@pytest.mark.parametrize("key", [None, "nonsense", "mamori_000000000000_" + "x" * 43])
def test_no_valid_key_is_401(
    server: tuple[str, dict[str, str]], gov: Governance, taxii_app: FastAPI, key: str | None
) -> None:
    base, _ = server
    r = _get(c2_url(base, gov) + "objects/", key)
    assert r.status_code == 401
    assert "objects" not in r.json()
    taxii_app.state.refusal_summary.flush()
    assert not [e for e in gov.audit.entries() if e.actor == "taxii:unauthenticated"]
    summaries = [e for e in gov.audit.entries() if e.actor == "taxii:summary"]
    assert [e.event for e in summaries] == ["refused-summary"]
    assert json.loads(summaries[0].detail or "{}")["unauthenticated"] == 1


@pytest.mark.parametrize("path", ["", "objects/", "manifest/"])
def test_peer_without_rights_gets_403_and_nothing_else(
    server: tuple[str, dict[str, str]], gov: Governance, path: str
) -> None:
    base, keys = server
    r = _get(c2_url(base, gov) + path, keys["isp-d"])
    assert r.status_code == 403
    assert set(r.json()) <= {"title", "http_status", "description"}
    assert "203.0.113" not in r.text and "indicator--" not in r.text
    refused = [e for e in gov.audit.entries() if e.event == "refused" and e.actor == "taxii:isp-d"]
    assert len(refused) == 1


def test_revoked_key_stops_working_at_once(
    server: tuple[str, dict[str, str]], gov: Governance
) -> None:
    base, keys = server
    url = c2_url(base, gov) + "objects/"
    assert _get(url, keys["isp-r"]).status_code == 200
    TrustStore.of(gov).revoke_peer("isp-r")
    assert _get(url, keys["isp-r"]).status_code == 401
    assert _get(url, keys["isac-jp"]).status_code == 200


def test_paging_added_after_and_filters(
    server: tuple[str, dict[str, str]], gov: Governance
) -> None:
    base, keys = server
    url, key = c2_url(base, gov) + "objects/", keys["isac-jp"]
    everything = _get(url, key, limit="1000").json()
    assert everything["more"] is False
    all_ids = [o["id"] for o in everything["objects"]]
    assert len(all_ids) == len(set(all_ids)) == 2 + 5 * 3
    pages, params = [], {"limit": "4"}
    while True:
        r = _get(url, key, **params)
        body = r.json()
        pages.append([o["id"] for o in body["objects"]])
        assert r.headers["X-TAXII-Date-Added-First"] <= r.headers["X-TAXII-Date-Added-Last"]
        if not body["more"]:
            break
        params = {"limit": "4", "next": body["next"]}
    assert [len(p) for p in pages] == [4, 4, 4, 4, 1]
    assert [i for p in pages for i in p] == all_ids
    manifest = _get(c2_url(base, gov) + "manifest/", key, limit="1000").json()["objects"]
    cut = manifest[9]["date_added"]
    after = _get(url, key, added_after=cut).json()["objects"]
    assert [o["id"] for o in after] == all_ids[10:]
    inds = _get(url, key, **{"match[type]": "indicator"}).json()["objects"]
    assert len(inds) == 5 and {o["type"] for o in inds} == {"indicator"}
    one = _get(c2_url(base, gov) + f"objects/{inds[0]['id']}/", key).json()["objects"]
    assert one == [inds[0]]
    reads = [
        json.loads(e.detail or "{}")
        for e in gov.audit.entries()
        if e.event == "share-read" and e.actor == "taxii:isac-jp"
    ]
    assert reads[0]["objects"] == 17 and reads[0]["ids"] == all_ids


@pytest.mark.parametrize(
    ("params", "status"),
    [({"limit": "x"}, 400), ({"next": "@@"}, 400), ({"added_after": "yesterday"}, 400)],
)
def test_bad_parameters(
    server: tuple[str, dict[str, str]], gov: Governance, params: dict[str, str], status: int
) -> None:
    base, keys = server
    assert _get(c2_url(base, gov) + "objects/", keys["isac-jp"], **params).status_code == status


def test_not_acceptable(server: tuple[str, dict[str, str]], gov: Governance) -> None:
    base, keys = server
    r = httpx.get(
        c2_url(base, gov) + "objects/",
        headers={"Accept": "text/html", "Authorization": f"Bearer {keys['isac-jp']}"},
    )
    assert r.status_code == 406


def test_post_to_writable_collection_and_403_elsewhere(
    server: tuple[str, dict[str, str]], gov: Governance
) -> None:
    base, keys = server
    obj = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        "created": "2026-11-01T00:00:00.000Z",
        "modified": "2026-11-01T00:00:00.000Z",
        "pattern": "[ipv4-addr:value = '198.18.5.5']",
        "pattern_type": "stix",
        "valid_from": "2026-11-01T00:00:00.000Z",
    }
    bad = {"type": "indicator", "id": "malware--x", "spec_version": "2.1"}
    sub = Collection(c2_url(base, gov, "submissions"), auth=TokenAuth(keys["isp-d"]))
    status = sub.add_objects({"objects": [obj, bad]})
    assert (status.status, status.success_count, status.failure_count) == ("complete", 1, 1)
    sub.close()
    got = _get(c2_url(base, gov, "submissions") + "objects/", keys["isac-jp"]).json()
    assert got["objects"] == [obj]
    c2 = Collection(c2_url(base, gov), auth=TokenAuth(keys["isac-jp"]))
    with pytest.raises(Exception, match="403"):
        c2._conn.post(
            c2.objects_url,
            headers={"Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE},
            json={"objects": [obj]},
        )
    c2.close()
    writes = [json.loads(e.detail or "{}") for e in gov.audit.entries() if e.event == "share-write"]
    assert writes == [{"collection": "submissions", "failed": 1, "ids": [obj["id"]], "objects": 1}]
