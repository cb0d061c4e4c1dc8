"""The ``mamori`` command line.

One sub-command group per stage (ARCHITECTURE.md). ``--store DIR`` and ``--config FILE`` are
accepted anywhere on the line. A command whose stage is not built yet says so and exits with
status 69 (EX_UNAVAILABLE); it never prints made-up output.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from mamori.config import ConfigError, MamoriConfig, load_config
from mamori.governance import ConsentError, Governance, catalogue, purge, retention_status
from mamori.ingest.collector import (
    Collector,
    Stats,
    iter_stat_lines,
    load_stats,
    parse_listen,
)
from mamori.schemas import DATASETS

err = Console(stderr=True, soft_wrap=True)
out = Console()

EX_UNAVAILABLE = 69


def _hoist_global_options(argv: list[str]) -> list[str]:
    """Move --store/--config given after the sub-command to the front, where typer reads them."""
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in ("--store", "--config") and i + 1 < len(argv):
            hoisted += [tok, argv[i + 1]]
            i += 2
            continue
        if tok.startswith(("--store=", "--config=")):
            hoisted.append(tok)
        else:
            rest.append(tok)
        i += 1
    return hoisted + rest


class _Root(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _hoist_global_options(args))


app = typer.Typer(
    name="mamori",
    cls=_Root,
    help=(
        "Mamori defends an ISP's network and subscribers against botnets, DDoS and abuse "
        "without breaking the secrecy of communications.\n\n"
        "Global options --store DIR (default $MAMORI_STORE, else ./mamori-data) and "
        "--config FILE (default $MAMORI_CONFIG, else ./mamori.toml if present) may be given "
        "anywhere on the line."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    store: Path | None = None
    config_file: Path | None = None
    _config: MamoriConfig | None = None
    _gov: Governance | None = field(default=None, repr=False)

    def config(self) -> MamoriConfig:
        if self._config is None:
            try:
                self._config = load_config(self.config_file, {"store": self.store})
            except ConfigError as exc:
                fail(str(exc), code=2)
        return self._config

    def close(self) -> None:
        if self._gov is not None:
            self._gov.close()
            self._gov = None

    def gov(self) -> Governance:
        if self._gov is None:
            self._gov = Governance(self.config())
        return self._gov


STATE = State()


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def actor_name() -> str:
    return os.environ.get("MAMORI_ACTOR") or f"cli:{getpass.getuser()}"


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"cannot read time {value!r}; use ISO 8601, e.g. 2026-11-23T09:00:00Z", code=2)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _arrives(issue: int | None) -> str:
    return f"issue #{issue}" if issue else "a later issue"


def not_built(what: str, issue: int | None) -> NoReturn:
    err.print(
        f"mamori {what}: not built yet — this stage arrives with {_arrives(issue)}. "
        "Nothing was done.",
        highlight=False,
    )
    raise typer.Exit(EX_UNAVAILABLE)


@app.callback()
def _root(
    ctx: typer.Context,
    store: Annotated[
        Path | None,
        typer.Option("--store", envvar="MAMORI_STORE", help="store directory", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="MAMORI_CONFIG", help="configuration file (TOML)"),
    ] = None,
) -> None:
    global STATE
    STATE = State(store, config)
    ctx.call_on_close(STATE.close)


# ------------------------------------------------------------------------------------- config

config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


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
app.add_typer(consent_app, name="consent")


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
app.add_typer(audit_app, name="audit")


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


@app.command("purge")
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


# ------------------------------------------------------------------------------------ collect

collect_app = typer.Typer(
    help="The flow collector (measure M1): NetFlow v5/v9, IPFIX and sFlow into header-only "
    "Parquet. Run with --listen and/or --pcap; `mamori collect stats` shows its counters.",
)
app.add_typer(collect_app, name="collect")


def _status_line(stats: Stats) -> str:
    c = stats.counters
    packets = sum(v for k, v in c.items() if k.startswith("packets.") and "dropped" not in k)
    errors = sum(v for k, v in c.items() if k.startswith("errors."))
    return (
        f"packets {packets:,}  records {c.get('records.out', 0):,}  written "
        f"{stats.rows_written:,}  errors {errors:,}  awaiting templates "
        f"{c.get('records.pending', 0):,}  kernel drops {c.get('packets.dropped_by_kernel', 0):,}"
    )


def _parse_overrides(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        exporter, _, rate = v.partition("=")
        if not rate.isdigit() or int(rate) < 1:
            fail(
                f"--sampling {v!r}: expected EXPORTER=RATE with RATE >= 1, e.g. 192.0.2.1=1000",
                code=2,
            )
        out[exporter] = int(rate)
    return out


@collect_app.callback(invoke_without_command=True)
def collect(
    ctx: typer.Context,
    listen: Annotated[
        list[str] | None,
        typer.Option(
            "--listen",
            help="udp://HOST:PORT to receive export packets on (repeatable; versions "
            "are told apart by content)",
        ),
    ] = None,
    pcap: Annotated[
        list[Path] | None,
        typer.Option(
            "--pcap",
            help="pcap/pcapng file of export packets to decode (repeatable)",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    flush_interval: Annotated[
        float | None,
        typer.Option(
            "--flush-interval",
            help="seconds between writes; a kill -9 loses at most this much "
            "[default: collector.flush_interval_s, 5]",
        ),
    ] = None,
    sampling: Annotated[
        list[str] | None,
        typer.Option(
            "--sampling",
            help="EXPORTER=RATE: sampling rate for a router that sends none or 0 (repeatable)",
        ),
    ] = None,
) -> None:
    """Receive or replay flow exports and store them (measure M1). Stops on SIGTERM/SIGINT after
    writing everything received."""
    if ctx.invoked_subcommand:
        return
    base = STATE.config().collector
    listen = listen or ([] if pcap else list(base.listen))
    if not listen and not pcap:
        fail(
            "nothing to collect: give --listen udp://HOST:PORT and/or --pcap FILE "
            "(or collector.listen in the configuration)",
            code=2,
        )
    try:
        listens = [parse_listen(u) for u in listen]
    except ValueError as exc:
        fail(str(exc), code=2)
    settings = base.model_copy(
        update={
            "flush_interval_s": flush_interval
            if flush_interval is not None
            else base.flush_interval_s,
            "sampling_overrides": {**base.sampling_overrides, **_parse_overrides(sampling or [])},
        }
    )
    collector = Collector(STATE.gov(), settings)
    for path in pcap or []:
        stats = collector.replay_pcap(path)
        err.print(f"{path}: {_status_line(stats)}", highlight=False)
    if not listens:
        return
    try:
        collector.start(listens)
    except OSError as exc:
        fail(str(exc))
    collector.install_signal_handlers()
    err.print(
        "listening on "
        + ", ".join(str(b) for b in collector.bound())
        + " — SIGTERM or Ctrl-C to stop",
        highlight=False,
    )
    tty = err.is_terminal

    def status(stats: Stats) -> None:
        if tty:
            err.print(_status_line(stats), end="\r", highlight=False)
        else:
            err.print(_status_line(stats), highlight=False)

    collector.run(status=status, status_every_s=1.0 if tty else 10.0)
    err.print("\nstopped; " + _status_line(collector.stats), highlight=False)


@collect_app.command("stats")
def collect_stats(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the collector's counters as of its last flush: packets and records per exporter and
    version, decode errors by kind, unknown templates, records awaiting templates, kernel drops."""
    stats = load_stats(STATE.gov())
    if stats is None:
        fail("no collector statistics in this store yet (the collector has not run here)")
    if as_json:
        out.print_json(json.dumps(stats))
        return
    t = Table(title="collector counters")
    t.add_column("counter")
    t.add_column("value", justify="right")
    for key, value in iter_stat_lines(stats):
        t.add_row(key, value)
    out.print(t)
    if stats["by_exporter"]:
        e = Table(title="per exporter")
        for col in ("exporter", "packets", "records"):
            e.add_column(col, justify="right" if col != "exporter" else "left")
        for exporter, c in stats["by_exporter"].items():
            e.add_row(exporter, f"{c.get('packets', 0):,}", f"{c.get('records', 0):,}")
        out.print(e)


