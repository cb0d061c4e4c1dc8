"""`mamori detect`: detectors; findings name endpoints, never subscribers."""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mamori.cli.common import (
    STATE,
    Pending,
    actor_name,
    err,
    fail,
    out,
    parse_time,
    records_run,
    register_pending,
    run_count,
)

if TYPE_CHECKING:
    from mamori.detect.base import Detector


def _plain(v: Any) -> Any:
    """``v`` with every value JSON can hold: NaN and infinities (an empty window's rates) become
    null, times ISO 8601 text, anything else its text."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (str, int, bool)):
        return v
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item"):  # a NumPy scalar
        return _plain(v.item())
    return str(v)


def summary_json(summary: dict[str, Any]) -> str:
    """A run's summary as one line of strict JSON (no NaN), for stderr or a log."""
    return json.dumps(_plain(summary), sort_keys=True, allow_nan=False)


def _build(name: str, **options: Any) -> Detector:
    """The detector with its ``[detect.NAME]`` parameters; an invalid section exits 2."""
    from mamori.detect.registry import DetectorConfigError, build

    try:
        return build(name, STATE.config().detect, **options)
    except DetectorConfigError as exc:
        fail(str(exc), code=2)


detect_app = typer.Typer(
    help="Run a detector; findings name endpoints, never subscribers.", no_args_is_help=True
)


