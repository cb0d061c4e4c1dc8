"""`mamori consent`, `audit`, `purge` and `config`: the governance layer's own commands."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from mamori.cli.common import (
    STATE,
    actor_name,
    err,
    fail,
    out,
    parse_time,
    records_run,
    run_count,
)
from mamori.governance import ConsentError, catalogue, purge, retention_status
from mamori.schemas import DATASETS

# ------------------------------------------------------------------------------------- config

config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)


@config_app.command("check")
def config_check(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Validate mamori.toml plus MAMORI_* variables and print the effective configuration.

    An invalid file is reported key by key: the key, the value given and what is allowed.
    Exit status 2 when invalid.
    """
    cfg = STATE.config()
    cat = catalogue()
    problems = []
    for ds in DATASETS:
        limit = cat.retention_limit(ds)
        days = cfg.retention.days(ds)
        if limit is not None and days is not None and days > limit:
            problems.append(
                f"retention.{ds} = {days}: longer than any measure allows (at most {limit} days)"
            )
    data = cfg.public_dict()
    from mamori.detect.registry import DetectorConfigError, all_params

    try:
        # every detector's effective parameters: its defaults overlaid by [detect.NAME]
        data["detect"] = all_params(cfg.detect)
    except DetectorConfigError as exc:
        problems.append(str(exc))
    if as_json:
        out.print_json(json.dumps(data))
    else:
        _print_tree(data)
    if problems:
        fail("invalid configuration:\n  " + "\n  ".join(problems), code=2)
    err.print(
        f"configuration valid ({len(cfg.address_plan)} address pools, "
        f"{sum(cfg.measures.values())} of 14 measures on)"
    )


def _print_tree(data: Any, prefix: str = "") -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            _print_tree(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}")
        return
    out.print(f"{prefix.rstrip('.')} = {json.dumps(data)}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------ consent

consent_app = typer.Typer(
    help="A subscriber's consent setting per measure, with its full history.",
    no_args_is_help=True,
)


class ConsentValue(StrEnum):
    in_ = "in"
    out = "out"


@consent_app.command("set")
def consent_set(
    subscriber: Annotated[str, typer.Option("--subscriber", "-s", help="subscriber id")],
    measure: Annotated[str, typer.Option("--measure", "-m", help="consent-based measure, e.g. M4")],
    state: Annotated[ConsentValue, typer.Option("--state", help="in (consents) or out (opts out)")],
    via: Annotated[
        str,
        typer.Option("--via", help="how the subscriber asked: web, cli, api, terms, letter, phone"),
    ] = "cli",
    note: Annotated[
        str | None, typer.Option("--note", help="free text kept with the change")
    ] = None,
) -> None:
    """Change a subscriber's setting for one measure; it takes effect immediately.

    Every change is kept (who, when, how) and written to the audit log.
    """
    try:
        change = STATE.gov().consent.set(
            subscriber,
            measure.upper(),
            state is ConsentValue.in_,
            actor=actor_name(),
            channel=via,
            note=note,
        )
    except ConsentError as exc:
        fail(str(exc), code=2)
    out.print(
        f"{change.subscriber_id} {change.measure}: {change.state} "
        f"from {change.changed.isoformat()} (via {change.channel})",
        highlight=False,
    )


@consent_app.command("show")
def consent_show(
    subscriber: Annotated[str, typer.Option("--subscriber", "-s", help="subscriber id")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a subscriber's current setting for every consent-based measure and the history."""
    gov = STATE.gov()
    history = gov.consent.history(subscriber, actor=actor_name())
    current = gov.consent.current_from(history)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "subscriber": subscriber,
                    "current": [
                        {
                            "measure": c.measure,
                            "consented": c.consented,
                            "since": c.since.isoformat() if c.since else None,
                            "explicit": c.explicit,
                        }
                        for c in current
                    ],
                    "history": [{**h.__dict__, "changed": h.changed.isoformat()} for h in history],
                }
            )
        )
        return
    cat = gov.catalogue
    t = Table(title=f"consent of {subscriber}")
    for col in ("measure", "name", "setting", "since"):
        t.add_column(col)
    for c in current:
        t.add_row(
            c.measure,
            cat[c.measure].name,
            "in" if c.consented else "out",
            c.since.isoformat() if c.since else "default (terms)",
        )
    out.print(t)
    if history:
        h = Table(title="history")
        for col in ("changed", "measure", "state", "actor", "via", "note"):
            h.add_column(col)
        for row in history:
            h.add_row(
                row.changed.isoformat(),
                row.measure,
                row.state,
                row.actor,
                row.channel,
                row.note or "",
            )
        out.print(h)
    else:
        out.print("no changes recorded: the defaults of the terms apply")


# -------------------------------------------------------------------------------------- audit

audit_app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the hash chain of the audit log. Exit status 1 and the first broken entry if any
    byte was edited, or entries deleted, inserted, reordered or cut off the end."""
    result = STATE.gov().audit.verify()
    if result.ok:
        out.print(str(result), highlight=False)
        return
    fail(str(result))


@audit_app.command("tail")
def audit_tail(
    count: Annotated[int, typer.Option("--count", "-n", help="entries to show")] = 20,
) -> None:
    """Show the last entries of the audit log."""
    entries = list(STATE.gov().audit.entries())[-count:]
    t = Table()
    for col in ("seq", "time", "actor", "event", "measure", "basis", "dataset", "detail"):
        t.add_column(col)
    for e in entries:
        t.add_row(
            str(e.seq),
            e.ts,
            e.actor,
            e.event,
            e.measure or "",
            e.legal_basis or "",
            e.dataset or "",
            (e.detail or "")[:80],
        )
    out.print(t)


# -------------------------------------------------------------------------------------- purge


# `mamori purge`: a single command, registered on the root app in cli/__init__.py.
@records_run("purge", unless=("dry_run", "status"))
def purge_cmd(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report, delete nothing")] = False,
    now: Annotated[
        str | None, typer.Option("--now", help="pretend it is this time (ISO 8601)")
    ] = None,
    status: Annotated[
        bool,
        typer.Option(
            "--status", help="show oldest data per dataset and its limit instead of purging"
        ),
    ] = False,
) -> None:
    """Enforce retention now: delete hour partitions older than each dataset's retention, and
    match records whose alert was sent more than the grace period ago. Audited."""
    gov = STATE.gov()
    when = parse_time(now)
    if status:
        t = Table(title="retention status")
        for col in ("dataset", "retention (days)", "oldest partition", "partitions", "overdue"):
            t.add_column(col)
        for s in retention_status(gov, when):
            t.add_row(
                s.dataset,
                str(s.retention_days),
                s.oldest.isoformat() if s.oldest else "-",
                str(s.partitions),
                "YES" if s.overdue else "no",
            )
        out.print(t)
        return
    report = purge(gov, actor=actor_name(), now=when, dry_run=dry_run)
    run_count(partitions_deleted=report.partitions_deleted, rows_deleted=report.rows_deleted)
    verb = "would delete" if dry_run else "deleted"
    for d in report.datasets:
        out.print(
            f"{d.dataset}: {verb} {len(d.partitions)} partition(s), {d.rows} row(s) "
            f"older than {d.retention_days} days (before {d.cutoff.isoformat()})",
            highlight=False,
        )
    if report.matches_after_alert:
        out.print(
            f"matches: {verb} {report.matches_after_alert} record(s) whose alert was sent",
            highlight=False,
        )
    out.print(
        f"{verb} {report.partitions_deleted} partition(s), {report.rows_deleted} row(s) in all",
        highlight=False,
    )