# ----------------------------------------------------------------------------- simulate / eval


eval_app = typer.Typer(
    help="Score detector output against a simulated ISP's ground truth.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


@app.command("simulate")
def simulate_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write into (created)")],
    scenario: Annotated[
        str, typer.Option("--scenario", help="tiny | small | demo | large (see --list)")
    ] = "demo",
    seed: Annotated[int, typer.Option("--seed", help="same seed, same bytes")] = 0,
    subscribers: Annotated[
        int | None,
        typer.Option(
            "--subscribers", help="override the scenario's number of subscribers (10 … 1,000,000)"
        ),
    ] = None,
    hours: Annotated[
        float | None, typer.Option("--hours", help="override the simulated span")
    ] = None,
) -> None:
    """Write a simulated ISP: routers' NetFlow v9 / IPFIX / sFlow exports (a pcap), allocation
    logs (RADIUS, Kea, CGNAT), resolver and mail logs, reputation feeds, third-party reports and
    the ground truth (truth.json). A client of Mamori: it only writes what real equipment writes."""
    from mamori.demo import SCENARIOS, simulate

    if scenario not in SCENARIOS:
        fail(
            f"unknown scenario {scenario!r}; known: "
            + ", ".join(f"{k} ({v})" for k, v in SCENARIOS.items()),
            code=2,
        )
    try:
        summary = simulate(scenario, out_dir, seed=seed, subscribers=subscribers, hours=hours)
    except ValueError as exc:
        fail(str(exc), code=2)
    t = Table(title=f"simulated ISP '{scenario}' (seed {seed}) in {out_dir}")
    t.add_column("what")
    t.add_column("count", justify="right")
    for key, value in summary.counts.items():
        t.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    out.print(t)
    for name, rel in summary.files.items():
        out.print(f"  {name:<24} {rel}", highlight=False)


EVAL_KINDS = {
    "c2": "C&C endpoints (ip, port)",
    "infected": "infected subscriber addresses (ip, port, time)",
    "ddos": "DDoS victims",
    "reflection": "reflectors / open resolvers",
    "smtp": "SMTP AUTH brute-force sources and compromised accounts",
}


