"""`mamori report`: public and internal reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mamori.cli.common import STATE, actor_name, err, fail, out, records_run, run_count

report_app = typer.Typer(help="Public and internal reports.", no_args_is_help=True)


def _previous_month() -> str:
    first = datetime.now(UTC).replace(day=1)
    return f"{first - timedelta(days=1):%Y-%m}"


@report_app.command("transparency")
@records_run("transparency")
def report_transparency(
    period: Annotated[
        str,
        typer.Option(
            "--period", help="month to report, YYYY-MM, or 'previous' (the last whole month)"
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="write JSON")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="write CSV (one metric per line)")] = False,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="write to this file instead of the terminal; {period} in the name becomes the "
            "month (what the monthly timer uses)",
        ),
    ] = None,
) -> None:
    """The public transparency report for a month: per measure, alerts sent and to how many
    subscribers, blocks applied (start, end, subscribers affected), opt-outs, C&C entries shared
    and with how many partners; per dataset, data held and deleted. Aggregates only."""
    from mamori.report.transparency import PeriodError, build_report, to_csv

    if as_json and as_csv:
        fail("choose one of --json and --csv", code=2)
    if period == "previous":
        period = _previous_month()
    if out_file is not None and "{period}" in str(out_file):
        out_file = Path(str(out_file).replace("{period}", period))
        out_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = build_report(STATE.gov(), period, actor=actor_name())
    except PeriodError as exc:
        fail(str(exc), code=2)
    run_count(measures=len(report.measures))
    if as_json or as_csv:
        text = report.model_dump_json(indent=1) + "\n" if as_json else to_csv(report)
        if out_file is not None:
            out_file.write_text(text, encoding="utf-8")
            err.print(f"wrote {out_file}")
        else:
            typer.echo(text, nl=False)
        return
    t = Table(title=f"{report.isp}: transparency report {report.period}")
    cols = (
        "measure",
        "alerts sent",
        "subscribers",
        "blocks",
        "affected",
        "opt-outs",
        "shared",
        "shared conf/corr/cand",
        "partners",
        "findings conf/corr/rej",
    )
    for col in cols:
        t.add_column(col, justify="left" if col == "measure" else "right")
    for m in report.measures:
        t.add_row(
            f"{m.measure} {m.name}",
            str(m.alerts_sent),
            str(m.alert_subscribers),
            str(m.blocks),
            str(m.block_subscribers),
            str(m.opt_outs),
            str(m.cc_entries_shared),
            f"{m.cc_shared_confirmed}/{m.cc_shared_corroborated}/{m.cc_shared_candidates}",
            str(m.share_partners),
            f"{m.findings_confirmed}/{m.findings_corroborated}/{m.findings_rejected}",
        )
    console = Console(file=out_file.open("w", encoding="utf-8")) if out_file else out
    console.print(t)
    d = Table(title="data held and deleted")
    for col in ("dataset", "limit (days)", "oldest held", "rows deleted"):
        d.add_column(col)
    for ds in report.datasets:
        d.add_row(
            ds.dataset,
            str(ds.retention_days),
            ds.oldest_held.isoformat() if ds.oldest_held else "-",
            str(ds.rows_deleted),
        )
    console.print(d)
    if report.findings:
        f = Table(title="findings (network protection and detection), counts only")
        for col in ("measure", "kind", "method", "findings"):
            f.add_column(col)
        for fc in report.findings:
            f.add_row(fc.measure, fc.kind, fc.method or "-", str(fc.findings))
        console.print(f)
