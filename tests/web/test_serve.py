"""`mamori serve` starts the console on the port it is given (a real process, real HTTP)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow  # starts the console server


def test_serve_cli(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mamori", "--store", str(tmp_path), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        page = None
        for _ in range(300):  # bounded tries while the process starts
            if proc.poll() is not None:
                break
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert page is not None, proc.stdout.read().decode() if proc.stdout else ""
        assert page.status_code == 200 and "M14" in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/findings", timeout=5).status_code == 303
        # the other stages' web parts are served by the same process
        warn = httpx.get(f"http://127.0.0.1:{port}/warning?site=bad.example", timeout=5)
        assert warn.status_code == 200 and "bad.example" in warn.text
        taxii = httpx.get(
            f"http://127.0.0.1:{port}/taxii2/",
            headers={"Accept": "application/taxii+json;version=2.1"},
            timeout=5,
        )
        assert taxii.status_code == 401  # no peer key
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()
