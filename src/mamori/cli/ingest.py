"""`mamori ingest`: load outside data (feeds, resolver logs, allocations, subscribers, reports)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mamori.cli.common import STATE, Pending, actor_name, err, fail, out, register_pending

if TYPE_CHECKING:
    from mamori.ingest.reports import LoadResult

ingest_app = typer.Typer(
    help="Load outside data: allocations, feeds, resolver and mail logs, third-party reports.",
    no_args_is_help=True,
)


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
    from mamori.ingest.textlines import NotText

    _refuse_empty(path)
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
    except NotText as exc:
        fail(f"{exc}; nothing stored", code=1)
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
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON report per file, one per line")
    ] = False,
) -> None:
    """Load resolver query logs into dns_queries, for consenting subscribers only (M7): queries of
    subscribers who opted out are dropped before storage. Bad frames or lines are counted and
    reported with their position. Exit status 1 if a file yields no client query (empty, not
    text, cut before any frame, or every line bad)."""
    from mamori.ingest.dns import DnstapListener, ingest_dnstap_file, ingest_unbound_log
    from mamori.ingest.textlines import NotText

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
        if path.stat().st_size == 0:
            err.print(f"{path}: the file is empty; nothing stored", highlight=False, markup=False)
            failed = True
            continue
        try:
            if kind is DnsFormat.dnstap:
                report = ingest_dnstap_file(gov, path, actor_name())
            else:
                report = ingest_unbound_log(gov, path, actor_name(), resolver=resolver)
        except NotText as exc:
            err.print(f"{exc}; nothing stored", highlight=False, markup=False)
            failed = True
            continue
        if as_json:
            out.print(json.dumps(report.as_dict()), highlight=False, markup=False, soft_wrap=True)
        else:
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
        elif not report.queries:
            err.print(
                f"{path}: no client query could be read ({report.malformed:,} malformed); "
                "nothing stored",
                highlight=False,
                markup=False,
            )
            failed = True
    if failed:
        raise typer.Exit(1)


class AllocFormat(StrEnum):
    radius = "radius"
    kea = "kea"
    cgnat_syslog = "cgnat-syslog"
    csv = "csv"


class KeaKeyOpt(StrEnum):
    hwaddr = "hwaddr"
    client_id = "client_id"
    hostname = "hostname"


# Every file loader answers alike (README, "Loading files"): exit 0 when something was stored
# (bad lines are listed with their numbers); 1 when nothing could be — an empty file, a file that
# is not text (binary, UTF-16), or one in which no record is usable; 2 when the file as a whole is
# not of the format (a header without the needed columns, a JSON document that does not parse).


def _refuse_empty(path: Path) -> None:
    if path.is_file() and path.stat().st_size == 0:
        fail(f"{path}: the file is empty; nothing stored", code=1)


def _nothing_read(path: Path, what: str, bad: int) -> str:
    return f"{path}: no {what} could be read ({bad:,} bad); nothing stored"


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
    from mamori.ingest.textlines import NotText

    _refuse_empty(file)
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
    except NotText as exc:
        fail(f"{exc}; nothing stored", code=1)
    except (ValueError, OSError) as exc:
        fail(str(exc), code=2)
    _print_ingest_report(report, as_json)
    if not report.sessions:
        fail(_nothing_read(file, "allocation", report.malformed))


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
    from mamori.ingest.textlines import NotText

    _refuse_empty(file)
    try:
        report = load_subscribers(
            STATE.gov(),
            file,
            actor=actor_name(),
            opted_out_column=opted_out_column,
            channel=via,
            dry_run=dry_run,
        )
    except NotText as exc:
        fail(f"{exc}; nothing stored", code=1)
    except (ValueError, OSError) as exc:
        fail(str(exc), code=2)
    _print_ingest_report(report, as_json)
    if not report.sessions:
        fail(_nothing_read(file, "subscriber", report.malformed))


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
    from mamori.ingest.textlines import NotText

    _refuse_empty(file)
    try:
        parsed = parse_report(file, fmt.value, limits=STATE.gov().config.input_limits)
    except NotText as exc:
        fail(f"{exc}; nothing stored", code=1)
    except ValueError as exc:
        fail(f"{file}: {exc}", code=2)
    res = load_report(
        STATE.gov(), parsed, kind.value, actor=actor_name(), source=source or fmt.value
    )
    _print_report_result(file, res, as_json)
    if not parsed.good:
        fail(_nothing_read(file, "record", len(res.bad)))


def _print_report_result(file: Path, res: LoadResult, as_json: bool) -> None:
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


PENDING: list[Pending] = [
    (ingest_app, "mail", "ingest mail", "Load Postfix / Dovecot logs (SMTP AUTH events).", None),
]
register_pending(PENDING)
