"""create_app on any store, with routers and apps of other stages mounted beside the console."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.responses import PlainTextResponse

from mamori.governance import Governance
from mamori.web import create_app
from tests.web.server import running


def test_extra_routers_and_mounts(gov: Governance) -> None:
    warning = APIRouter()

    @warning.get("/warning")
    async def page() -> PlainTextResponse:
        return PlainTextResponse("warning page")

    taxii = FastAPI()

    @taxii.get("/")
    async def discovery() -> dict[str, str]:
        return {"title": "taxii"}

    app = create_app(gov, extra_routers=[warning], mounts={"/taxii2": taxii})
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/warning").text == "warning page"
        assert c.get("/taxii2/").json() == {"title": "taxii"}
        assert c.get("/findings", follow_redirects=False).status_code == 303  # console intact
        assert c.get("/static/mamori.css").status_code == 200