@detect_app.command("infected")
@records_run("detect-infected", unless=("dry_run",))
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
    from mamori.detect.base import Window
    from mamori.detect.reputation_match import InfectedDetector

    detector = _build("infected", write=not dry_run)
    assert isinstance(detector, InfectedDetector)
    report = detector.match(
        STATE.gov(), Window(parse_time(since), parse_time(until)), actor=actor_name()
    )
    run_count(
        findings=len(report.findings),
        flow_matches=report.flow_matches,
        dns_matches=report.dns_matches,
        held_back=len(report.held_back),
    )
    for h in report.held_back:
        # on stderr, so that --json stays one finding per line
        err.print(
            f"held for review, not alerted on: {h['indicator']} ({h['why']}; "
            f"{h['addresses'] if h['addresses'] is not None else '?'} of {h['active']:,} "
            "subscriber addresses)",
            highlight=False,
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


class C2Method(StrEnum):
    correlation = "correlation"
    learned = "learned"
    beacon = "beacon"


@detect_app.command("c2")
@records_run("detect-c2")
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
    from mamori.detect.base import Window
    from mamori.detect.c2 import METHODS
    from mamori.detect.c2_learned import TrainingError

    methods = tuple(m.value for m in method) if method else METHODS
    detector = _build("c2", methods=methods, train=train, include_known=include_known)
    try:
        run = detector.run(
            STATE.gov(), Window(parse_time(since), parse_time(until)), actor=actor_name()
        )
    except TrainingError as exc:
        fail(str(exc))
    rows = run.findings.to_pylist()
    run_count(findings=len(rows))
    if as_json:
        for r in rows:
            r["evidence"] = json.loads(r["evidence"]) if r["evidence"] else None
            for k in ("detected", "first_seen", "last_seen"):
                r[k] = r[k].isoformat() if r[k] else None
            typer.echo(json.dumps(r, sort_keys=True))
        # plain text: a rich console would wrap the line and read [..] as markup
        typer.echo(summary_json(run.summary), err=True)
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
    for key in ("learned", "known_endpoints_seen", "inside_plan_dropped", "special_dropped"):
        if key in run.summary:
            out.print(f"{key}: {run.summary[key]}", highlight=False)
    typer.echo(summary_json(run.summary), err=True)


def _print_run(title: str, run: Any, as_json: bool, columns: dict[str, str]) -> None:
    """A detector run as JSON lines (findings; the summary on stderr) or a table: ``columns``
    maps a heading to an evidence key."""
    rows = run.findings.to_pylist()
    if as_json:
        for r in rows:
            r["evidence"] = json.loads(r["evidence"]) if r["evidence"] else None
            for k in ("detected", "first_seen", "last_seen"):
                r[k] = r[k].isoformat() if r[k] else None
            typer.echo(json.dumps(r, sort_keys=True))
        typer.echo(summary_json(run.summary), err=True)
        return
    t = Table(title=f"{title} ({len(rows)})")
    for col in ("ip", "port", "method", *columns, "score", "first seen", "last seen"):
        t.add_column(col, no_wrap=col == "ip")
    for r in rows:
        ev = json.loads(r["evidence"]) if r["evidence"] else {}
        t.add_row(
            r["ip"] or "",
            "" if r["port"] is None else str(r["port"]),
            r["method"] or "",
            *(str(ev.get(k, "")) for k in columns.values()),
            f"{r['score']:.3f}",
            r["first_seen"].isoformat() if r["first_seen"] else "",
            r["last_seen"].isoformat() if r["last_seen"] else "",
        )
    out.print(t)
    # plain text: a rich console would wrap the line and read [..] as markup
    typer.echo(summary_json(run.summary))


@detect_app.command("spoofing")
def detect_spoofing(
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
    """Find spoofed sources (BCP 38, M13): flows entering on a customer-facing interface
    ([[network.customer_interfaces]]) from addresses that are not behind it. One finding per
    interface (its exporter, index and name; counts and estimated packets), never a subscriber.
    `mamori act filters --kind spoofing` renders the uRPF and ACL configuration."""
    from mamori.detect.base import Window

    detector = _build("spoofing", write=not dry_run)
    try:
        run = detector.run(
            STATE.gov(), Window(parse_time(since), parse_time(until)), actor=actor_name()
        )
    except ValueError as exc:
        fail(str(exc), code=2)
    columns = {"interface": "interface", "input_if": "input_if", "records": "records",
               "est. packets": "estimated_packets", "share": "share"}  # fmt: skip
    _print_run("Spoofed sources per customer interface", run, as_json, columns)


@detect_app.command("reflection")
def detect_reflection(
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
    """Find reflection/amplification in the flows (M13): victims (an inside host receiving UDP
    from many sources on reflection ports, rate corrected for sampling) and open reflectors (an
    inside host answering many outside hosts on 53/123/1900/11211; the ISP's resolvers never).
    Thresholds: [detect.reflection]."""
    from mamori.detect.base import Window

    detector = _build("reflection", write=not dry_run)
    run = detector.run(
        STATE.gov(), Window(parse_time(since), parse_time(until)), actor=actor_name()
    )
    columns = {"sources": "sources", "clients": "clients", "est. pps": "est_pps",
               "est. bit/s": "est_bps"}  # fmt: skip
    _print_run("Reflection victims and open reflectors", run, as_json, columns)


@detect_app.command("ddos")
def detect_ddos(
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
    """Find DDoS attacks (M13) in stored flows: victims and inside sources flooding others, per
    address and per prefix (carpet bombing), SYN/UDP/ICMP floods and amplification; packets,
    bits and flows per second corrected for sampling, each record spread over its duration.
    The same engine runs live on the collector: `mamori collect --detect-ddos`. Thresholds:
    [detect.ddos] (FastNetMon's defaults: 20,000 pps, 1,000 Mbit/s, 3,500 flows/s)."""
    from mamori.detect.base import Window

    detector = _build("ddos", write=not dry_run)
    run = detector.run(
        STATE.gov(), Window(parse_time(since), parse_time(until)), actor=actor_name()
    )
    columns = {"scope": "scope", "direction": "direction", "pps": "pps", "bit/s": "bps",
               "flows/s": "flows"}  # fmt: skip
    _print_run("DDoS attacks", run, as_json, columns)


class SmtpPart(StrEnum):
    brute_force = "brute-force"
    compromised = "compromised"


def smtp_finding_json(row: dict[str, Any]) -> dict[str, Any]:
    """A finding of ``detect smtp`` as printed with --json (and scored by ``eval smtp``)."""
    out = {
        k: row[k]
        for k in ("finding_id", "kind", "method", "ip", "score", "measure")
        if row.get(k) is not None
    }
    for k in ("first_seen", "last_seen"):
        out[k] = row[k].isoformat() if row[k] else None
    if row.get("auth_id"):
        out["auth_id"] = row["auth_id"]
    out["evidence"] = json.loads(row["evidence"]) if row["evidence"] else None
    return out


@detect_app.command("smtp")
def detect_smtp(
    since: Annotated[
        str | None, typer.Option("--since", help="start of the window (ISO 8601, UTC)")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="end of the window, exclusive (ISO 8601)")
    ] = None,
    only: Annotated[
        list[SmtpPart] | None,
        typer.Option(
            "--only",
            help="brute-force: addresses guessing passwords (M12); compromised: AUTH IDs whose "
            "credentials send spam (M11). Repeatable [default: both]",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object per finding (JSON lines)")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report findings without storing them")
    ] = False,
) -> None:
    """Find SMTP AUTH abuse in the mail-server logs loaded with `mamori ingest mail`.

    Brute force (M12, detector smtp-brute-force): failures per address in a window (fail2ban's
    5 in 10 minutes to start from), slow guessing over days, user-name enumeration, and one
    account tried from many addresses. Compromised accounts (M11, detector smtp-compromised): a
    queue spike (queue samples, else the qmgr recipient counts) and, per AUTH ID sending in it,
    its recipients per hour against its own baseline, the addresses, networks and ASNs it sent
    from, and failures just before a success. Thresholds: [detect.smtp-brute-force] and
    [detect.smtp-compromised]. Findings are stored for `mamori act smtp`."""
    from mamori.detect.base import Window

    parts = only or [SmtpPart.brute_force, SmtpPart.compromised]
    names = {SmtpPart.brute_force: "smtp-brute-force", SmtpPart.compromised: "smtp-compromised"}
    window = Window(parse_time(since), parse_time(until))
    gov = STATE.gov()
    rows: list[dict[str, Any]] = []
    summaries: dict[str, Any] = {}
    for part in dict.fromkeys(parts):
        run = _build(names[part], write=not dry_run).run(gov, window, actor=actor_name())
        rows += run.findings.to_pylist()
        summaries[names[part]] = run.summary
    if as_json:
        for r in rows:
            typer.echo(json.dumps(smtp_finding_json(r), sort_keys=True, default=str))
        typer.echo(json.dumps(summaries, default=str, sort_keys=True), err=True)
        return
    t = Table(title=f"SMTP AUTH findings ({len(rows)})")
    for col in ("kind", "method", "address", "AUTH ID", "score", "first seen", "last seen"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["kind"],
            r["method"],
            r["ip"] or "",
            r["auth_id"] or "",
            f"{r['score']:.2f}",
            r["first_seen"].isoformat() if r["first_seen"] else "",
            r["last_seen"].isoformat() if r["last_seen"] else "",
        )
    out.print(t)
    for name, summary in summaries.items():
        out.print(f"{name}: {json.dumps(summary, default=str)}", highlight=False, markup=False)


PENDING: list[Pending] = []

register_pending(PENDING)


class ReviewVerdict(StrEnum):
    confirmed = "confirmed"
    rejected = "rejected"


#: a finding id's prefix names the measure its detector serves
_FINDING_MEASURE = {"c2-": "M2", "inf-": "M4"}


# `mamori review`: a single command, registered on the root app in cli/__init__.py.
def review_cmd(
    finding_id: Annotated[
        str, typer.Argument(help="the finding's id, as `detect c2 --json` prints it")
    ],
    verdict: Annotated[
        ReviewVerdict,
        typer.Option(
            "--verdict",
            help="confirmed: it is what it claims (a C&C may then be shared, and trains the "
            "model as a positive); rejected: it is not (a rejected C&C endpoint is left out of "
            "later `detect c2` runs and trains the model as a negative)",
        ),
    ],
) -> None:
    """Record an analyst's verdict on a finding, as the console's review does (audited as
    `review`). False positives, which also take back the actions taken on a finding, are marked
    in the console."""
    import pyarrow.compute as pc

    from mamori.detect.reviews import Reviews

    measure = next((m for p, m in _FINDING_MEASURE.items() if finding_id.startswith(p)), None)
    if measure is None:
        fail(f"{finding_id!r} is not a C&C (c2-…) or infected-host (inf-…) finding id")
    gov = STATE.gov()
    t = gov.open(measure, "findings", ["finding_id"], actor_name()).arrow()
    if not pc.any(pc.equal(t.column("finding_id"), finding_id)).as_py():
        fail(f"no finding {finding_id} under {measure}")
    Reviews(gov).record(finding_id, measure, verdict.value, actor_name())
    out.print(f"{finding_id}: {verdict.value}", highlight=False)
