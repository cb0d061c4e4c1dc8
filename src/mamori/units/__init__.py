"""systemd units and timers that run Mamori as a service (``mamori install-units``).

The units are rendered from the templates beside this module with the installation's paths (the
``mamori`` executable, the configuration file, the store) and the timers' schedules from
``[schedule]`` in ``mamori.toml``. ``packaging/systemd/`` in the source tree holds them rendered
with the defaults, for distribution packagers; a test keeps the two in step.

Every unit runs as one system user (created by ``systemd-sysusers``) rather than with
``DynamicUser=``: several units share the store, and a dynamic user's id would make systemd chown
the whole store (terabytes of flows) whenever it changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path, PurePosixPath

from mamori.config import MamoriConfig, ScheduledJob

__all__ = ["JOBS", "Installation", "Unit", "install", "render_units"]

#: timer name → ([schedule] job, what it does, the command it runs, without the window)
JOBS: dict[str, tuple[str, str, str]] = {
    "mamori-detect-c2": ("detect_c2", "discover C&C servers (M2)", "detect c2"),
    "mamori-detect-infected": ("detect_infected", "match infected hosts (M4)", "detect infected"),
    "mamori-notify": ("notify", "queue and send alerts to subscribers", "notify --send"),
    "mamori-purge": ("purge", "enforce retention", "purge"),
    "mamori-report-transparency": (
        "transparency",
        "monthly transparency report",
        # {period} is the month reported (mamori report transparency --out)
        "report transparency --period previous --json "
        "--out @STORE@/_state/reports/transparency-{period}.json",
    ),
}
PRIVILEGED_PORT = 1024
_BIND_CAPS = (
    "# a port below 1024: the one capability that binding it needs\n"
    "AmbientCapabilities=CAP_NET_BIND_SERVICE\n"
    "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"
)


@dataclass(frozen=True)
class Installation:
    """Where things are on the machine the units run on."""

    mamori: PurePosixPath  # the mamori executable
    config: PurePosixPath  # mamori.toml
    store: PurePosixPath
    user: str = "mamori"


@dataclass(frozen=True)
class Unit:
    path: PurePosixPath  # relative to the root it is installed under, e.g. etc/systemd/system/x
    text: str


def _template(name: str) -> str:
    return (files("mamori.units") / "templates" / f"{name}.in").read_text(encoding="utf-8")


_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


def _fill(text: str, values: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m[1] not in values:
            raise ValueError(f"template placeholder {m[0]} has no value")
        return values[m[1]]

    # an empty value (no capability needed) leaves no blank lines behind
    return re.sub(r"\n{3,}", "\n\n", _PLACEHOLDER.sub(sub, text))


_HOMES = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))
_TMPS = (PurePosixPath("/tmp"), PurePosixPath("/var/tmp"))  # noqa: S108 - paths to recognise


def _under(inst: Installation, roots: tuple[PurePosixPath, ...]) -> bool:
    paths = (inst.mamori, inst.config, inst.store)
    return any(p == r or r in p.parents for p in paths for r in roots)


def _port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def _rw_paths(config: MamoriConfig, store: PurePosixPath, *, dns: bool = False) -> str:
    """The store, and for the resolver sync the zone and client-tag files where they are kept
    outside it (dns.rpz_dir, dns.clients_file)."""
    paths = [store]
    if dns:
        extras = [config.dns.rpz_dir]
        if config.dns.clients_file is not None:
            extras.append(config.dns.clients_file.parent)
        for extra in extras:
            if extra is not None:
                p = PurePosixPath(Path(extra).absolute())
                if p != store and store not in p.parents:
                    paths.append(_plain(p))
    return " ".join(str(p) for p in paths)


_UNSAFE = set(" \t\n\"'\\%$;")


def _plain(path: PurePosixPath) -> PurePosixPath:
    """A path as a unit file can hold it: no spaces, quotes, specifiers or variables."""
    if _UNSAFE & set(str(path)):
        raise ValueError(
            f"{path}: a path with spaces, quotes, % or $ cannot be written into a unit; "
            "use a plain one (a symbolic link will do)"
        )
    return path


def _job_command(command: str, job: ScheduledJob) -> str:
    return f"{command} --since {job.since}" if job.since else command


def render_units(config: MamoriConfig, inst: Installation) -> list[Unit]:
    """Every unit, timer, drop-in and system configuration file, rendered."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", inst.user):
        raise ValueError(f"{inst.user!r} is not a system user name")
    base = {
        "MAMORI": str(_plain(inst.mamori)),
        "CONFIG": str(_plain(inst.config)),
        "STORE": str(_plain(inst.store)),
        "USER": inst.user,
    }
    system = PurePosixPath("etc/systemd/system")

    def hardening(*, dns: bool = False) -> str:
        return _fill(
            _template("hardening"),
            {
                "RW_PATHS": _rw_paths(config, inst.store, dns=dns),
                # home directories hidden, unless Mamori itself lives there (a virtual
                # environment in a home directory): then only read-only
                "PROTECT_HOME": "read-only" if _under(inst, _HOMES) else "yes",
                # a private /tmp would hide a store kept in /tmp (tests, trials)
                "PRIVATE_TMP": "no" if _under(inst, _TMPS) else "yes",
            },
        )

    web_caps = _BIND_CAPS if config.web.port < PRIVILEGED_PORT else ""
    units = [
        Unit(
            system / "mamori-collect@.service",
            _fill(_template("mamori-collect@.service"), {**base, "HARDENING": hardening()}),
        ),
        Unit(
            system / "mamori-web.service",
            _fill(
                _template("mamori-web.service"),
                {**base, "HARDENING": hardening(), "WEB_CAPS": web_caps},
            ),
        ),
        Unit(
            system / "mamori-resolver-sync.service",
            _fill(
                _template("mamori-resolver-sync.service"),
                {**base, "HARDENING": hardening(dns=True)},
            ),
        ),
    ]
    for group, listens in config.collector.listen_groups().items():
        if any(_port(u) < PRIVILEGED_PORT for u in listens):
            units.append(
                Unit(
                    system / f"mamori-collect@{group}.service.d" / "10-privileged-port.conf",
                    f"# group {group} listens on a port below 1024\n[Service]\n{_BIND_CAPS}\n",
                )
            )
    for name, (job_name, description, command) in JOBS.items():
        job: ScheduledJob = getattr(config.schedule, job_name)
        values = {
            **base,
            "NAME": name,
            "JOB": job_name,
            "DESCRIPTION": description,
            "SCHEDULE": job.on_calendar,
        }
        values["COMMAND"] = _fill(_job_command(command, job), base)
        units.append(
            Unit(
                system / f"{name}.service",
                _fill(_template("job.service"), {**values, "HARDENING": hardening()}),
            )
        )
        units.append(Unit(system / f"{name}.timer", _fill(_template("job.timer"), values)))
    units.append(
        Unit(PurePosixPath("etc/sysusers.d/mamori.conf"), _fill(_template("sysusers.conf"), base))
    )
    units.append(
        Unit(PurePosixPath("etc/tmpfiles.d/mamori.conf"), _fill(_template("tmpfiles.conf"), base))
    )
    return units


def install(units: list[Unit], prefix: Path) -> list[Path]:
    """Write ``units`` under ``prefix`` (``/`` for the running system); returns the paths."""
    written = []
    for unit in units:
        path = prefix / unit.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(unit.text, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(path)
        written.append(path)
    return written
