"""`mamori consent`, `audit`, `purge` and `config`: the governance layer's own commands."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
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
    data["engine_plan"] = cfg.engine_plan()
    if cfg.engine == "spark":
        problems += _spark_missing()
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


def _spark_missing() -> list[str]:
    """What ``engine = "spark"`` needs on this machine and lacks (the session is not started)."""
    import importlib.util
    import shutil

    missing = []
    if importlib.util.find_spec("pyspark") is None:
        missing.append('engine = "spark": pyspark is not installed (make venv installs it)')
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        missing.append('engine = "spark": no java on PATH (make apt installs default-jre-headless)')
    return missing


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

audit_app = typer.Typer(
    help=(
        "The append-only, hash-chained audit log, evident to those who do not own the store.\n\n"
        "Every entry hashes the one before it and HEAD records the last. With [audit] "
        "signing_key (the audit role's Ed25519 key from `audit keygen`, kept outside the store) "
        "every append signs HEAD, so HEAD cannot be rewritten without the key. `audit publish` "
        "(run it periodically, e.g. hourly from a timer) sends the signed head to a sink the "
        "store's owner cannot rewrite: syslog://HOST:PORT (RFC 5424 over TCP, octet counting) "
        "or file:PATH on another mount; the monthly transparency report carries the signed "
        "head too. `audit verify` checks the log against HEAD and every published head: fewer "
        "entries than a published head, or another hash at its entry, means the log was cut, "
        "deleted, or edited and its chain recomputed.\n\n"
        "Configuration: [audit] signing_key = PATH, public_key = 'ed25519:…' (or a file, or a "
        "list during a rotation; default: the signing key's), publish_to = [SINK, …]."
    ),
    no_args_is_help=True,
)


@audit_app.command("keygen")
def audit_keygen(
    out_path: Annotated[
        Path,
        typer.Option(
            "--out", metavar="PATH", help="where to write the private key (outside the store)"
        ),
    ],
) -> None:
    """Create the audit role's Ed25519 key: the private key goes to --out (mode 0600, never over
    an existing file), the public key to OUT.pub and the terminal. Refused inside the store."""
    from mamori.governance.audit_keys import AuditKeyError, generate_key

    try:
        public = generate_key(out_path, store=STATE.config().store)
    except (AuditKeyError, OSError) as exc:
        fail(str(exc), code=2)
    out.print(public, highlight=False, soft_wrap=True)
    err.print(
        f"private key: {out_path} (keep it with the audit role); public key: {out_path}.pub\n"
        f'mamori.toml:\n  [audit]\n  signing_key = "{out_path.resolve()}"\n'
        f'  public_key = "{public}"',
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@audit_app.command("publish")
def audit_publish(
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            metavar="SINK",
            help="syslog://HOST:PORT or file:PATH (repeatable); default [audit] publish_to",
        ),
    ] = None,
) -> None:
    """Verify the log, sign its head with [audit] signing_key and send it to each sink (a copy
    stays in the store). Refused without a key or when the log does not verify (exit 1)."""
    from mamori.governance.audit_publish import PublishError, publish_head

    cfg = STATE.config()
    sinks = list(to) if to else list(cfg.audit.publish_to)
    try:
        head = publish_head(STATE.gov().audit, sinks, store=cfg.store)
    except PublishError as exc:
        fail(str(exc))
    out.print(
        f"published the head of entry {head.seq} ({head.hash[:16]}…, signed {head.ts}) to "
        + ", ".join(sinks),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@audit_app.command("verify")
def audit_verify(
    published: Annotated[
        list[Path] | None,
        typer.Option(
            "--published",
            metavar="FILE",
            help="a file of published heads: a file sink, a syslog collector's file, a saved "
            "transparency report in JSON (repeatable); the configured file sinks are read anyway",
        ),
    ] = None,
) -> None:
    """Check the hash chain, HEAD's signature and the log against every published head. Exit
    status 1 and the first broken entry if any byte was edited, or entries deleted, inserted,
    reordered or cut off the end; if HEAD was rewritten without the key; if the log lacks an
    entry that was published, or has another hash there (an empty or missing log included)."""
    from mamori.governance.audit_keys import read_heads

    given = []
    for path in published or ():
        try:
            given += read_heads(path)
        except (OSError, ValueError) as exc:
            fail(f"cannot read published heads from {path}: {exc}", code=2)
    result = STATE.gov().audit.verify(given)
    if result.ok:
        out.print(str(result), highlight=False, markup=False, soft_wrap=True)
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
    """Enforce retention now: delete hour partitions older than each dataset's retention, match
    records whose alert was sent more than the grace period ago, and partitions of observed
    events dated in the future (retention.future_tolerance_hours); in the abuse desk's case book,
    strip notes and assignees of cases governance no longer returns (opt-out, purged) and drop
    those past retention.cases; drop analysts' verdicts past retention.findings, and strip who
    and which finding from allowlist entries past it (the address stays allowlisted). Audited."""
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
    # the console's files outside the datasets: the desk's case book and the analysts' verdicts
    from mamori.act.casebook import CaseBook
    from mamori.detect.reviews import Reviews

    book = CaseBook(gov).prune(actor_name(), now=when, dry_run=dry_run)
    verdicts = Reviews(gov).prune(actor_name(), now=when, dry_run=dry_run)
    from mamori.ingest.reputation.allowlist import prune_allowlist

    stripped = prune_allowlist(gov, actor_name(), now=when, dry_run=dry_run)
    run_count(partitions_deleted=report.partitions_deleted, rows_deleted=report.rows_deleted)
    verb = "would delete" if dry_run else "deleted"
    for d in report.datasets:
        why = (
            f"dated in the future (from {d.cutoff.isoformat()}: broken exporter clocks, garbage)"
            if d.rule == "future"
            else f"older than {d.retention_days} days (before {d.cutoff.isoformat()})"
        )
        out.print(
            f"{d.dataset}: {verb} {len(d.partitions)} partition(s), {d.rows} row(s) {why}",
            highlight=False,
        )
    if report.matches_after_alert:
        out.print(
            f"matches: {verb} {report.matches_after_alert} record(s) whose alert was sent",
            highlight=False,
        )
    out.print(
        f"case book: {verb} {book.notes} note(s) and assignment(s) of cases no longer readable, "
        f"{book.cases} such case(s) past retention; reviews: {verb} {verdicts} verdict(s) past "
        f"retention; allowlist: {stripped} entr(ies) past retention "
        f"{'would keep' if dry_run else 'keep'} their address only",
        highlight=False,
    )
    out.print(
        f"{verb} {report.partitions_deleted} partition(s), {report.rows_deleted} row(s) in all",
        highlight=False,
    )
