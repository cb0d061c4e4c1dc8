"""Configuration: file + environment, and errors that name key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config import ConfigError, DnsConfig, load_config

GOOD = """
store = "/srv/mamori"
[retention]
flows = 30
[[address_plan]]
name = "home"
kind = "dynamic"
prefixes = ["10.0.0.0/16", "2001:db8::/48"]
[[address_plan]]
name = "biz"
kind = "static"
prefixes = ["192.0.2.0/24"]
[measures]
M13 = false
[smtp]
host = "mail.example.net"
password = "s3cret"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mamori.toml"
    p.write_text(text)
    return p


def test_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAMORI_STORE", raising=False)
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.store == Path("/srv/mamori")
    assert cfg.retention.flows == 30 and cfg.retention.dns_queries == 30
    assert not cfg.measure_enabled("M13") and cfg.measure_enabled("M4")
    assert [p.kind for p in cfg.address_plan] == ["dynamic", "static"]
    assert cfg.public_dict()["smtp"]["password"] == "**********"


def test_environment_wins_over_file_and_flags_win_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, GOOD)
    monkeypatch.setenv("MAMORI_RETENTION__FLOWS", "7")
    monkeypatch.setenv("MAMORI_STORE", "/env/store")
    cfg = load_config(path)
    assert cfg.retention.flows == 7 and cfg.store == Path("/env/store")
    assert load_config(path, {"store": "/flag/store"}).store == Path("/flag/store")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[retention]\nflows = -3\n", ["retention.flows", "-3", "greater than 0"]),
        ('engine = "oracle"\n', ["engine", "'oracle'", "duckdb", "spark"]),
        ("[measures]\nM15 = true\n", ["measures", "M15", "M1 … M14"]),
        (
            '[[address_plan]]\nname = "a"\nkind = "floating"\nprefixes = ["10.0.0.0/8"]\n',
            ["address_plan.0.kind", "'floating'", "dynamic", "static", "cgnat"],
        ),
        (
            '[[address_plan]]\nname = "a"\nkind = "dynamic"\nprefixes = ["10.0.0.300/8"]\n',
            ["address_plan.0.prefixes.0", "10.0.0.300/8"],
        ),
        (
            '[[address_plan]]\nname = "a"\nkind = "dynamic"\nprefixes = ["10.0.0.0/8"]\n'
            '[[address_plan]]\nname = "b"\nkind = "static"\nprefixes = ["10.1.0.0/16"]\n',
            ["overlaps", "10.1.0.0/16", "pools must be disjoint"],
        ),
        ("colour = 1\n", ["colour", "not a setting"]),
        ("[smtp]\nport = 70000\n", ["smtp.port", "70000", "less than 65536"]),
        ("store = [", ["not valid TOML"]),
        (
            '[collector.sampling_overrides]\n"router-1" = 100\n',
            ["collector.sampling_overrides", "not an exporter IP address"],
        ),
        ('[collector.sampling_overrides]\n"192.0.2.1" = 0\n', ["must be at least 1"]),
        ("[collector]\nflush_interval_s = 0\n", ["collector.flush_interval_s", "greater than 0"]),
    ],
)
def test_invalid_file_names_key_value_and_allowed(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (  # a comment left inside the list's quotes
            '[[address_plan]]\nname = "a"\nkind = "dynamic"\nprefixes = ["# home", "10.0.0.0/8"]\n',
            "address_plan.0.prefixes.0 = '# home': expected an IP network in CIDR form, e.g. "
            "192.0.2.0/24 or 2001:db8::/32 (a '#' inside quotes is part of the value, not a "
            "comment)",
        ),
        (
            '[dns]\nwarning_addrs = ["192.0.2"]\n',
            "dns.warning_addrs.0 = '192.0.2': expected an IP address, e.g. 192.0.2.1 or 2001:db8::1",
        ),
        ("[smtp]\nport = 70000\n", "smtp.port = 70000: expected less than 65536"),
    ],
)
def test_error_is_one_line_naming_file_key_value_and_expected(
    tmp_path: Path, text: str, line: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"invalid configuration: {path}: {line}"


def test_error_names_the_environment_variable_that_set_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAMORI_RETENTION__FLOWS", "-1")
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, GOOD))
    assert str(info.value) == (
        "invalid configuration: environment MAMORI_RETENTION__FLOWS: retention.flows = '-1': "
        "expected greater than 0"
    )


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_config_check_command(tmp_path: Path) -> None:
    good = _write(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["config", "check", "--config", str(good), "--json"])
    assert result.exit_code == 0, result.output
    assert '"flows": 30' in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[retention]\nflows = 0\n")
    result = CliRunner().invoke(app, ["--config", str(bad), "config", "check"])
    assert result.exit_code == 2
    assert "retention.flows = 0" in result.output


def test_config_check_refuses_retention_beyond_catalogue(tmp_path: Path) -> None:
    p = _write(tmp_path, "[retention]\nmatches = 400\n")
    result = CliRunner().invoke(app, ["--config", str(p), "config", "check"])
    assert result.exit_code == 2
    assert "retention.matches = 400" in result.output and "at most 365 days" in result.output


def test_resolver_control_keeps_its_old_name() -> None:
    """``dns.unbound_control`` (its name before BIND was supported) still configures it."""
    new = DnsConfig.model_validate({"resolver_control": ["rndc", "-c", "/etc/bind/rndc.conf"]})
    old = DnsConfig.model_validate({"unbound_control": ["rndc", "-c", "/etc/bind/rndc.conf"]})
    assert new.resolver_control == old.resolver_control == ("rndc", "-c", "/etc/bind/rndc.conf")
