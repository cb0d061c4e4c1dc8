"""`mamori act`: turn findings and lists into actions (RPZ zones, the resolver's consent policy,
the warning page, router filters, BGP, SMTP AUTH refusals and suspensions)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mamori.cli.common import STATE, actor_name, err, fail, note_run, out, records_run, run_count

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
    from mamori.act.base import ActionKind, expire_due
    from mamori.act.share_action import ShareBackend

    gov = STATE.gov()
    # a share that expires is withdrawn from the next export (its back end needs the store)
    backends = {
        **default_backends(gov.config),
        ActionKind.SHARE: ShareBackend(gov, actor_name()),
    }
    done = expire_due(gov, actor_name(), backends=backends)
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


bgp_app = typer.Typer(
    help="Mitigation through BGP: FlowSpec and RTBH routes announced with ExaBGP, each an action "
    "(proposed, approved, announced, withdrawn at its expiry or by hand).",
    no_args_is_help=True,
)
act_app.add_typer(bgp_app, name="bgp")


class BgpKind(StrEnum):
    flowspec = "flowspec"
    rtbh = "rtbh"


def _bgp_actions(measure: str) -> dict[str, Any]:
    from mamori.act.base import ActionKind, current

    gov = STATE.gov()
    return {
        k: a
        for k, a in current(gov, actor_name(), [measure]).items()
        if a.kind in (ActionKind.FLOWSPEC, ActionKind.RTBH)
    }


def _announce(actions: list[Any]) -> None:
    from mamori.act.backends import default_backends
    from mamori.act.base import apply
    from mamori.act.bgp import BgpError

    gov = STATE.gov()
    backends = default_backends(gov.config)
    for a in actions:
        backend = backends[a.kind]
        detail = {"dry_run": True} if getattr(backend, "dry_run", False) else None
        try:
            [done] = apply(gov, [a], actor_name(), backend=backend, detail=detail)
        except BgpError as exc:
            fail(str(exc))
        dry = " (dry run: written to the log, not announced)" if detail else ""
        out.print(f"{done.kind} {done.action_id} announced: {done.target}{dry}", highlight=False)


@bgp_app.command("propose")
def bgp_propose(
    kind: Annotated[BgpKind, typer.Option("--kind", help="flowspec or rtbh")],
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="rtbh: a prefix (203.0.113.5/32); flowspec: "
            "dst=PREFIX[;src=PREFIX][;proto=udp|tcp|icmp][;sport=P,..][;dport=P,..];then=discard",
        ),
    ],
    minutes: Annotated[
        float | None,
        typer.Option("--minutes", help="expiry (default [network.bgp] default_expiry_minutes)"),
    ] = None,
    measure: Annotated[str, typer.Option("--measure", help="measure it rests on")] = "M13",
    basis: Annotated[
        str, typer.Option("--basis", help="self-defence | emergency | justified-act")
    ] = "self-defence",
    justification: Annotated[
        str | None, typer.Option("--justification", help="why the basis holds")
    ] = None,
    finding: Annotated[str | None, typer.Option("--finding", help="the finding behind it")] = None,
    attack_type: Annotated[
        str | None,
        typer.Option(
            "--attack-type",
            help="e.g. udp-amplification: when [network.bgp] auto_approve lists it, a policy "
            "approves and it is announced at once",
        ),
    ] = None,
) -> None:
    """Propose a FlowSpec or RTBH route; an operator approves it (`act bgp approve`) unless a
    policy does."""
    from datetime import timedelta

    from mamori.act.base import ActionKind, approve, propose
    from mamori.act.bgp import bgp_action
    from mamori.governance import LegalBasis

    gov = STATE.gov()
    cfg = gov.config.network.bgp
    try:
        proposal = bgp_action(
            ActionKind(kind.value),
            target,
            measure=measure,
            basis=LegalBasis(basis),
            justification=justification,
            finding_id=finding,
            expires_in=timedelta(minutes=minutes or cfg.default_expiry_minutes),
        )
        if kind is BgpKind.rtbh:
            from mamori.act.bgp import render_command

            render_command(proposal, cfg, "announce")  # refuses a prefix too large to blackhole
    except ValueError as exc:
        fail(str(exc), code=2)
    detail = {"attack_type": attack_type} if attack_type else None
    [a] = propose(gov, [proposal], actor_name(), detail=detail)
    out.print(f"{a.kind} {a.action_id} proposed until {a.expires:%Y-%m-%d %H:%M} UTC: {a.target}",
              highlight=False)  # fmt: skip
    if attack_type and attack_type in cfg.auto_approve:
        policy = f"policy:auto_approve:{attack_type}"
        [a] = approve(gov, [a], actor_name(), approved_by=policy, detail={"policy": policy})
        _announce([a])


@bgp_app.command("approve")
def bgp_approve(
    action_id: Annotated[str, typer.Argument(help="the proposed action")],
    announce: Annotated[bool, typer.Option("--announce", help="and announce it now")] = True,
    measure: Annotated[str, typer.Option("--measure")] = "M13",
) -> None:
    """Approve a proposed route (you are recorded as the approver) and announce it."""
    from mamori.act.base import InvalidTransition, approve

    a = _bgp_actions(measure).get(action_id)
    if a is None:
        fail(f"no FlowSpec/RTBH action {action_id!r} under {measure}")
    try:
        [done] = approve(STATE.gov(), [a], actor_name())
    except InvalidTransition as exc:
        fail(str(exc))
    out.print(f"{done.kind} {done.action_id} approved by {done.approved_by}", highlight=False)
    if announce:
        _announce([done])


@bgp_app.command("apply")
def bgp_apply(measure: Annotated[str, typer.Option("--measure")] = "M13") -> None:
    """Announce every approved FlowSpec/RTBH route not announced yet."""
    from mamori.act.base import ActionState

    _announce([a for a in _bgp_actions(measure).values() if a.state is ActionState.APPROVED])


@bgp_app.command("end")
def bgp_end(
    action_id: Annotated[str, typer.Argument(help="the announced action")],
    measure: Annotated[str, typer.Option("--measure")] = "M13",
) -> None:
    """Withdraw a route by hand (before its expiry; `act expire` withdraws the expired ones)."""
    from mamori.act.backends import default_backends
    from mamori.act.base import InvalidTransition, end
    from mamori.act.bgp import BgpError

    gov = STATE.gov()
    a = _bgp_actions(measure).get(action_id)
    if a is None:
        fail(f"no FlowSpec/RTBH action {action_id!r} under {measure}")
    try:
        [done] = end(gov, [a], actor_name(), backend=default_backends(gov.config)[a.kind])
    except (InvalidTransition, BgpError) as exc:
        fail(str(exc))
    out.print(f"{done.kind} {done.action_id} withdrawn: {done.target}", highlight=False)


@bgp_app.command("list")
def bgp_list(measure: Annotated[str, typer.Option("--measure")] = "M13") -> None:
    """FlowSpec and RTBH actions with their state (an expired one shows as expired)."""
    from mamori.act.base import effective_state

    now = datetime.now(UTC)
    for a in sorted(_bgp_actions(measure).values(), key=lambda a: a.created):
        state = effective_state({"state": a.state.value, "expires": a.expires}, now)
        typer.echo(f"{a.action_id}\t{a.kind}\t{state}\t{a.expires:%Y-%m-%d %H:%M}\t{a.target}")


@bgp_app.command("exabgp-config")
def bgp_exabgp_config(
    peer: Annotated[str, typer.Option("--peer", help="the router's address")],
    peer_as: Annotated[int, typer.Option("--peer-as")],
    local: Annotated[str, typer.Option("--local", help="ExaBGP's address")],
    local_as: Annotated[int, typer.Option("--local-as")],
) -> None:
    """Print an exabgp.conf that runs Mamori's relay ([network.bgp] api_socket) and speaks
    FlowSpec and unicast (RTBH) to one router."""
    import sys

    from mamori.act.bgp import exabgp_config

    sock = STATE.config().network.bgp.api_socket
    if sock is None:
        fail("set [network.bgp] api_socket first (the relay's socket)", code=2)
    typer.echo(
        exabgp_config(
            socket_path=sock,
            python=sys.executable,
            local_address=local,
            local_as=local_as,
            peer_address=peer,
            peer_as=peer_as,
        ),
        nl=False,
    )


def _smtp_logs(specs: list[str]) -> list[tuple[Path, Any]]:
    from mamori.ingest.mail import FORMATS

    logs: list[tuple[Path, Any]] = []
    for spec in specs:
        fmt, sep, path = spec.partition(":")
        if not sep or fmt not in FORMATS or not path:
            fail(f"--follow takes FORMAT:PATH with FORMAT one of {', '.join(FORMATS)}", code=2)
        logs.append((Path(path), fmt))
    return logs


@act_app.command("smtp")
def act_smtp(
    follow: Annotated[
        list[str] | None,
        typer.Option(
            "--follow",
            help="FORMAT:PATH of a live mail log to follow (postfix, dovecot, exim); repeatable. "
            "Without it: one pass over the stored findings",
        ),
    ] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="--follow: read what the logs hold first")
    ] = False,
    queue_every: Annotated[
        float | None,
        typer.Option("--queue-every", help="--follow: sample the mail queue every S seconds"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="one pass: findings detected from then on [default: 24 h]"),
    ] = None,
    prepare: Annotated[
        bool,
        typer.Option(
            "--prepare",
            help="only write the (empty) access map, nftables table and Dovecot deny file that "
            "the servers' configuration names, then exit",
        ),
    ] = False,
) -> None:
    """Refuse SMTP AUTH from brute-forcing addresses (M12: Postfix check_client_access map and/or
    an nftables set on the submission ports) and suspend compromised AUTH IDs (M11: Dovecot
    passdb deny file), telling the account's owner in Japanese and English. Every action has an
    expiry and is withdrawn by itself; with --follow, Mamori follows the live logs, detects and
    acts within seconds (see docs/smtp.md for main.cf and dovecot.conf)."""
    from mamori.act.smtp import act_on_findings, smtp_backends, withdraw_expired
    from mamori.act.smtp_backends import BackendError

    gov = STATE.gov()
    if prepare:
        try:
            for backend in smtp_backends(gov.config).values():
                backend.prepare()  # type: ignore[attr-defined]
        except BackendError as exc:
            fail(str(exc))
        out.print("access map, nftables table and deny file written", highlight=False)
        return
    if follow:
        from mamori.act.smtp_guard import SmtpGuard

        try:
            guard = SmtpGuard(
                gov,
                _smtp_logs(follow),
                actor=actor_name(),
                from_start=from_start,
                queue_every_s=queue_every,
            )
        except BackendError as exc:
            fail(str(exc))

        def show(step: Any) -> None:
            acted = step.acted
            if not (step.findings or step.expired or (acted and acted.applied)):
                return
            parts = [f"{len(step.findings)} new findings"]
            if acted is not None:
                parts += [f"{len(acted.applied)} applied", f"{len(acted.proposed)} proposed"]
                parts += [f"alert {k}: {v}" for k, v in acted.alerts.items()]
            parts.append(f"{len(step.expired)} expired")
            for a in [*(acted.applied if acted else []), *step.expired]:
                parts.append(f"{a.kind} {a.target} {a.state} until {a.expires:%H:%M:%S}")
            out.print(f"{step.at:%H:%M:%S} " + "; ".join(parts), highlight=False, markup=False)

        out.print(
            "following "
            + ", ".join(follow)
            + f"; refusals via {', '.join(gov.config.mail.refusal_backends)}",
            highlight=False,
            markup=False,
        )
        with contextlib.suppress(KeyboardInterrupt):
            guard.run(on_step=show)
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    from mamori.cli.common import parse_time

    start = parse_time(since) or datetime.now(UTC) - timedelta(hours=24)
    tables = []
    for measure in ("M12", "M11"):
        t = gov.open(measure, "findings", None, actor_name(), start=start).arrow()
        kinds = pa.array(["smtp-brute-force", "smtp-compromised"])
        tables.append(
            t.filter(
                pc.and_(pc.is_in(t.column("kind"), kinds), pc.equal(t.column("measure"), measure))
            )
        )
    report = act_on_findings(gov, pa.concat_tables(tables), actor=actor_name())
    for a in report.applied:
        out.print(f"{a.measure} {a.kind} {a.target}: applied until {a.expires}", highlight=False)
    for a in report.proposed:
        if a not in report.applied and a.state.value == "proposed":
            out.print(f"{a.measure} {a.kind} {a.target}: proposed", highlight=False)
    for k, v in report.alerts.items():
        out.print(f"owner alert {k}: {v}", highlight=False)
    expired = withdraw_expired(gov, actor_name())
    out.print(
        f"{len(report.applied)} applied, {len(report.proposed)} proposed, "
        f"{report.already_open} already answered, {len(expired)} expired",
        highlight=False,
    )


@act_app.command("smtp-restore")
def act_smtp_restore(
    target: Annotated[str, typer.Argument(help="the refused address or the suspended AUTH ID")],
    reason: Annotated[
        str, typer.Option("--reason", help="why it is restored (recorded in the audit log)")
    ],
) -> None:
    """End a refusal or suspension before its expiry (e.g. the owner changed the password): the
    back end withdraws it and the step is recorded with the reason and its legal basis."""
    from mamori.act.smtp import restore

    done = restore(STATE.gov(), target, actor=actor_name(), reason=reason)
    if not done:
        fail(f"{target}: no open refusal or suspension")
    for a in done:
        out.print(f"{a.measure} {a.kind} {a.target}: {a.state}", highlight=False)
