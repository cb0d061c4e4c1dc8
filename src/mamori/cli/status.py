"""`mamori status`: the installation on one screen, and a monitoring check (exit status 1 when
something needs a person)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mamori.cli.common import STATE, actor_name, out, parse_time

_MARK = {"ok": "[green]ok[/]", "note": "[yellow]note[/]", "attention": "[bold red]ATTENTION[/]"}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    now: Annotated[
        str | None, typer.Option("--now", help="judge ages as of this time (ISO 8601)")
    ] = None,
) -> None:
    """Each stage's last run and outcome, the collectors' rate and drops, store size and oldest
    data per dataset, the audit chain, pending approvals and alerts, and anything overdue. Exit
    status 1 when something needs a person (a failed or overdue stage, a stopped collector, data
    past its retention, a broken audit chain), so it can serve as a monitoring check. Its reads
    go through governance and are audited."""
    from mamori.web.health import gather

    health = gather(STATE.gov(), actor=actor_name(), now=parse_time(now))
    if as_json:
        typer.echo(json.dumps(health.as_dict(), sort_keys=True, default=str))
        raise typer.Exit(1 if health.needs_attention else 0)

    t = Table(title="stages", title_justify="left")
    for col in ("stage", "does", "state", "last run"):
        t.add_column(col)
    for s in health.stages:
        t.add_row(s.stage, s.what, _MARK[s.state], escape(s.summary))
    out.print(t)
    c = Table(title="collectors", title_justify="left")
    for col in ("group", "state", "records/s", "drops", "errors", "summary"):
        c.add_column(col, justify="right" if col in ("records/s", "drops", "errors") else "left")
    for h in health.collectors:
        c.add_row(
            h.group,
            _MARK[h.state],
            f"{h.records_per_s:,.0f}",
            f"{h.drops:,}",
            f"{h.decode_errors:,}",
            escape(h.summary),
        )
    if health.collectors:
        out.print(c)
    else:
        out.print("collectors: none configured, none has run", highlight=False)
    d = Table(title="store", title_justify="left")
    for col in ("dataset", "size", "partitions", "oldest", "retention (days)", "purge"):
        d.add_column(col, justify="right" if col in ("size", "partitions") else "left")
    for ds in health.datasets:
        d.add_row(
            ds.dataset,
            _size(ds.bytes),
            str(ds.partitions),
            ds.oldest or "-",
            str(ds.retention_days),
            "[bold red]OVERDUE[/]" if ds.overdue else "ok",
        )
    out.print(d)
    audit = health.audit
    out.print(
        f"audit log: {'intact' if audit['ok'] else 'BROKEN'}, {audit['entries']:,} entries"
        + ("" if audit["ok"] else f" (entry {audit['broken_at']}: {audit['reason']})"),
        highlight=False,
    )
    pending = "-" if health.approvals_pending is None else str(health.approvals_pending)
    alerts = ", ".join(f"{k} {v:,}" for k, v in health.alerts.items()) or "none"
    out.print(f"approvals pending: {pending}; alerts: {alerts}", highlight=False)
    for line in health.notes:
        out.print(f"note: {escape(line)}", highlight=False)
    for line in health.attention:
        out.print(f"[bold red]needs attention:[/] {escape(line)}", highlight=False)
    if not health.attention:
        out.print("[green]nothing needs attention[/]")
    raise typer.Exit(1 if health.needs_attention else 0)
