"""`mamori act`: turn findings and lists into actions (RPZ zones, the resolver's consent policy,
the warning page)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mamori.cli.common import STATE, actor_name, fail, note_run, out, records_run, run_count

act_app = typer.Typer(
    help="Turn findings and lists into actions: RPZ zones and the resolver's consent policy.",
    no_args_is_help=True,
)


class C2Action(StrEnum):
    nxdomain = "nxdomain"
    nodata = "nodata"
    drop = "drop"
    cname_warning = "cname-warning"


def _control(command: str | None) -> Any:
    import shlex

    from mamori.act.resolver import resolver_control

    cfg = STATE.config()
    return resolver_control(shlex.split(command) if command else cfg.dns.resolver_control)


@act_app.command("rpz")
@records_run("rpz")
def act_rpz(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="directory for the zone files (default: dns.rpz_dir)"),
    ] = None,
    c2_action: Annotated[
        C2Action | None,
        typer.Option("--c2-action", help="answer for C&C names (default: dns.c2_action)"),
    ] = None,
    warning_host: Annotated[
        str | None,
        typer.Option("--warning-host", help="host serving the warning page (malware, phishing)"),
    ] = None,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload", help="then tell the resolver (Unbound: auth_zone_reload; BIND: rndc reload)"
        ),
    ] = False,
    resolver_control: Annotated[
        str | None,
        typer.Option(
            "--resolver-control",
            "--unbound-control",
            help='e.g. "unbound-control -c FILE"; "rndc -c FILE" for BIND 9',
        ),
    ] = None,
) -> None:
    """Write the RPZ zones from the reputation lists in force: C&C names (M7, blocked) and
    malware/phishing sites (M8, sent to the warning page). Serials always increase; files are
    replaced atomically, so resolvers never read half a zone. See docs/dns.md for unbound.conf."""
    from mamori.act.resolver import ResolverError
    from mamori.act.rpz import generate_rpz

    gov = STATE.gov()
    result = generate_rpz(
        gov,
        actor_name(),
        out_dir=out_dir,
        c2_action=c2_action.value if c2_action else None,
        warning_host=warning_host,
    )
    run_count(**{f"names_{z.measure}": z.names for z in result.zones})
    for z in result.zones:
        out.print(
            f"{z.measure} {z.zone} serial {z.serial}: {z.names:,} names ({z.records:,} records, "
            f"{z.rejected:,} unusable entries) -> {z.path} in {z.seconds:.2f} s",
            highlight=False,
        )
    if reload:
        ctl = _control(resolver_control)
        try:
            for z in result.zones:
                ctl.reload_zone(z.zone, z.measure)
        except ResolverError as exc:
            fail(str(exc))


@act_app.command("expire")
def act_expire() -> None:
    """Record every action past its expiry as expired (every action ends): what is still in force
    is withdrawn by its kind's back end first (an RPZ zone not rebuilt in time is emptied)."""
    from mamori.act.backends import default_backends
    from mamori.act.base import expire_due

    gov = STATE.gov()
    done = expire_due(gov, actor_name(), backends=default_backends(gov.config))
    for a in done:
        out.print(f"{a.measure} {a.kind} {a.action_id}: expired at {a.expires}", highlight=False)
    out.print(f"{len(done):,} actions expired", highlight=False)


@act_app.command("resolver-sync")
def act_resolver_sync(
    watch_: Annotated[
        bool,
        typer.Option(
            "--watch", help="keep running: re-sync whenever consent, allocations or lists change"
        ),
    ] = False,
    zones: Annotated[bool, typer.Option("--zones", help="also regenerate the RPZ zones")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="reload the resolver even if unchanged")
    ] = False,
    prepare: Annotated[
        bool,
        typer.Option(
            "--prepare",
            help="only write the files the resolver's configuration needs (first start)",
        ),
    ] = False,
    interval: Annotated[
        float | None, typer.Option("--interval", help="seconds between checks with --watch")
    ] = None,
    resolver_control: Annotated[
        str | None,
        typer.Option(
            "--resolver-control",
            "--unbound-control",
            help='e.g. "unbound-control -c FILE"; "rndc -c FILE" for BIND 9 (rndc reconfig)',
        ),
    ] = None,
) -> None:
    """Apply consent on the resolver: tag the addresses of subscribers who are in for M7 (C&C
    blocking) and M8 (warning page) so Unbound applies each zone to them only. Withdrawn consent
    applies within a second (opt-out zone); Unbound is never restarted (reload_keep_cache). With
    an rndc command, BIND 9's client ACLs are rewritten and applied by `rndc reconfig`."""
    import threading

    from mamori.act.resolver import ResolverError, prepare_resolver_files, sync_resolver, watch

    gov = STATE.gov()
    if prepare:
        built = prepare_resolver_files(gov, actor_name())
        out.print(f"zones and client tags written ({len(built.zones)} zones)", highlight=False)
        return
    ctl = _control(resolver_control)

    def show(r: Any) -> None:
        note_run(
            "resolver-sync",
            r.seconds,
            {
                "clients_M7": r.clients.get("M7", 0),
                "clients_M8": r.clients.get("M8", 0),
                "reloaded": int(bool(r.changed)),
            },
        )
        state = "reloaded" if r.changed else ("pending reload" if r.pending else "unchanged")
        out.print(
            f"{datetime.now(UTC):%H:%M:%S} clients M7 {r.clients.get('M7', 0):,}, "
            f"M8 {r.clients.get('M8', 0):,}; opt-out zone {r.passthru}; {state} "
            f"({r.seconds:.2f} s)",
            highlight=False,
        )

    if not watch_:
        try:
            show(sync_resolver(gov, actor_name(), control=ctl, zones=zones, force=force))
        except ResolverError as exc:
            note_run("resolver-sync", 0.0, {}, ok=False)
            fail(str(exc))
        return
    stop = threading.Event()
    try:
        watch(gov, actor_name(), control=ctl, interval_s=interval, stop=stop, on_sync=show)
    except KeyboardInterrupt:
        stop.set()


class ResolverKind(StrEnum):
    unbound = "unbound"
    bind = "bind"


@act_app.command("resolver-config")
def act_resolver_config(
    kind: Annotated[
        ResolverKind,
        typer.Option("--kind", help="unbound: unbound.conf lines; bind: named.conf views (BIND 9)"),
    ] = ResolverKind.unbound,
) -> None:
    """Print the resolver configuration that loads Mamori's zones and applies consent: unbound.conf
    lines (client tags), or with --kind bind the named.conf ACL include and views."""
    from mamori.act.resolver import bind_snippet, unbound_snippet

    snippet = bind_snippet if kind is ResolverKind.bind else unbound_snippet
    typer.echo(snippet(STATE.config()), nl=False)


@act_app.command("warning-page")
def act_warning_page(
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="port (80 behind the warning host name)")
    ] = 8081,
) -> None:
    """Serve the warning page (M8) that listed sites resolve to: every host name, every path."""
    import uvicorn

    from mamori.web.warning import create_warning_app

    uvicorn.run(create_warning_app(STATE.config(), STATE.gov()), host=host, port=port)
