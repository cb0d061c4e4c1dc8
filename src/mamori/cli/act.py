"""`mamori act`: turn findings and lists into actions (RPZ zones, the resolver's consent policy,
the warning page)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mamori.cli.common import STATE, actor_name, err, fail, out

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
    for z in result.zones:
        out.print(
            f"{z.measure} {z.zone} serial {z.serial}: {z.names:,} names, {z.ips:,} addresses "
            f"(rpz-ip) ({z.records:,} records, "
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


class FilterKind(StrEnum):
    reflection = "reflection"
    spoofing = "spoofing"


class FilterRender(StrEnum):
    nftables = "nftables"
    junos = "junos"
    iosxr = "iosxr"
    flowspec = "flowspec"


def render_filter(kind: FilterKind, target: FilterRender, action_id: str) -> str:
    """The configuration text of a standing filter for one target (no side effects)."""
    from mamori.act.flowspec import flowspec_reflection
    from mamori.act.nft import render_reflection
    from mamori.act.reflection import reflection_plan
    from mamori.act.routers import iosxr_reflection, junos_reflection

    cfg = STATE.config()
    if kind is FilterKind.spoofing:
        from mamori.act.antispoof import iosxr_antispoof, junos_antispoof, nft_antispoof

        renders = {
            FilterRender.nftables: nft_antispoof,
            FilterRender.junos: junos_antispoof,
            FilterRender.iosxr: iosxr_antispoof,
        }
        if target not in renders:
            fail("spoofing: uRPF and ACLs are rendered for nftables, junos and iosxr", code=2)
        try:
            return renders[target](cfg, action_id)
        except ValueError as exc:
            fail(str(exc))
    plan = reflection_plan(cfg)
    if not plan.prefixes:
        fail("the address plan has no dynamic pool: nothing to filter (seeds/001: dynamic only)")
    if target is FilterRender.nftables:
        return render_reflection(plan, cfg.network.nft, action_id).text
    if target is FilterRender.junos:
        return junos_reflection(plan, action_id, cfg.network.nft.table_prefix)
    if target is FilterRender.iosxr:
        return iosxr_reflection(plan, action_id, cfg.network.nft.table_prefix)
    return flowspec_reflection(plan, action_id)


@act_app.command("filters")
def act_filters(
    kind: Annotated[
        FilterKind,
        typer.Option(
            "--kind",
            help="reflection (M10): inbound UDP to the reflection ports of dynamic pools only; "
            "spoofing (M13, BCP 38): uRPF and ACLs of customer-facing interfaces",
        ),
    ] = FilterKind.reflection,
    render: Annotated[
        FilterRender | None,
        typer.Option("--render", help="print the configuration for this target"),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="write the rendering here instead of stdout")
    ] = None,
    apply_: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="put it in force on the Linux router ([network.nft] command) as an M10 action "
            "(proposed, approved by you, applied; ends the filter it replaces)",
        ),
    ] = False,
) -> None:
    """Standing filters built from the address plan. Reflection: requests from outside to the
    reflection ports ([network.reflection] protocols, each with its reason) of dynamic pools are
    dropped; static pools and the ISP's resolvers ([network] resolvers) never are (seeds/001).
    Junos, IOS-XR and FlowSpec renderings are for the operator to load; --apply drives nftables
    and records the action with its legal basis (justified act)."""
    from mamori.act.nft import NftBackend, NftError
    from mamori.act.reflection import apply_reflection

    if render is None and not apply_:
        fail("say what to do: --render nftables|junos|iosxr|flowspec, or --apply", code=2)
    if apply_ and kind is not FilterKind.reflection:
        fail("--apply drives reflection filters only; load the spoofing rendering", code=2)
    if render is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        text = render_filter(kind, render, f"(rendered {stamp}, not applied by Mamori)")
        if out_file is None:
            typer.echo(text, nl=False)
        else:
            out_file.write_text(text, encoding="utf-8")
            err.print(f"{render.value} rendering written to {out_file}", highlight=False)
    if apply_:
        gov = STATE.gov()
        try:
            action = apply_reflection(gov, actor_name(), NftBackend(gov.config))
        except (NftError, ValueError) as exc:
            fail(str(exc))
        err.print(
            f"{action.measure} {action.kind} {action.action_id} applied to {action.target} "
            f"until {action.expires:%Y-%m-%d %H:%M} UTC ({action.legal_basis})",
            highlight=False,
        )


@act_app.command("c2-block")
def act_c2_block(
    watch_: Annotated[
        bool,
        typer.Option(
            "--watch", help="keep running: re-sync whenever consent, allocations or lists change"
        ),
    ] = False,
    interval: Annotated[
        float | None, typer.Option("--interval", help="seconds between checks with --watch")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="apply a new version of the C&C list even if unchanged")
    ] = False,
) -> None:
    """Block traffic between consenting subscribers (M7) and the C&C endpoints the lists name,
    on a Linux BNG's nftables ([network.nft] command): one set of consenting subscriber addresses
    (opted-out subscribers never in it), one of C&C address.protocol.port. A withdrawn consent
    applies at the next poll. Each new version of the C&C list is an M7 action (consent)."""
    import threading

    from mamori.act.c2_block import C2SyncResult, sync_c2_block, watch_c2_block
    from mamori.act.nft import NftError

    gov = STATE.gov()

    def show(r: C2SyncResult) -> None:
        what = "new list version" if r.renewed else "subscribers updated"
        out.print(
            f"{datetime.now(UTC):%H:%M:%S} {r.endpoints:,} C&C endpoints, {r.subscribers:,} "
            f"consenting addresses; {what} ({r.action_id}, {r.seconds:.2f} s)",
            highlight=False,
        )

    if not watch_:
        try:
            show(sync_c2_block(gov, actor_name(), force=force))
        except NftError as exc:
            fail(str(exc))
        return
    stop = threading.Event()
    try:
        watch_c2_block(gov, actor_name(), interval_s=interval, stop=stop, on_sync=show)
    except KeyboardInterrupt:
        stop.set()


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
