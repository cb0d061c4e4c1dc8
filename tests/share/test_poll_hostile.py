"""Polling a peer whose TAXII server answers a page with one object nested 100,000 deep (or a
pattern of 20,000 ``OR``): that object is reported, the rest of the page is loaded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from mamori.governance import Governance
from mamori.share import poll_peer
from mamori.share.taxii import MEDIA_TYPE
from mamori.share.trust import TrustStore
from tests.share.conftest import serving

CID = "0f9e6c1d-2b1e-4c55-9c1a-1f0e5a7d3b21"
STAMP = "2026-11-01T00:00:00.000Z"


def _indicator(n: int, pattern: str | None = None) -> str:
    return json.dumps(
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": f"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd{n:02d}",
            "created": STAMP,
            "modified": STAMP,
            "pattern": pattern or f"[ipv4-addr:value = '203.0.113.{n}']",
            "pattern_type": "stix",
            "valid_from": STAMP,
        }
    )


DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE = {
    "nested": _indicator(2)[:-1] + ', "x_nested": ' + DEEP + "}",
    "pattern": _indicator(
        2,
        "[" + " OR ".join(f"ipv4-addr:value = '203.0.113.{i % 250}'" for i in range(20_000)) + "]",
    ),
}


def _peer(middle: str) -> FastAPI:
    """A peer's TAXII server that answers one page: a good object, ``middle``, a good object."""
    app = FastAPI()
    page = '{"more": false, "objects": [' + ",".join([_indicator(1), middle, _indicator(3)]) + "]}"

    @app.get("/api/collections/{cid}/")
    def info(cid: str) -> Response:
        body = {"id": CID, "title": "c2", "can_read": True, "can_write": False}
        return Response(json.dumps(body), media_type=MEDIA_TYPE)

    @app.get("/api/collections/{cid}/objects/")
    def objects(request: Request, cid: str) -> Response:
        headers = {"X-TAXII-Date-Added-Last": STAMP}
        return Response(page, media_type=MEDIA_TYPE, headers=headers)

    return app


@pytest.mark.parametrize("kind", HOSTILE)
def test_poll_keeps_the_page_around_a_hostile_object(gov: Governance, kind: str) -> None:
    with serving(gov, _peer(HOSTILE[kind])) as base:
        TrustStore.of(gov).set_remote("peer", f"{base}/api/collections/{CID}/", "k" * 40)
        r = poll_peer(gov, "peer", "test")
    assert (r.objects_received, r.loaded, r.skipped) == (3, 2, 1)
    assert r.problems[0].startswith("object 1 (indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd02)")
    why: dict[str, Any] = {"nested": "nested deeper than 64", "pattern": "characters"}
    assert why[kind] in r.problems[0]