def _make_eval(kind: str) -> Any:
    def cmd(
        findings: Annotated[
            Path,
            typer.Option(
                "--findings",
                help="`mamori detect … --json` output (JSON lines) or a JSON array",
                exists=True,
                dir_okay=False,
            ),
        ],
        truth: Annotated[
            Path,
            typer.Option(
                "--truth",
                help="truth.json written by `mamori simulate`",
                exists=True,
                dir_okay=False,
            ),
        ],
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        from mamori.demo import score_files

        result = score_files(kind, findings, truth)
        c2_extra: dict[str, Any] = {}
        if kind == "c2":
            from mamori.demo import load_findings, score_c2

            c2 = score_c2(load_findings(findings), json.loads(truth.read_text(encoding="utf-8")))
            c2_extra = {"unknown_c2": c2.model_dump()}
        if as_json:
            out.print_json(json.dumps({**result.model_dump(), **c2_extra}))
            return
        out.print(
            f"{kind}: {result.findings} findings; precision {result.precision:.3f}, "
            f"recall {result.recall:.3f}, F1 {result.f1:.3f}",
            highlight=False,
        )
        out.print(
            f"missed {len(result.missed)}, spurious {len(result.spurious)} "
            f"(of which known traps {len(result.traps_hit)})",
            highlight=False,
        )
        if c2_extra:
            u = c2_extra["unknown_c2"]
            out.print(
                f"C&C not listed by the window's end: {u['unknown_found']}/{u['unknown_total']} "
                f"found (recall {u['recall_unknown']:.3f}); precision {u['precision']:.3f}; "
                f"precision@{u['k']} {u['precision_at_k']:.3f}",
                highlight=False,
            )

    cmd.__doc__ = (
        f"Score {EVAL_KINDS[kind]} found by a detector against a simulated ISP's ground truth: "
        "precision, recall, F1, what was missed, and which false positives were known traps."
    )
    return cmd


for _kind in EVAL_KINDS:
    eval_app.command(_kind)(_make_eval(_kind))


# --------------------------------------------------------------------- stages not built yet

ingest_app = typer.Typer(
    help="Load outside data: allocations, feeds, resolver and mail logs, third-party reports.",
    no_args_is_help=True,
)
app.add_typer(ingest_app, name="ingest")
detect_app = typer.Typer(
    help="Run a detector; findings name endpoints, never subscribers.", no_args_is_help=True
)
app.add_typer(detect_app, name="detect")
share_app = typer.Typer(
    help="Exchange C&C lists with the ISAC and trusted ISPs (M3).", no_args_is_help=True
)
app.add_typer(share_app, name="share")
report_app = typer.Typer(help="Public and internal reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")

# ---- console, transparency report (issue 7) ----

web_app = typer.Typer(help="The web console's accounts.", no_args_is_help=True)
app.add_typer(web_app, name="web")
web_user_app = typer.Typer(
    help="Console accounts (roles: analyst, abuse-desk, operator, auditor, admin).",
    no_args_is_help=True,
)
web_app.add_typer(web_user_app, name="user")


@web_user_app.command("add")
def web_user_add(
    name: Annotated[str, typer.Argument(help="account name (lower case, digits, . _ -)")],
    role: Annotated[
        str,
        typer.Option("--role", "-r", help="analyst | abuse-desk | operator | auditor | admin"),
    ],
) -> None:
    """Create a console account and print its generated password (shown only this once).

    Run it once with --role admin on a new installation; the admin can then add accounts in the
    console. Accounts are kept in the store (_state/web/accounts.json, argon2 hashes)."""
    from mamori.web.auth import AccountError, Accounts

    gov = STATE.gov()
    try:
        password = Accounts(gov).add(name, role)
    except AccountError as exc:
        fail(str(exc), code=2)
    gov.audit.append(actor=actor_name(), event="account", detail={"created": name, "role": role})
    out.print(f"account {name} ({role}) created; password: {password}", highlight=False)


@web_user_app.command("list")
def web_user_list() -> None:
    """List console accounts and their roles (never passwords)."""
    from mamori.web.auth import Accounts

    t = Table()
    for col in ("name", "role", "created", "state"):
        t.add_column(col)
    for a in Accounts(STATE.gov()).list():
        t.add_row(
            a.name, a.role.value, a.created.isoformat(), "disabled" if a.disabled else "active"
        )
    out.print(t)


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="address to listen on (default: web.host)")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="port to listen on (default: web.port)")
    ] = None,
) -> None:
    """Serve the web console (analysts, abuse desk, operators, auditors), the subscribers'
    consent pages, the public notice and the transparency report. Create the first account
    with `mamori web user add NAME --role admin`."""
    from mamori.web.app import serve as serve_console

    cfg = STATE.config()
    h, p = host or cfg.web.host, port or cfg.web.port
    err.print(f"console on http://{h}:{p}/console  (public notice: http://{h}:{p}/)")
    serve_console(STATE.gov(), h, p, log_level="info")


@report_app.command("transparency")
def report_transparency(
    period: Annotated[str, typer.Option("--period", help="month to report, YYYY-MM")],
    as_json: Annotated[bool, typer.Option("--json", help="write JSON")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="write CSV (one metric per line)")] = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="write to this file instead of the terminal")
    ] = None,
) -> None:
    """The public transparency report for a month: per measure, alerts sent and to how many
    subscribers, blocks applied (start, end, subscribers affected), opt-outs, C&C entries shared
    and with how many partners; per dataset, data held and deleted. Aggregates only."""
    from mamori.report.transparency import PeriodError, build_report, to_csv

    if as_json and as_csv:
        fail("choose one of --json and --csv", code=2)
    try:
        report = build_report(STATE.gov(), period, actor=actor_name())
    except PeriodError as exc:
        fail(str(exc), code=2)
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
        "partners",
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
            str(m.share_partners),
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


# ---- reputation ingest and matching (issue 5) ----


@ingest_app.command("reputation")
def ingest_reputation(
    path: Annotated[
        Path, typer.Argument(help="the feed file", exists=True, dir_okay=False, readable=True)
    ],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="feodo | urlhaus | threatfox | stix | misp | plain (abuse.ch CSV or JSON is "
            "told apart by itself); guessed from the file when omitted",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="name of the list; a new load of a source replaces its previous list "
            "(default: feodo/urlhaus/threatfox, else the file name)",
        ),
    ] = None,
    category: Annotated[
        str | None,
        typer.Option(
            "--category",
            help="c2 | first-stage | malware-site | phishing, for every entry (default: what "
            "the feed says, else the format's usual kind)",
        ),
    ] = None,
    confidence: Annotated[
        float | None, typer.Option("--confidence", help="0..1 for every entry")
    ] = None,
    expires_days: Annotated[
        float | None,
        typer.Option("--expires-days", help="entries stop being used this many days after loading"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the load report as JSON")] = False,
) -> None:
    """Load a C&C / malware-site / phishing list into the reputation registry (audited).
    Malformed lines are counted and listed with their line numbers; the good lines are loaded.
    Nothing is stored when no line is good, so a broken download never empties a list."""
    from mamori.ingest.reputation import FeedError, load_feed

    try:
        report = load_feed(
            STATE.gov(),
            path,
            fmt,
            actor=actor_name(),
            source=source,
            category=category,
            confidence=confidence,
            expires_days=expires_days,
        )
    except FeedError as exc:
        fail(str(exc), code=2)
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        out.print(
            f"{report.source} ({report.format}): {report.rows_loaded:,} entries loaded, "
            f"{report.rows_bad:,} malformed, {report.rows_skipped:,} not usable here",
            highlight=False,
        )
        for cat, n in sorted(report.by_category.items()):
            out.print(f"  {cat:<14} {n:,}", highlight=False)
        for e in report.errors[:20]:
            err.print(f"  line {e.line}: {escape(e.reason)}", highlight=False)
        if report.rows_bad > 20:
            err.print(f"  … {report.rows_bad - 20:,} more malformed lines", highlight=False)
    if not report.stored:
        fail(f"{path}: no usable entry; nothing was stored", code=1)


@detect_app.command("infected")
def detect_infected(
    since: Annotated[
        str | None, typer.Option("--since", help="start of the window (ISO 8601, UTC)")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="end of the window, exclusive (ISO 8601)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object per finding (JSON lines)")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report findings without storing them")
    ] = False,
) -> None:
    """Find likely-infected devices (measure M4, consent-based): match stored flows and resolver
    queries against the C&C lists in force (load them with `mamori ingest reputation`). Opted-out
    subscribers' traffic is removed before matching. Each finding names an address (and port
    behind CGNAT) and a time span, never a subscriber; matched communications are kept in
    `matches` for the alert."""
    from mamori.detect.reputation_match import match_reputation

    report = match_reputation(
        STATE.gov(),
        actor=actor_name(),
        since=parse_time(since),
        until=parse_time(until),
        write=not dry_run,
    )
    if as_json:
        for f in report.findings:
            print(json.dumps(f, sort_keys=True))
        return
    out.print(
        f"{len(report.findings):,} findings from {report.flow_matches:,} matched flows and "
        f"{report.dns_matches:,} matched queries against {report.indicators_ip:,} C&C addresses "
        f"and {report.indicators_domain:,} C&C names ({report.seconds:.2f} s)",
        highlight=False,
    )
    t = Table()
    for col in ("ip", "port", "proto", "score", "first seen", "last seen", "indicators"):
        t.add_column(col)
    for f in report.findings[:50]:
        t.add_row(
            f["ip"],
            str(f["port"] or ""),
            f["proto"] or "",
            f"{f['score']:.2f}",
            f["first_seen"],
            f["last_seen"],
            ", ".join(f["evidence"]["indicators"][:3]),
        )
    if report.findings:
        out.print(t)


