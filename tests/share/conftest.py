"""Helpers for the sharing tests: findings rows, a second store, a TAXII server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import uvicorn
from fastapi import FastAPI

from mamori.config import MamoriConfig
from mamori.governance import Governance
from mamori.share.taxii import collection_id, create_taxii_app
from tests.conftest import HOUR, T0, make_config, table


def finding(
    ip: str,
    port: int | None = 443,
    *,
    score: float = 0.9,
    kind: str = "c2",
    protocol: str | None = "tcp",
    method: str = "correlation",
    first: datetime = T0,
    last: datetime | None = None,
    n: int = 0,
) -> dict[str, Any]:
    return {
        "detected": (last or first) + HOUR,
        "finding_id": f"f-{ip}-{port}-{n}",
        "kind": kind,
        "method": method,
        "ip": ip,
        "port": port,
        "protocol": protocol,
        "score": score,
        "first_seen": first,
        "last_seen": last or first + HOUR,
        "measure": "M2",
        "evidence": '{"clients": 12}',
    }


def write_findings(gov: Governance, rows: list[dict[str, Any]]) -> None:
    gov.write("M2", "findings", table(rows), "detector:test")


def findings_table(rows: list[dict[str, Any]]) -> pa.Table:
    return table(rows)


@pytest.fixture
def gov_b(tmp_path: Path) -> Iterator[Governance]:
    """A second Mamori store (another ISP)."""
    cfg: MamoriConfig = make_config(tmp_path / "store-b", isp_name="Peer ISP B")
    g = Governance(cfg)
    yield g
    g.close()


@contextmanager
def serving(gov: Governance, app: FastAPI | None = None) -> Iterator[str]:
    """``gov``'s TAXII server (or ``app``) on 127.0.0.1 (a free port); yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            app or create_taxii_app(gov),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("TAXII server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def c2_url(base: str, gov: Governance, alias: str = "c2") -> str:
    return f"{base}/api/collections/{collection_id(gov.config.isp_name, alias)}/"
