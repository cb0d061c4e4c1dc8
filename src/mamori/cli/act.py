"""`mamori act`: turn findings and lists into actions (RPZ zones, the resolver's consent policy,
the warning page, SMTP AUTH refusals and suspensions)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mamori.cli.common import STATE, actor_name, fail, out

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