# ---- end of reputation ----

# ---- share (issue 9) ----

peers_app = typer.Typer(
    help="Peers who may use this ISP's TAXII server (their API keys and trust groups), and the "
    "peers' servers this ISP polls.",
    no_args_is_help=True,
)
share_app.add_typer(peers_app, name="peers")
groups_app = typer.Typer(
    help="Trust groups: which collections (c2, submissions) their peers may read and write.",
    no_args_is_help=True,
)
peers_app.add_typer(groups_app, name="groups")


class ShareFormat(StrEnum):
    stix = "stix"
    misp = "misp"
    csv = "csv"


_TLP_HELP = "TLP 2.0 marking: clear, green, amber, amber+strict or red"


@share_app.command("export")
def share_export(
    fmt: Annotated[ShareFormat, typer.Option("--format", "-f", help="stix, misp or csv")],
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="file to write (default: standard output)")
    ] = None,
    tlp: Annotated[str, typer.Option("--tlp", help=_TLP_HELP)] = "amber+strict",
    min_score: Annotated[
        float, typer.Option("--min-score", min=0.0, max=1.0, help="leave out weaker endpoints")
    ] = 0.0,
) -> None:
    """Export the C&C list (IP, port, protocol, first/last seen, confidence, method) as a STIX 2.1
    bundle, a MISP event or CSV. Only aggregated endpoints leave: the export is refused (and the
    refusal audited) if any address lies in this ISP's own subscriber pools."""
    from mamori.share import ExportRefused, export

    try:
        data, n = export(STATE.gov(), fmt.value, actor_name(), tlp=tlp, min_score=min_score)
    except ExportRefused as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc), code=2)
    if out_file is None:
        typer.echo(data.decode(), nl=False)
    else:
        out_file.write_bytes(data)
    err.print(f"exported {n} C&C endpoint(s) as {fmt.value}, TLP:{tlp.upper()}", highlight=False)


@share_app.command("publish")
def share_publish(
    tlp: Annotated[str, typer.Option("--tlp", help=_TLP_HELP)] = "amber+strict",
    min_score: Annotated[float, typer.Option("--min-score", min=0.0, max=1.0)] = 0.0,
) -> None:
    """Put the current C&C list into the TAXII collection "c2" that peers poll (same checks as
    export). Endpoints that did not change are not added again."""
    from mamori.share import ExportRefused, publish

    try:
        r = publish(STATE.gov(), actor_name(), tlp=tlp, min_score=min_score)
    except ExportRefused as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc), code=2)
    out.print(
        f"{r.endpoints} endpoint(s) in the list; {r.objects_added} new STIX object "
        f"version(s) in collection {r.collection}",
        highlight=False,
    )


@share_app.command("import")
def share_import(
    file: Annotated[Path | None, typer.Argument(help="file to load", show_default=False)] = None,
    fmt: Annotated[
        ShareFormat | None, typer.Option("--format", "-f", help="format of FILE")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="who the file came from (default: its name)")
    ] = None,
    peer: Annotated[
        str | None, typer.Option("--peer", help="poll this peer's TAXII collection instead")
    ] = None,
) -> None:
    """Load a peer's C&C list into reputation data, from a file (--format stix|misp|csv FILE)
    or by polling its TAXII collection (--peer NAME, see `share peers remote`); only what the
    peer added since the last poll is fetched."""
    from mamori.share import ShareError, TrustError, import_file, poll_peer

    if (peer is None) == (file is None):
        fail("give either FILE (with --format) or --peer NAME", code=2)
    try:
        if peer is not None:
            r = poll_peer(STATE.gov(), peer, actor_name())
        else:
            assert file is not None
            if fmt is None:
                fail("--format is needed with FILE", code=2)
            if not file.is_file():
                fail(f"no file {file}", code=2)
            r = import_file(STATE.gov(), file, fmt.value, actor_name(), source or file.name)
    except TrustError as exc:
        fail(str(exc), code=2)
    except ShareError as exc:
        fail(str(exc))
    for problem in r.problems:
        err.print(f"skipped {escape(problem)}", highlight=False)
    out.print(
        f"loaded {r.loaded} entr{'y' if r.loaded == 1 else 'ies'} from {r.source}; "
        f"skipped {r.skipped}",
        highlight=False,
    )


