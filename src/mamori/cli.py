"""The ``mamori`` command line.

One sub-command group per stage (ARCHITECTURE.md). ``--store DIR`` and ``--config FILE`` are
accepted anywhere on the line. A command whose stage is not built yet says so and exits with
status 69 (EX_UNAVAILABLE); it never prints made-up output.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from collections import Counter
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
    from mamori.sim import SCENARIOS, simulate

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
        from mamori.sim import score_files

        result = score_files(kind, findings, truth)
        c2_extra: dict[str, Any] = {}
        if kind == "c2":
            from mamori.sim import load_findings, score_c2

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


# ---- end of reputation ----

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
    (
        ingest_app,
        "allocations",
        "ingest allocations",
        "Load address-allocation logs: RADIUS accounting, Kea DHCP leases, CGNAT port blocks, CSV.",
        6,
    ),
    (
        ingest_app,
        "dns",
        "ingest dns",
        "Load resolver query logs (dnstap, Unbound) of consenting subscribers.",
        8,
    ),
    (ingest_app, "mail", "ingest mail", "Load Postfix / Dovecot logs (SMTP AUTH events).", None),
    (
        ingest_app,
        "report",
        "ingest report",
        "Load third-party reports to act on (Shadowserver, X-ARF, CSV).",
        6,
    ),
    (
        detect_app,
        "infected",
        "detect infected",
        "Find likely-infected address+port+time by matching C&C lists (M4).",
        5,
    ),
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
    (app, "attribute", "attribute", "Who held an address (and port) at a time (audited).", 6),
    (app, "act", "act", "Turn findings into actions: RPZ, filters, FlowSpec, SMTP refusals.", 8),
    (app, "notify", "notify", "Send alert e-mails to subscribers (M5, M6, M9).", 6),
    (share_app, "export", "share export", "Export the C&C list (STIX 2.1, MISP, CSV).", 9),
    (share_app, "import", "share import", "Import peers' C&C lists.", 9),
    (share_app, "peers", "share peers", "Manage TAXII peers and trust groups.", 9),
    (
        report_app,
        "transparency",
        "report transparency",
        "The public transparency report for a month.",
        7,
    ),
    (app, "serve", "serve", "Serve the web console.", 7),
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
        Path, typer.Option("--out", help="where the simulated ISP's files are written")
    ] = Path("demo-out"),
    scenario: Annotated[str, typer.Option("--scenario", help="simulated ISP to defend")] = "demo",
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Run every stage that exists on the simulated ISP: simulate it, collect its routers'
    NetFlow/IPFIX/sFlow exports over UDP on 127.0.0.1, check the audit log. Stages not built yet
    are listed as such; nothing is faked."""
    import threading

    from mamori.ingest.collector import Listen
    from mamori.sim import replay, simulate

    gov = STATE.gov()
    cfg = STATE.config()
    out.print(f"[bold]Mamori demo[/] — store {cfg.store.resolve()}, simulated ISP in {out_dir}")
    out.print(
        f"measure catalogue: {len(gov.catalogue)} measures, "
        f"{len(gov.catalogue.consent_based())} rest on consent"
    )

    out.print(f"\n[bold]1. simulate[/] scenario {scenario!r} (seed {seed})")
    summary = simulate(scenario, out_dir, seed=seed)
    out.print(
        f"   {summary.counts.get('subscribers', '?')} subscribers; "
        f"{sum(r.records + r.samples for r in summary.routers):,} flow records exported by "
        f"{len(summary.routers)} routers",
        highlight=False,
    )

    out.print("\n[bold]2. collect[/] the routers' exports over UDP (measure M1)")
    collector = Collector(gov, cfg.collector.model_copy(update={"flush_interval_s": 1.0}))
    collector.start([Listen("127.0.0.1", 0)])
    port = collector.bound()[0].port
    worker = threading.Thread(target=collector.run, name="collector")
    worker.start()
    sent = replay(out_dir / summary.files["pcap"], port=port, rate=50_000)
    time.sleep(0.5)
    collector.request_stop()
    worker.join()
    stats = collector.stats
    t = Table(title=f"collector on udp://127.0.0.1:{port}: {sent:,} datagrams sent")
    for col in ("router", "protocol", "sampling 1/N", "exported", "stored"):
        t.add_column(col, justify="left" if col in ("router", "protocol") else "right")
    for r in summary.routers:
        exported = r.records + r.samples
        stored = stats.by_exporter.get(r.exporter_ip, Counter())["records"]
        t.add_row(r.name, r.protocol, str(r.sampling), f"{exported:,}", f"{stored:,}")
    out.print(t)
    out.print(_status_line(stats), highlight=False)

    out.print("\n[bold]3. audit[/]")
    result = gov.audit.verify()
    out.print(str(result), highlight=False)
    out.print("\nstages not built yet (each arrives with its issue):")
    for _, _, full, _, issue in _PENDING:
        out.print(f"  mamori {full:<22} {_arrives(issue)}", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def main() -> None:
    app(prog_name="mamori")


if __name__ == "__main__":
    main()
