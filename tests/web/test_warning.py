"""The warning page over real HTTP on 127.0.0.1: content per language and category, what it
records (counts only), continuing, and the router the console mounts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from mamori.config import DnsConfig, WebConfig
from mamori.governance import Governance
from mamori.web.warning import create_warning_app, warning_router
from tests.act.conftest import REPUTATION, reputation_table
from tests.conftest import free_port, make_config
from tests.unbound_harness import DOMAIN


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > end:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _gov(tmp_path: Path, continue_url: str | None = None) -> Governance:
    cfg = make_config(
        tmp_path / "store",
        isp_name="Example ISP",
        web=WebConfig(base_url="https://my.isp.example"),
        dns=DnsConfig(continue_url=continue_url),
    )
    gov = Governance(cfg)
    gov.write_registry("reputation", reputation_table(REPUTATION), "test", source="test")
    return gov


@pytest.fixture
def warning_url(tmp_path: Path) -> Iterator[tuple[str, Governance]]:
    gov = _gov(tmp_path, continue_url="https://bypass.isp.example/go?u={url}")
    with serving(create_warning_app(gov.config, gov)) as url:
        yield url, gov
    gov.close()


@pytest.mark.parametrize(
    ("host", "lang", "expected", "absent"),
    [
        (
            f"malware.{DOMAIN}",
            "en",
            ["<strong>distributing malware</strong>", f"malware.{DOMAIN}"],
            ["phishing site</strong>"],
        ),
        (
            f"x.malware.{DOMAIN}",
            "en",
            ["<strong>distributing malware</strong>", f"x.malware.{DOMAIN}"],
            [],
        ),
        (
            f"phish.{DOMAIN}",
            "en",
            ["<strong>phishing site</strong>"],
            ["distributing malware</strong>"],
        ),
        (f"phish.{DOMAIN}", "ja", ["<strong>フィッシングサイト</strong>", "設定を変更する"], []),
        (f"malware.{DOMAIN}:80", "ja", ["<strong>マルウェア配布サイト</strong>"], [":80"]),
        ("unlisted.example", "en", ["distributing malware or as a phishing site"], []),
        ("<script>alert(1)</script>", "en", ["The site you tried to open"], ["<script>alert"]),
    ],
)
def test_page_explains_listing_reason_and_setting(
    warning_url: tuple[str, Governance],
    host: str,
    lang: str,
    expected: list[str],
    absent: list[str],
) -> None:
    url, _ = warning_url
    r = httpx.get(f"{url}/download/setup.exe?lang={lang}", headers={"Host": host})
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    for text in [*expected, 'href="https://my.isp.example/consent"']:
        assert text in r.text
    for text in absent:
        assert text not in r.text
    if lang == "en":
        assert "switch this warning off, or on again, at any time" in r.text
        assert "Warning page on access to malware and phishing sites" in r.text


@pytest.mark.parametrize(
    ("accept", "marker"),
    [("en-GB,en;q=0.8", "Continue anyway"), ("ja,en;q=0.5", "このまま進む"), ("", "このまま進む")],
)
def test_language_from_browser(
    warning_url: tuple[str, Governance], accept: str, marker: str
) -> None:
    url, _ = warning_url
    r = httpx.get(url, headers={"Host": f"malware.{DOMAIN}", "Accept-Language": accept})
    assert marker in r.text


def test_only_counts_are_recorded(warning_url: tuple[str, Governance]) -> None:
    url, gov = warning_url
    for host in (f"malware.{DOMAIN}", f"malware.{DOMAIN}", f"phish.{DOMAIN}"):
        httpx.get(url + "/a", headers={"Host": host})
    r = httpx.post(
        url + "/.mamori/continue",
        data={"site": f"malware.{DOMAIN}", "path": "/payload.exe"},
        headers={"Host": f"malware.{DOMAIN}"},
    )
    assert r.status_code == 303
    assert r.headers["location"] == (
        "https://bypass.isp.example/go?u=http%3A%2F%2Fmalware.test.example%2Fpayload.exe"
    )
    path = gov.state_dir("warning") / "counts.json"
    counts = json.loads(path.read_text())
    (day,) = counts
    assert counts[day] == {"malware-site": {"shown": 2, "continued": 1}, "phishing": {"shown": 1}}
    raw = path.read_text()
    assert "127.0.0.1" not in raw and DOMAIN not in raw


def test_without_continue_target_the_page_says_how(tmp_path: Path) -> None:
    gov = _gov(tmp_path)
    with serving(create_warning_app(gov.config, gov)) as url:
        r = httpx.get(url + "/x?lang=en", headers={"Host": f"malware.{DOMAIN}"})
        assert "<form" not in r.text
        assert f"http://malware.{DOMAIN}/x" in r.text
        assert httpx.post(url + "/.mamori/continue", data={"site": "a.example"}).status_code == 404
    gov.close()


def test_router_for_the_console(tmp_path: Path) -> None:
    gov = _gov(tmp_path)
    app = FastAPI()
    app.include_router(warning_router(gov))
    with serving(app) as url:
        r = httpx.get(f"{url}/warning", params={"site": f"phish.{DOMAIN}", "lang": "en"})
        assert r.status_code == 200 and "<strong>phishing site</strong>" in r.text
    gov.close()