@share_app.command("serve")
def share_serve(
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 9440,
) -> None:
    """Run the TAXII 2.1 server on its own (the web console mounts the same app under
    /taxii2/). Peers need an API key (`share peers add`); put the list in with `share publish`.
    Put TLS in front of it (a reverse proxy) for anything but loopback."""
    import uvicorn

    from mamori.share import create_taxii_app
    from mamori.share.taxii import collection_id
    from mamori.share.trust import COLLECTIONS

    gov = STATE.gov()
    base = f"http://{host}:{port}"
    out.print(f"TAXII 2.1 discovery: {base}/", highlight=False)
    for alias in COLLECTIONS:
        cid = collection_id(gov.config.isp_name, alias)
        out.print(f"  {alias}: {base}/api/collections/{cid}/", highlight=False)
    uvicorn.run(create_taxii_app(gov), host=host, port=port, log_level="info")


@peers_app.command("add")
def peers_add(
    name: Annotated[str, typer.Argument(help="peer name, e.g. the ISP or ISAC")],
    group: Annotated[str, typer.Option("--group", "-g", help="trust group it belongs to")],
) -> None:
    """Register a peer and print its API key. The key is shown only now; only a hash is kept."""
    from mamori.share import TrustError, TrustStore

    try:
        key = TrustStore.of(STATE.gov()).add_peer(name, group)
    except TrustError as exc:
        fail(str(exc), code=2)
    STATE.gov().audit.append(
        actor=actor_name(),
        event="share-peer-added",
        measure="M3",
        detail={"peer": name, "group": group},
    )
    err.print(
        f"API key for {name} (shown once; give it to the peer over a secure channel):",
        highlight=False,
    )
    typer.echo(key)


@peers_app.command("list")
def peers_list() -> None:
    """Peers with their group, when their key was issued and whether it is revoked; and the
    remote servers polled."""
    from mamori.share import TrustStore

    trust = TrustStore.of(STATE.gov())
    t = Table(title="peers")
    for col in ("peer", "group", "created", "revoked"):
        t.add_column(col)
    for name, p in sorted(trust.peers().items()):
        t.add_row(name, p["group"], p["created"], p.get("revoked") or "")
    out.print(t)
    r = Table(title="remote servers polled")
    for col in ("peer", "collection URL", "added after"):
        r.add_column(col)
    for rem in trust.remotes():
        r.add_row(rem.name, rem.url, rem.added_after or "(never polled)")
    out.print(r)


@peers_app.command("revoke")
def peers_revoke(name: Annotated[str, typer.Argument(help="peer to cut off")]) -> None:
    """Revoke a peer's API key; its next request is refused."""
    from mamori.share import TrustError, TrustStore

    try:
        TrustStore.of(STATE.gov()).revoke_peer(name)
    except TrustError as exc:
        fail(str(exc), code=2)
    STATE.gov().audit.append(
        actor=actor_name(), event="share-peer-revoked", measure="M3", detail={"peer": name}
    )
    out.print(f"revoked {name}", highlight=False)


@peers_app.command("remote")
def peers_remote(
    name: Annotated[str, typer.Argument(help="name the peer's entries will carry as source")],
    url: Annotated[str, typer.Option("--url", help="the peer's TAXII collection URL")],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            envvar="MAMORI_PEER_KEY",
            prompt=True,
            hide_input=True,
            help="API key the peer gave us (prompted for if not given)",
        ),
    ],
) -> None:
    """Record a peer's TAXII collection to poll with `share import --peer NAME`."""
    from mamori.share import TrustError, TrustStore

    try:
        TrustStore.of(STATE.gov()).set_remote(name, url, key)
    except TrustError as exc:
        fail(str(exc), code=2)
    out.print(f"will poll {name} at {url}", highlight=False)


@groups_app.command("set")
def groups_set(
    name: Annotated[str, typer.Argument(help="group name")],
    read: Annotated[
        list[str] | None, typer.Option("--read", help="collection its peers may read (repeat)")
    ] = None,
    write: Annotated[
        list[str] | None, typer.Option("--write", help="collection its peers may write (repeat)")
    ] = None,
) -> None:
    """Create or change a trust group. Collections: c2 (this ISP's list, read only) and
    submissions (where peers may post). Takes effect on the next request."""
    from mamori.share import TrustError, TrustStore

    try:
        TrustStore.of(STATE.gov()).set_group(name, list(read or []), list(write or []))
    except TrustError as exc:
        fail(str(exc), code=2)
    STATE.gov().audit.append(
        actor=actor_name(),
        event="share-group-set",
        measure="M3",
        detail={"group": name, "read": read or [], "write": write or []},
    )
    out.print(f"group {name}: read {read or []}, write {write or []}", highlight=False)


@groups_app.command("list")
def groups_list() -> None:
    """Trust groups and their rights."""
    from mamori.share import TrustStore

    t = Table(title="trust groups")
    for col in ("group", "read", "write"):
        t.add_column(col)
    for name, g in sorted(TrustStore.of(STATE.gov()).groups().items()):
        t.add_row(name, ", ".join(g["read"]), ", ".join(g["write"]))
    out.print(t)


# ---- DNS protection (issue 8: M7, M8, dns_queries) ----

act_app = typer.Typer(
    help="Turn findings and lists into actions: RPZ zones and the resolver's consent policy.",
    no_args_is_help=True,
)
app.add_typer(act_app, name="act")


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


class DnsFormat(StrEnum):
    dnstap = "dnstap"
    unbound = "unbound"


