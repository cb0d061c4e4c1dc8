"""`mamori notify`: alert subscribers by e-mail (M5, M6, M9)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from mamori.cli.common import STATE, actor_name, err, out, records_run, run_count

notify_app = typer.Typer(
    help="Alert subscribers by e-mail (M5 infected devices, M6 takedown victims, M9 "
    "vulnerable devices)."
)


@notify_app.callback(invoke_without_command=True)
@records_run("notify", unless=("dry_run",))
def notify(
    ctx: typer.Context,
    send: Annotated[
        bool, typer.Option("--send", help="also send queued alerts now through the SMTP server")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="show what would be queued; store nothing and send nothing"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Turn new findings (own detections and loaded reports) into alerts: decide the legal basis
    (consent; justified act when the configured risk test holds; emergency for M6), look up the
    subscriber (opted-out subscribers are not looked up under consent), open or update the
    abuse-desk case (one per subscriber and cause) and queue one alert per case and interval.
    With --send, queued and failed alerts are sent (rate-limited; failures stay queued and are
    retried on the next run; exit status 75 when the SMTP server could not be reached). See
    `mamori notify status`."""
    if ctx.invoked_subcommand is not None:
        return
    from mamori.act.notify import queue_alerts, send_queued

    gov = STATE.gov()
    summaries = queue_alerts(gov, actor=actor_name(), dry_run=dry_run)
    sent = None if dry_run or not send else send_queued(gov, actor=actor_name())
    run_count(queued=sum(q.queued for q in summaries))
    if sent is not None:
        run_count(
            attempted=sent.attempted,
            **{f"state_{k}": v for k, v in sent.states.items()},
            server_down=int(bool(sent.server_down)),
        )
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "queued": [
                        {
                            "measure": q.measure,
                            "legal_basis": q.decision.basis,
                            "risk_test_holds": q.decision.risk_test_holds,
                            "decision": q.decision.reason,
                            "findings": q.findings,
                            "events": q.events,
                            "attribution": dict(q.attribution),
                            "cases_opened": q.cases_opened,
                            "cases_updated": q.cases_updated,
                            "escalated": q.escalated,
                            "alerts_queued": q.queued,
                        }
                        for q in summaries
                    ],
                    "sent": None
                    if sent is None
                    else {
                        "attempted": sent.attempted,
                        "states": dict(sent.states),
                        "deferred_by_rate_limit": sent.deferred_by_rate_limit,
                        "server_down": sent.server_down,
                        "errors": sent.errors[:20],
                    },
                    "dry_run": dry_run,
                },
                default=str,
            )
        )
        if sent is not None and sent.server_down:
            raise typer.Exit(75)  # EX_TEMPFAIL
        return
    for q in summaries:
        out.print(
            f"{q.measure}: {q.findings} new findings, {q.events} events; attribution "
            f"{dict(q.attribution) or '-'}; basis {q.decision.basis} ({q.decision.reason}); "
            f"cases {q.cases_opened} opened, {q.cases_updated} updated, {q.escalated} escalated; "
            f"{q.queued} alert(s) {'would be ' if dry_run else ''}queued",
            highlight=False,
        )
    if sent is not None:
        out.print(
            f"sent: {sent.attempted} attempted, {dict(sent.states) or '-'}; "
            f"{sent.deferred_by_rate_limit} deferred by the rate limit",
            highlight=False,
        )
        if sent.server_down:
            err.print(
                "the SMTP server could not be reached; the alerts stay queued and are retried "
                "on the next run",
                highlight=False,
            )
            raise typer.Exit(75)  # EX_TEMPFAIL


@notify_app.command("status")
def notify_status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Alerts by delivery state (queued, sent, failed, bounced, suppressed) and abuse-desk cases
    by desk status, per measure."""
    from mamori.act.notify import notification_status

    st = notification_status(STATE.gov(), actor=actor_name())
    if as_json:
        out.print_json(json.dumps(st))
        return
    t = Table(title="alerts and cases")
    for col in ("measure", "alerts by state", "cases by desk status"):
        t.add_column(col)
    for m, v in st.items():
        fmt_ = ", ".join(f"{k} {n}" for k, n in sorted(v["notifications"].items())) or "-"
        cases_ = ", ".join(f"{k} {n}" for k, n in sorted(v["cases"].items())) or "-"
        t.add_row(m, fmt_, cases_)
    out.print(t)


@notify_app.command("notice")
def notify_notice(
    everyone: Annotated[
        bool, typer.Option("--all", help="every subscriber in the directory not told yet")
    ] = False,
    subscriber: Annotated[
        list[str] | None, typer.Option("--subscriber", help="only this subscriber (repeatable)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count who would get it; send nothing")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Tell existing subscribers about the consent-based measures in their terms and how to
    opt out, in Japanese and English (seeds/002). Rate-limited by alerts.rate_limit_per_hour:
    run it again (e.g. hourly) until nobody is waiting; who was told is remembered, so nobody
    gets it twice. Audited (event `notice`)."""
    from mamori.act.notice import send_notice

    if not everyone and not subscriber:
        err.print("give --all or --subscriber ID")
        raise typer.Exit(2)
    gov = STATE.gov()
    s = send_notice(
        gov, actor_name(), subscribers=None if everyone else list(subscriber or []), dry_run=dry_run
    )
    if as_json:
        out.print_json(json.dumps(s.__dict__))
        return
    out.print(
        f"subscribers {s.subscribers:,}, told before {s.already:,}, sent now {s.sent:,}, "
        f"failed {s.failed:,}, waiting for the next run {s.waiting:,}"
        + (" (dry run)" if s.dry_run else "")
    )
