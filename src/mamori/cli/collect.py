"""`mamori collect`: the flow collector (M1) and its counters."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mamori.cli.common import STATE, err, fail, out
from mamori.ingest.collector import Collector, Stats, iter_stat_lines, load_stats, parse_listen
from mamori.logs import configured

log = logging.getLogger("mamori.ingest.collector")

collect_app = typer.Typer(
    help="The flow collector (measure M1): NetFlow v5/v9, IPFIX and sFlow into header-only "
    "Parquet. Run with --listen and/or --pcap; `mamori collect stats` shows its counters.",
)


def _status_line(stats: Stats) -> str:
    c = stats.counters
    packets = sum(v for k, v in c.items() if k.startswith("packets.") and "dropped" not in k)
    errors = sum(v for k, v in c.items() if k.startswith("errors."))
    return (
        f"packets {packets:,}  records {c.get('records.out', 0):,}  written "
        f"{stats.rows_written:,}  errors {errors:,}  awaiting templates "
        f"{c.get('records.pending', 0):,}  kernel drops {c.get('packets.dropped_by_kernel', 0):,}"
    )


def _status_counts(stats: Stats) -> dict[str, int]:
    c = stats.counters
    return {
        "packets": c.get("packets.received", 0),
        "records": c.get("records.out", 0),
        "written": stats.rows_written,
        "errors": sum(v for k, v in c.items() if k.startswith("errors.")),
        "kernel_drops": c.get("packets.dropped_by_kernel", 0),
        "receiver_drops": c.get("packets.dropped_by_receiver", 0),
    }


def _serve_metrics(collector: Collector, group: str, address: str | None) -> Any:
    from mamori.ingest.metrics import CollectorMetrics, serve_metrics

    address = address or STATE.config().collector.metrics_for(group)
    if address is None:
        return None
    metrics = CollectorMetrics(collector, group, STATE.config().pools())
    try:
        server, _ = serve_metrics(metrics, address)
    except (OSError, ValueError) as exc:
        collector.close()
        fail(f"cannot serve metrics on {address}: {exc}", code=2)
    err.print(f"metrics on http://{address}/metrics", highlight=False)
    return server


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
            help="EXPORTER=RATE: 1-in-RATE sampling for this exporter, used instead of what it reports (repeatable)",
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            help="HOST:PORT to serve Prometheus metrics on while listening, e.g. "
            "127.0.0.1:9465 [default: the group's metrics setting]",
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="run the listener group NAME of the configuration ([collector.groups.NAME]; "
            "default: collector.listen): what the unit mamori-collect@NAME runs",
        ),
    ] = None,
    detect_ddos: Annotated[
        bool,
        typer.Option(
            "--detect-ddos",
            help="also detect DDoS (M13) on each decoded batch as it arrives ([detect.ddos]); "
            "attacks are printed and stored as findings at once",
        ),
    ] = False,
    mitigate: Annotated[
        bool,
        typer.Option(
            "--mitigate",
            help="with --detect-ddos: propose a FlowSpec/RTBH route for each inbound attack "
            "(approved and announced at once only for [network.bgp] auto_approve types)",
        ),
    ] = False,
) -> None:
    """Receive or replay flow exports and store them (measure M1). Stops on SIGTERM/SIGINT after
    writing everything received."""
    if ctx.invoked_subcommand:
        return
    base = STATE.config().collector
    if group is not None:
        groups = base.listen_groups()
        if group not in groups:
            fail(
                f"no listener group {group!r} in the configuration (configured: "
                f"{', '.join(groups) or 'none'})",
                code=2,
            )
        listen = [*groups[group], *(listen or [])]
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
    collector = Collector(STATE.gov(), settings, group=group or "default")
    if detect_ddos:
        from mamori.detect.ddos import Attack, DdosParams, DdosStream
        from mamori.detect.registry import DetectorConfigError, params_for

        try:
            params = params_for(STATE.config().detect, "ddos")
        except DetectorConfigError as exc:
            fail(str(exc), code=2)
        assert isinstance(params, DdosParams)

        def show(a: Attack) -> None:
            err.print(
                f"DDoS {a.direction} {a.kind} {a.target}: {a.pps:,.0f} pps, "
                f"{a.bps / 1e6:,.1f} Mbit/s ({a.metric} over threshold)",
                highlight=False,
            )
            if mitigate:
                from mamori.act.backends import default_backends
                from mamori.act.mitigation import propose_mitigation
                from mamori.detect.ddos import attack_findings

                gov = STATE.gov()
                [row] = attack_findings([a]).to_pylist()
                try:
                    action = propose_mitigation(
                        gov, row, "collector", backends=default_backends(gov.config)
                    )
                except Exception as exc:  # a failed announcement must not stop collection
                    err.print(f"mitigation of {a.target} failed: {exc}", highlight=False)
                    return
                if action is not None:
                    err.print(
                        f"  {action.kind} {action.action_id} {action.state}: {action.target}",
                        highlight=False,
                    )

        collector.observers.append(DdosStream(STATE.gov(), "collector", params, on_attack=show))
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
    # after start(): the receiver process is forked without the metrics server's socket
    server = _serve_metrics(collector, group or "default", metrics)
    tty = err.is_terminal
    as_log = configured()  # --log-format: status lines go to the log (the journal), with counts

    def status(stats: Stats) -> None:
        if as_log:
            log.info(
                "collector: %s",
                _status_line(stats),
                extra={"event": "collector.status", "counts": _status_counts(stats)},
            )
        elif tty:
            err.print(_status_line(stats), end="\r", highlight=False)
        else:
            err.print(_status_line(stats), highlight=False)

    try:
        collector.run(status=status, status_every_s=1.0 if tty and not as_log else 10.0)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if as_log:
        log.info(
            "collector: stopped; %s",
            _status_line(collector.stats),
            extra={"event": "collector.stopped", "counts": _status_counts(collector.stats)},
        )
    else:
        err.print("\nstopped; " + _status_line(collector.stats), highlight=False)


@collect_app.command("stats")
def collect_stats(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    group: Annotated[
        str, typer.Option("--group", help="the listener group whose counters to show")
    ] = "default",
) -> None:
    """Print the collector's counters as of its last flush: packets and records per exporter and
    version, decode errors by kind, unknown templates, records awaiting templates, kernel drops."""
    stats = load_stats(STATE.gov(), group)
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