@ingest_app.command("dns")
def ingest_dns(
    files: Annotated[
        list[Path] | None, typer.Argument(help="dnstap (Frame Streams) or Unbound log files")
    ] = None,
    fmt: Annotated[
        DnsFormat | None,
        typer.Option("--format", help="dnstap | unbound (default: from the file name)"),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="unix:PATH — receive dnstap from resolvers (Unbound: dnstap-socket-path)",
        ),
    ] = None,
    resolver: Annotated[
        str | None, typer.Option("--resolver", help="resolver address, for Unbound logs")
    ] = None,
) -> None:
    """Load resolver query logs into dns_queries, for consenting subscribers only (M7): queries of
    subscribers who opted out are dropped before storage. Bad frames or lines are counted and
    reported with their position."""
    from mamori.ingest.dns import DnstapListener, ingest_dnstap_file, ingest_unbound_log

    gov = STATE.gov()
    if listen:
        if not listen.startswith("unix:"):
            fail("--listen takes unix:PATH")
        listener = DnstapListener(
            gov,
            Path(listen[5:]),
            actor_name(),
            on_flush=lambda r: out.print(
                f"{datetime.now(UTC):%H:%M:%S} {r.queries:,} queries, {r.stored:,} stored, "
                f"{r.malformed} malformed",
                highlight=False,
            ),
        )
        listener.start()
        out.print(f"listening on {listen}", highlight=False)
        try:
            listener.run()
        except KeyboardInterrupt:
            listener.close()
        return
    if not files:
        fail("give FILE(s) or --listen unix:PATH")
    failed = False
    for path in files:
        kind = fmt or (DnsFormat.dnstap if path.suffix in (".dnstap", ".fstrm") else None)
        if kind is None and path.suffix == ".log":
            kind = DnsFormat.unbound
        if kind is None:
            fail(f"{path}: cannot tell the format; give --format dnstap|unbound")
        if not path.is_file():
            fail(f"{path}: no such file")
        if kind is DnsFormat.dnstap:
            report = ingest_dnstap_file(gov, path, actor_name())
        else:
            report = ingest_unbound_log(gov, path, actor_name(), resolver=resolver)
        out.print(
            f"{path}: {report.queries:,} queries, {report.stored:,} stored (consenting), "
            f"{report.malformed} malformed, {report.too_long} names too long",
            highlight=False,
        )
        for example in report.examples:
            err.print(f"  {example}", highlight=False, markup=False)
        if report.error:
            err.print(f"  {report.error}", highlight=False, markup=False)
            failed = True
    if failed:
        raise typer.Exit(1)


# ---- end of DNS protection ----

# ---- allocation ingest and attribution (issue 6) ----


class AllocFormat(StrEnum):
    radius = "radius"
    kea = "kea"
    cgnat_syslog = "cgnat-syslog"
    csv = "csv"


class KeaKeyOpt(StrEnum):
    hwaddr = "hwaddr"
    client_id = "client_id"
    hostname = "hostname"


