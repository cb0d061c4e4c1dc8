"""`mamori share …` end to end through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stix2validator import ValidationOptions, validate_string
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config import load_config
from mamori.detect.reviews import Reviews
from mamori.governance import Governance
from tests.share.conftest import c2_url, finding, serving, write_findings

pytestmark = pytest.mark.slow  # TAXII peers from the command line

runner = CliRunner()

CONFIG = """
isp_name = "{name}"
[[address_plan]]
name = "home"
kind = "dynamic"
prefixes = ["10.0.0.0/16"]
"""


def _store(tmp_path: Path, name: str) -> list[str]:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(CONFIG.format(name=name))
    return ["--store", str(tmp_path / name), "--config", str(cfg)]


def _gov(args: list[str]) -> Governance:
    return Governance(load_config(Path(args[3]), {"store": Path(args[1])}))


def test_export_formats_and_refusal(tmp_path: Path) -> None:
    a = _store(tmp_path, "isp-a")
    with _gov(a) as g:
        write_findings(g, [finding("203.0.113.5"), finding("198.18.0.1", 53, protocol="udp")])
    # unreviewed candidates stay home unless the operator says so (audited)
    r = runner.invoke(app, [*a, "share", "export", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert "203.0.113.5" not in r.stdout and "exported 0 C&C endpoint(s)" in r.output
    r = runner.invoke(app, [*a, "share", "export", "--format", "csv", "--include-candidates"])
    assert r.exit_code == 0, r.output
    assert "203.0.113.5" in r.stdout and "198.18.0.1" in r.stdout
    out = tmp_path / "list.json"
    r = runner.invoke(
        app,
        [
            *a,
            "share",
            "export",
            "-f",
            "stix",
            "--out",
            str(out),
            "--tlp",
            "green",
            "--min-score",
            "0.5",
            "--include-candidates",
        ],
    )
    assert r.exit_code == 0, r.output
    assert validate_string(out.read_text(), ValidationOptions(version="2.1")).is_valid
    assert json.loads(out.read_text())["objects"][0]["name"] == "TLP:GREEN"
    r = runner.invoke(app, [*a, "share", "export", "-f", "misp", "--tlp", "purple",
                            "--include-candidates"])  # fmt: skip
    assert r.exit_code == 2 and "unknown TLP level" in r.output
    with _gov(a) as g:
        write_findings(g, [finding("10.0.3.4", 8080)])
    r = runner.invoke(app, [*a, "share", "export", "-f", "csv", "--include-candidates"])
    assert r.exit_code == 1
    assert "export refused" in r.output and "10.0.3.4" not in r.stdout


def test_peers_publish_and_poll(tmp_path: Path) -> None:
    a, b = _store(tmp_path, "isp-a"), _store(tmp_path, "isp-b")
    with _gov(a) as g:
        write_findings(g, [finding("203.0.113.5"), finding("203.0.113.6", 80)])
    assert (
        runner.invoke(
            app,
            [
                *a,
                "share",
                "peers",
                "groups",
                "set",
                "isac",
                "--read",
                "c2",
                "--write",
                "submissions",
            ],
        ).exit_code
        == 0
    )
    r = runner.invoke(app, [*a, "share", "peers", "groups", "set", "bad", "--write", "c2"])
    assert r.exit_code == 2 and "nobody may write the c2" in r.output
    r = runner.invoke(app, [*a, "share", "peers", "add", "isp-b", "--group", "isac"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("mamori_")
    with _gov(a) as g:  # an analyst confirms both in the console
        reviews = Reviews(g)
        for ip, port in (("203.0.113.5", 443), ("203.0.113.6", 80)):
            reviews.record(f"f-{ip}-{port}-0", "M2", "confirmed", "analyst")
    r = runner.invoke(app, [*a, "share", "publish"])
    assert r.exit_code == 0 and "2 endpoint(s)" in r.output
    listing = runner.invoke(app, [*a, "share", "peers", "list"])
    assert "isp-b" in listing.output and key not in listing.output
    with _gov(a) as ga, serving(ga) as base:
        url = c2_url(base, ga)
        r = runner.invoke(
            app, [*b, "share", "peers", "remote", "isp-a", "--url", url], input=key + "\n"
        )
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, [*b, "share", "import", "--peer", "isp-a"])
        assert r.exit_code == 0, r.output
        assert "loaded 2 entries from isp-a" in r.output
        assert runner.invoke(app, [*a, "share", "peers", "revoke", "isp-b"]).exit_code == 0
        r = runner.invoke(app, [*b, "share", "import", "--peer", "isp-a"])
        assert r.exit_code == 1 and "401" in r.output


def test_import_file(tmp_path: Path) -> None:
    b = _store(tmp_path, "isp-b")
    f = tmp_path / "list.csv"
    f.write_text("ip,port,protocol\n203.0.113.9,443,tcp\nnot an ip,1,tcp\n")
    r = runner.invoke(app, [*b, "share", "import", "--format", "csv", str(f), "--source", "x"])
    assert r.exit_code == 0, r.output
    assert "loaded 1 entry from x; skipped 1" in r.output and "data row 2" in r.output
    r = runner.invoke(app, [*b, "share", "import", str(f)])
    assert r.exit_code == 2 and "--format" in r.output
    r = runner.invoke(app, [*b, "share", "import"])
    assert r.exit_code == 2
