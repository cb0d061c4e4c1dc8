"""``/metrics``: the installation's Prometheus metrics, for the admin role (a Prometheus on the
same host scrapes the loopback listener instead, ``web.metrics_listen``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mamori.web.auth import Need, Viewer
from mamori.web.metrics import ConsoleMetrics, registry

router = APIRouter()
Metrics = Annotated[Viewer, Depends(Need("metrics"))]


@router.get("/metrics")
async def metrics(request: Request, viewer: Metrics) -> Response:
    # on the event loop like every page: the console's DuckDB connection is not shared between
    # threads (a snapshot is taken at most once a minute)
    state = request.app.state
    if getattr(state, "metrics", None) is None:
        state.metrics = registry(ConsoleMetrics(state.gov))
    return Response(generate_latest(state.metrics), media_type=CONTENT_TYPE_LATEST)