def _print_ingest_report(report: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(report.model_dump_json())
        return
    data = report.model_dump()
    examples = data.pop("examples")
    t = Table(title=f"{data.pop('file')} ({data.pop('format')})")
    t.add_column("what")
    t.add_column("count", justify="right")
    for key, value in data.items():
        t.add_row(key.replace("_", " "), f"{value:,}")
    out.print(t)
    for kind, lines in examples.items():
        err.print(f"{kind} (first {len(lines)}):", highlight=False)
        for line in lines:
            err.print(f"  {escape(line)}", highlight=False)


@ingest_app.command("allocations")
def ingest_allocations(
    file: Annotated[Path, typer.Argument(help="the log file", exists=True, dir_okay=False)],
    fmt: Annotated[
        AllocFormat,
        typer.Option(
            "--format",
            "-f",
            help="radius: FreeRADIUS detail file; kea: Kea DHCPv4 lease CSV; cgnat-syslog: "
            "Juniper port-block syslog; csv: start,end,addr,port_start,port_end,subscriber_id|"
            "inside_addr,session_id",
        ),
    ],
    subscriber_map: Annotated[
        Path | None,
        typer.Option(
            "--subscriber-map",
            help="CSV mapping the log's subscriber key to subscriber ids: a subscriber_id column "
            "and the --map-column (e.g. the customer directory with user_name)",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    map_column: Annotated[
        str | None,
        typer.Option(
            "--map-column",
            help="column of --subscriber-map holding the key [default: user_name for radius, "
            "the --kea-key for kea]",
        ),
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option(
            "--subscriber-pattern",
            help="regular expression whose first group (or group 'id') is the subscriber id, "
            r"applied to the key first, e.g. '^u0*(\d+)@'",
        ),
    ] = None,
    kea_key: Annotated[
        KeaKeyOpt, typer.Option("--kea-key", help="lease column naming the subscriber (kea)")
    ] = KeaKeyOpt.hwaddr,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--session-timeout",
            help="seconds after its last record that a session without a Stop is closed "
            "[default: attribution.session_timeout_s]",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="parse and report, store nothing")] = (
        False
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Load address-allocation logs (who held which address, and port block, when).

    Sessions without a Stop are closed by the next allocation of the same address or the
    timeout. Malformed lines are reported with their line numbers and skipped; the rest is kept.
    CGNAT port blocks are stored against the inside address; load the RADIUS or Kea logs that
    say who held the inside addresses too. Exit status 1 if nothing could be stored.
    """
    from mamori.ingest.allocations import SubscriberMap, load_allocations

    gov = STATE.gov()
    mapping: SubscriberMap | None = None
    try:
        if subscriber_map is not None:
            column = map_column or ("user_name" if fmt is AllocFormat.radius else kea_key.value)
            mapping = SubscriberMap.from_csv(subscriber_map, column, pattern=pattern)
        elif pattern:
            mapping = SubscriberMap(pattern=pattern)
        report = load_allocations(
            gov,
            file,
            fmt.value,
            actor=actor_name(),
            subscribers=mapping,
            kea_key=kea_key.value,
            timeout_s=timeout,
            dry_run=dry_run,
        )
    except (ValueError, OSError) as exc:
        fail(str(exc), code=2)
    _print_ingest_report(report, as_json)
    if not report.sessions and report.records:
        fail(f"{file}: no allocation could be read ({report.malformed} malformed)")


@ingest_app.command("subscribers")
def ingest_subscribers(
    file: Annotated[Path, typer.Argument(help="directory CSV", exists=True, dir_okay=False)],
    opted_out_column: Annotated[
        str | None,
        typer.Option(
            "--opted-out-column",
            help="column listing measures each subscriber opted out of (M5;M7): recorded in the "
            "consent registry",
        ),
    ] = None,
    via: Annotated[
        str, typer.Option("--via", help="consent channel recorded for those opt-outs")
    ] = "api",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="parse and report, store nothing")] = (
        False
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Load the subscriber directory (subscriber_id, contract, email, language) that alerts are
    addressed from. Other columns are not stored."""
    from mamori.ingest.subscribers import load_subscribers

    try:
        report = load_subscribers(
            STATE.gov(),
            file,
            actor=actor_name(),
            opted_out_column=opted_out_column,
            channel=via,
            dry_run=dry_run,
        )
    except (ValueError, OSError) as exc:
        fail(str(exc), code=2)
    _print_ingest_report(report, as_json)


@app.command("attribute")
def attribute_cmd(
    ip: Annotated[str, typer.Option("--ip", help="the address seen")],
    at: Annotated[str, typer.Option("--at", help="when (ISO 8601; no zone means UTC)")],
    port: Annotated[
        int | None,
        typer.Option("--port", help="the port seen (required behind CGNAT)", min=0, max=65535),
    ] = None,
    measure: Annotated[
        str, typer.Option("--measure", "-m", help="measure the lookup is for (M5, M6, M9, M13)")
    ] = "M5",
    basis: Annotated[
        str | None,
        typer.Option(
            "--basis",
            help="legal basis: consent (opted-out subscribers are not looked up), "
            "justified-act, emergency [default: the measure's first]",
        ),
    ] = None,
    justification: Annotated[
        str | None,
        typer.Option(
            "--justification", help="the risk test that holds (required for justified-act)"
        ),
    ] = None,
    case: Annotated[str | None, typer.Option("--case", help="abuse-desk case id")] = None,
    skew: Annotated[
        float | None,
        typer.Option(
            "--skew", help="clock-skew tolerance in seconds [default: attribution.skew_s]"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Who held an address (and port) at a time. Answers ok (with the subscriber), ambiguous
    (more than one holder within the clock-skew tolerance), unknown, or port-required (a shared
    CGNAT address given without --port). Every lookup is written to the audit log.
    Exit status 3 when the answer is not ok."""
    from mamori.attribute import attribute_one
    from mamori.governance import AccessRefused

    when = parse_time(at)
    assert when is not None
    try:
        res = attribute_one(
            STATE.gov(),
            ip,
            port,
            when,
            measure=measure.upper(),
            actor=actor_name(),
            case=case,
            basis=basis,
            justification=justification,
            skew_s=skew,
        )
    except AccessRefused as exc:
        fail(str(exc), code=2)
    if as_json:
        out.print_json(res.model_dump_json())
    else:
        where = f"{ip}:{port}" if port is not None else ip
        line = f"{where} at {res.ts.isoformat()}: {res.status}"
        if res.subscriber_id is not None:
            line += f" — subscriber {res.subscriber_id}"
            if res.inside_addr:
                line += f" (inside address {res.inside_addr})"
            line += f" [from {res.allocation_source}]"
        out.print(escape(line), highlight=False)
    if res.status != "ok":
        raise typer.Exit(3)


# ---- alerts: report ingest and notify (issue 6) ----


class _ReportKindOpt(StrEnum):
    infected = "infected"
    takedown = "takedown"
    vulnerable = "vulnerable"


class _ReportFormatOpt(StrEnum):
    shadowserver = "shadowserver"
    xarf = "xarf"
    csv = "csv"
    json = "json"


@ingest_app.command("report")
def ingest_report(
    file: Annotated[Path, typer.Argument(help="the report file", exists=True, dir_okay=False)],
    kind: Annotated[
        _ReportKindOpt,
        typer.Option(
            "--kind",
            help="infected: hosts talking to C&C/sinkholes (alerts under M5); takedown: a "
            "taken-down C&C server's victim log (M6); vulnerable: vulnerable devices such as "
            "NICT NOTICE lists or scan reports (M9)",
        ),
    ],
    fmt: Annotated[
        _ReportFormatOpt,
        typer.Option(
            "--format",
            help="shadowserver: Shadowserver CSV (event4_sinkhole, scan_dns …); xarf: X-ARF v4 "
            "JSON; csv / json: records with an address, a time and optionally a port",
        ),
    ] = _ReportFormatOpt.csv,
    source: Annotated[
        str | None,
        typer.Option("--source", help="who sent the report (default: the format name)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Load a third-party report as findings, ready for `mamori notify`. Bad records are
    counted and listed with their line numbers; the good ones around them are kept. Loading the
    same report twice stores nothing new."""
    from mamori.ingest.reports import load_report, parse_report

    try:
        parsed = parse_report(file, fmt.value)
    except ValueError as exc:
        fail(f"{file}: {exc}")
    res = load_report(
        STATE.gov(), parsed, kind.value, actor=actor_name(), source=source or fmt.value
    )
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "file": str(file),
                    "kind": res.kind,
                    "measure": res.measure,
                    "records": res.records,
                    "stored": res.stored,
                    "duplicates": res.duplicates,
                    "bad": [{"line": b.line, "reason": b.reason} for b in res.bad],
                }
            )
        )
        return
    out.print(
        f"{file}: {res.records} records, {res.stored} stored as {res.kind} findings "
        f"({res.measure}), {res.duplicates} already known, {len(res.bad)} bad",
        highlight=False,
    )
    for b in res.bad[:20]:
        err.print(f"  line {b.line}: {b.reason}", highlight=False, markup=False)
    if len(res.bad) > 20:
        err.print(f"  … {len(res.bad) - 20} more bad records", highlight=False)


notify_app = typer.Typer(
    help="Alert subscribers by e-mail (M5 infected devices, M6 takedown victims, M9 "
    "vulnerable devices)."
)
app.add_typer(notify_app, name="notify")


@notify_app.callback(invoke_without_command=True)
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


# ---- C&C discovery (issue 5, M2) ----


class C2Method(StrEnum):
    correlation = "correlation"
    learned = "learned"
    beacon = "beacon"


@detect_app.command("c2")
def detect_c2_cmd(
    since: Annotated[
        str | None, typer.Option("--since", help="start of the window (ISO 8601, UTC)")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="end of the window; feed entries listed after it are not used as seeds",
        ),
    ] = None,
    method: Annotated[
        list[C2Method] | None,
        typer.Option(
            "--method",
            help="correlation: peers that hosts of known C&C converge on more than everyone "
            "does; learned: the trained model; beacon: regular timing and sizes to a rarely "
            "used endpoint. Repeatable [default: all three]",
        ),
    ] = None,
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="first train a new version of the learned model on this window (listed C&C "
            "are the positives) and store it; then detect with it",
        ),
    ] = False,
    include_known: Annotated[
        bool,
        typer.Option(
            "--include-known", help="also report endpoints the feeds already list (marked known)"
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object per finding (JSON lines)")
    ] = False,
) -> None:
    """Find C&C servers the feeds do not list yet, from the flows (measure M2, justified act).

    Findings name outside endpoints (address, port, protocol) with a score, the method and the
    evidence (how many internal hosts and sampled flow records support it) — never a subscriber
    or an internal address. They are stored as findings of kind c2."""
    from mamori.detect.c2 import METHODS, run_c2
    from mamori.detect.c2_learned import TrainingError

    methods = tuple(m.value for m in method) if method else METHODS
    try:
        run = run_c2(
            STATE.gov(),
            actor=actor_name(),
            since=parse_time(since),
            until=parse_time(until),
            methods=methods,
            train=train,
            include_known=include_known,
        )
    except TrainingError as exc:
        fail(str(exc))
    rows = run.findings.to_pylist()
    if as_json:
        for r in rows:
            r["evidence"] = json.loads(r["evidence"]) if r["evidence"] else None
            for k in ("detected", "first_seen", "last_seen"):
                r[k] = r[k].isoformat() if r[k] else None
            typer.echo(json.dumps(r, sort_keys=True))
        err.print(json.dumps(run.summary, default=str), highlight=False)
        return
    t = Table(title=f"C&C findings ({len(rows)}; {run.summary.get('seeds', 0)} seeds)")
    for col in ("ip", "port", "proto", "method", "score", "hosts", "first seen", "last seen"):
        t.add_column(col, justify="right" if col in ("port", "score", "hosts") else "left")
    for r in rows:
        ev = json.loads(r["evidence"]) if r["evidence"] else {}
        hosts = max(
            (int(v.get("supporting_hosts") or v.get("endpoint_hosts") or 0) for v in ev.values()
             if isinstance(v, dict)),
            default=0,
        )  # fmt: skip
        t.add_row(
            r["ip"],
            str(r["port"]),
            r["protocol"],
            r["method"],
            f"{r['score']:.3f}",
            str(hosts),
            r["first_seen"].isoformat() if r["first_seen"] else "",
            r["last_seen"].isoformat() if r["last_seen"] else "",
        )
    out.print(t)
    for key in ("learned", "known_endpoints_seen", "inside_plan_dropped"):
        if key in run.summary:
            out.print(f"{key}: {run.summary[key]}", highlight=False)


# ---- end of C&C discovery ----

_PENDING: list[tuple[typer.Typer, str, str, str, int | None]] = [
    (ingest_app, "mail", "ingest mail", "Load Postfix / Dovecot logs (SMTP AUTH events).", None),
    (detect_app, "ddos", "detect ddos", "Find DDoS victims and sources (M13).", None),
    (
        detect_app,
        "reflection",
        "detect reflection",
        "Find reflection/amplification traffic (M10).",
        None,
    ),
    (detect_app, "spoofing", "detect spoofing", "Find spoofed-source traffic (M13).", None),
    (
        detect_app,
        "smtp",
        "detect smtp",
        "Find SMTP AUTH brute force and compromised accounts (M11, M12).",
        None,
    ),
]


def _register_pending() -> None:
    for parent, name, full, help_text, issue in _PENDING:

        def make(issue: int | None, full: str) -> Any:
            def cmd(
                args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
            ) -> None:
                not_built(full, issue)

            return cmd

        parent.command(
            name,
            help=f"{help_text} [not built yet: {_arrives(issue)}]",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(make(issue, full))


_register_pending()


# --------------------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="directory for everything the demo writes (emptied first)"),
    ] = Path("demo-out"),
    scenario: Annotated[str, typer.Option("--scenario", help="simulated ISP to defend")] = "demo",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="stop after the pipeline instead of serving")
    ] = False,
    host: Annotated[str | None, typer.Option("--host", help="console address")] = None,
    port: Annotated[int | None, typer.Option("--port", help="console port")] = None,
) -> None:
    """Defend a simulated ISP end to end: simulate it; load its subscriber records; collect its
    routers' NetFlow/IPFIX/sFlow exports over UDP; load feeds, resolver logs and third-party
    reports; discover C&C servers and infected hosts; write RPZ zones; share the C&C list; alert
    subscribers by e-mail through a local SMTP server; build the transparency report; score the
    detectors against the ground truth; then serve the console (logins printed and kept in
    OUT/logins.txt). Everything goes under --out, including the store and a mamori.toml for
    running any other command on the result (`mamori --config OUT/mamori.toml …`)."""
    from mamori.demo import DemoError, run_demo, summary_table

    base = STATE.config()
    if host or port:
        h, p = host or base.web.host, port or base.web.port
        base = base.model_copy(
            update={
                "web": base.web.model_copy(
                    update={"host": h, "port": p, "base_url": f"http://{h}:{p}"}
                )
            }
        )
    try:
        result = run_demo(base, out_dir, scenario=scenario, seed=seed, console=out)
    except DemoError as exc:
        fail(str(exc), code=2)
    try:
        out.print(summary_table(result))
        if not result.audit_ok:
            fail("the audit log does not verify")
        cfg = result.config
        url = f"http://{cfg.web.host}:{cfg.web.port}"
        t = Table(title="console logins (also in " + str(out_dir / "logins.txt") + ")")
        for col in ("account", "role", "password"):
            t.add_column(col)
        from mamori.demo import DEMO_ACCOUNTS

        for name, pw in result.logins.items():
            t.add_row(name, DEMO_ACCOUNTS[name], pw)
        out.print(t)
        out.print(
            f"other commands on this store: mamori --config {out_dir / 'mamori.toml'} …",
            highlight=False,
        )
        if no_serve:
            return
        from mamori.governance import Governance
        from mamori.web.app import serve as serve_console

        out.print(
            f"\n[bold]console[/] on {url}/console — sign in as [bold]desk[/] to see the alerts "
            f"and the mails the subscribers received; public notice {url}/ ; Ctrl-C stops.",
            highlight=False,
        )
        serve_console(Governance(cfg), cfg.web.host, cfg.web.port, log_level="warning")
    finally:
        result.close()


def main() -> None:
    app(prog_name="mamori")


if __name__ == "__main__":
    main()
