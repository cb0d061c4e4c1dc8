"""`mamori install-units`: every unit, timer and drop-in it writes passes `systemd-analyze verify`
(Debian package systemd; no running systemd is needed), is hardened, and runs what the
configuration says when it says; packaging/systemd/ holds the same units rendered with the
defaults.

Run ``python -m tests.test_units`` to rewrite packaging/systemd/ after changing a template."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config import MamoriConfig, load_config
from mamori.units import JOBS, Installation, render_units

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging" / "systemd"
PACKAGED = Installation(
    mamori=PurePosixPath("/usr/bin/mamori"),
    config=PurePosixPath("/etc/mamori/mamori.toml"),
    store=PurePosixPath("/var/lib/mamori"),
)

CONFIG = """
store = "{store}"
[collector]
listen = ["udp://0.0.0.0:2055"]
[collector.groups.sflow]
listen = ["udp://0.0.0.0:6343"]
[collector.groups.syslog_nat]
listen = ["udp://[::]:514"]
[web]
port = 443
[schedule.purge]
on_calendar = "Sun *-*-* 04:15:00"
overdue_after_hours = 200
[schedule.detect_infected]
on_calendar = "*-*-* *:00/5:00"
since = "-30m"
overdue_after_hours = 1
"""


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail(
            "systemd-analyze not installed: apt-get install -y systemd (packaging/apt-packages.txt)",
            pytrace=False,
        )
    return exe


def _verify(*units: Path) -> subprocess.CompletedProcess[str]:
    # --man=no: the man pages named in Documentation= need not be installed here
    return subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Path, str]:
    """Units installed under a prefix by the command, for a configuration with three listener
    groups (one on a port below 1024) and a console on port 443."""
    store = tmp_path / "store"
    exe = tmp_path / "bin" / "mamori"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    config = tmp_path / "mamori.toml"
    config.write_text(CONFIG.format(store=store))
    prefix = tmp_path / "root"
    r = runner.invoke(
        app,
        ["--config", str(config), "install-units", "--prefix", str(prefix), "--mamori", str(exe)],
    )
    assert r.exit_code == 0, r.output
    return prefix, store, r.output


def test_every_unit_passes_systemd_analyze_verify(installed: tuple[Path, Path, str]) -> None:
    prefix, _, output = installed
    system = prefix / "etc" / "systemd" / "system"
    written = {
        Path(line.removeprefix("wrote "))
        for line in output.splitlines()
        if line.startswith("wrote ")
    }
    on_disk = {p for p in prefix.rglob("*") if p.is_file()}
    assert written == on_disk  # it prints every file it wrote, and writes nothing else
    to_check = [
        *(system / f"mamori-collect@{g}.service" for g in ("default", "sflow", "syslog_nat")),
        system / "mamori-web.service",
        system / "mamori-resolver-sync.service",
        *sorted(system.glob("mamori-*.timer")),
        *(system / f"{name}.service" for name in JOBS),
    ]
    assert len(sorted(system.glob("*.timer"))) == len(JOBS) == 5
    r = _verify(*to_check)
    # a unit error exits non-zero; an unknown or misspelt directive is only a warning: neither
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def test_verify_catches_a_bad_unit(installed: tuple[Path, Path, str]) -> None:
    """The check above can fail: a misspelt directive and a missing executable are reported."""
    prefix, _, _ = installed
    system = prefix / "etc" / "systemd" / "system"
    unit = system / "mamori-web.service"
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    r = _verify(unit)
    assert "ProtectSytem" in r.stdout + r.stderr
    (prefix.parent / "bin" / "mamori").unlink()
    assert _verify(system / "mamori-purge.service").returncode != 0


def test_units_are_hardened(installed: tuple[Path, Path, str]) -> None:
    prefix, store, _ = installed
    system = prefix / "etc" / "systemd" / "system"
    services = [p for p in system.glob("*.service")]
    assert len(services) == 3 + len(JOBS)
    for unit in services:
        text = unit.read_text()
        assert "ProtectSystem=strict" in text, unit
        assert f"ReadWritePaths={store}\n" in text, unit  # the store, nothing else
        assert "User=mamori" in text and "NoNewPrivileges=yes" in text, unit
        assert "--log-format json" in text, unit
        caps = [line for line in text.splitlines() if line.startswith("AmbientCapabilities=")]
        if unit.name == "mamori-web.service":  # port 443
            assert caps[-1] == "AmbientCapabilities=CAP_NET_BIND_SERVICE"
        else:
            assert caps == ["AmbientCapabilities="], unit
    collect = (system / "mamori-collect@.service").read_text()
    assert "Restart=on-failure" in collect
    assert "KillSignal=SIGTERM" in collect and "TimeoutStopSec=120s" in collect
    assert "collect --group %i" in collect
    # only the group on port 514 gets the capability to bind it
    dropins = sorted(p.relative_to(system).as_posix() for p in system.glob("*.d/*.conf"))
    assert dropins == ["mamori-collect@syslog_nat.service.d/10-privileged-port.conf"]
    assert "CAP_NET_BIND_SERVICE" in (system / dropins[0]).read_text()
    for name in ("mamori-web.service", "mamori-collect@default.service"):
        r = subprocess.run(
            [_systemd_analyze(), "security", "--offline=yes", "--threshold=30", str(system / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        assert "OK" in r.stdout.splitlines()[-1], r.stdout.splitlines()[-1]


def test_timers_follow_the_schedule(installed: tuple[Path, Path, str]) -> None:
    prefix, store, _ = installed
    system = prefix / "etc" / "systemd" / "system"
    assert "OnCalendar=Sun *-*-* 04:15:00\n" in (system / "mamori-purge.timer").read_text()
    assert "OnCalendar=*-*-* *:00/5:00\n" in (system / "mamori-detect-infected.timer").read_text()
    infected = (system / "mamori-detect-infected.service").read_text()
    assert "detect infected --since -30m\n" in infected and "Type=oneshot" in infected
    assert "notify --send\n" in (system / "mamori-notify.service").read_text()
    report = (system / "mamori-report-transparency.service").read_text()
    assert (
        f"--period previous --json --out {store}/_state/reports/transparency-{{period}}.json"
        in report
    )
    defaults = load_config(overrides={"store": store}).schedule
    for name, (job, _, _) in JOBS.items():
        expr = getattr(defaults, job).on_calendar
        r = subprocess.run(
            [_systemd_analyze(), "calendar", expr], capture_output=True, text=True, check=False
        )
        assert r.returncode == 0, (name, expr, r.stderr)


def test_paths_a_unit_cannot_hold_are_refused(tmp_path: Path) -> None:
    exe = tmp_path / "bin" / "mamori"
    r = runner.invoke(
        app,
        [
            "--store",
            str(tmp_path / "my store"),
            "install-units",
            "--prefix",
            str(tmp_path / "r"),
            "--mamori",
            str(exe),
        ],
    )
    assert r.exit_code == 1 and "cannot be written into a unit" in r.output
    assert not (tmp_path / "r").exists()
    r = runner.invoke(app, ["--store", str(tmp_path), "install-units", "--user", "x y"])
    assert r.exit_code == 1 and "not a system user name" in r.output


def test_a_schedule_cannot_inject_directives() -> None:
    with pytest.raises(ValueError, match="printable"):
        MamoriConfig.model_validate(
            {
                "schedule": {
                    "purge": {
                        "on_calendar": "daily\nExecStartPre=/bin/sh",
                        "overdue_after_hours": 1,
                    }
                }
            }
        )


def _packaged() -> dict[str, str]:
    """packaging/systemd/: the units as a distribution package installs them."""
    units = render_units(load_config(overrides={"store": Path("/var/lib/mamori")}), PACKAGED)
    out = {}
    for u in units:
        parts = u.path.parts
        rel = (
            "/".join(parts[3:])
            if parts[:3] == ("etc", "systemd", "system")
            else "/".join(parts[1:])
        )
        out[rel] = u.text
    return out


def test_packaging_holds_the_rendered_defaults() -> None:
    want = _packaged()
    have = {
        p.relative_to(PACKAGING).as_posix(): p.read_text()
        for p in PACKAGING.rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    assert have == want, "packaging/systemd/ is stale: run python -m tests.test_units"


def test_packaged_units_verify(tmp_path: Path) -> None:
    """The packaged units, with the executable path pointed at one that exists here."""
    exe = tmp_path / "mamori"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    for rel, text in _packaged().items():
        if "/" not in rel:
            (tmp_path / rel).write_text(text.replace("/usr/bin/mamori", str(exe)))
    r = _verify(*sorted(tmp_path.glob("mamori-*.timer")), tmp_path / "mamori-web.service")
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


if __name__ == "__main__":
    for rel, text in _packaged().items():
        path = PACKAGING / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
