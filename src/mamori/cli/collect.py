"""`mamori collect`: the flow collector (M1) and its counters."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mamori.cli.common import STATE, err, fail, out
from mamori.config import CollectorConfig
from mamori.ingest.collector import (
    Collector,
    Listen,
    Stats,
    iter_stat_lines,
    load_stats,
    parse_listen,
)
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
            "attacks are printed and stored as findings at once; the subscribers' devices "
            "sending an outbound attack are stored as attack-source findings once their flows "
            "are (for `mamori notify`); each prefix's usual rate is kept in <store>/_state/ddos",
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
    decoders: Annotated[
        int | None,
        typer.Option(
            "--decoders",
            min=1,
            max=64,
            help="decoding processes sharing the ports (SO_REUSEPORT): each exporter is "
            "decoded by one of them, so this helps with several exporters, not with one; "
            "with --metrics HOST:PORT process K serves on PORT+K [default: "
            "collector.decoders, 1]",
        ),
    ] = None,
    shard: Annotated[
        int | None,
        typer.Option("--shard", hidden=True, help="internal: run as decoding process K"),
    ] = None,
) -> None:
    """Receive or replay flow exports and store them (measure M1). Stops on SIGTERM/SIGINT after
    writing everything received."""
    if ctx.invoked_subcommand:
        return
    base = STATE.config().collector
    if group is not None and shard is None:  # a decoding process gets its listeners resolved
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
    n_decoders = decoders if decoders is not None else base.decoders
    if shard is None and n_decoders > 1:
        if pcap or detect_ddos:
            fail(
                "--decoders above 1 decodes live listeners only, and --detect-ddos needs every "
                "record of a target in one process: run --pcap or --detect-ddos with one decoder",
                code=2,
            )
        raise typer.Exit(_run_decoders(listens, settings, group or "default", n_decoders, metrics))
    collector = Collector(STATE.gov(), settings, group=group or "default", shard=shard)
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

        def senders(a: Attack, n: int) -> None:
            err.print(
                f"  {n} sender(s) inside of the outbound attack on {a.target}: attack-source "
                "findings (M13) for `mamori notify`",
                highlight=False,
            )

        stream = DdosStream(STATE.gov(), "collector", params, on_attack=show, on_senders=senders)
        collector.observers.append(stream)
        collector.after_flush.append(stream.flushed)
    for path in pcap or []:
        stats = collector.replay_pcap(path)
        err.print(f"{path}: {_status_line(stats)}", highlight=False)
    if not listens:
        return
    try:
        collector.start(listens, reuse_port=shard is not None)
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
        collector.run(
            # a decoding process leaves the status line to its supervisor (the sum of all)
            status=status if shard is None or as_log else None,
            status_every_s=1.0 if tty and not as_log else 10.0,
        )
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if shard is not None and not as_log:
        return
    if as_log:
        log.info(
            "collector: stopped; %s",
            _status_line(collector.stats),
            extra={"event": "collector.stopped", "counts": _status_counts(collector.stats)},
        )
    else:
        err.print("\nstopped; " + _status_line(collector.stats), highlight=False)


def _run_decoders(
    listens: list[Listen],
    settings: CollectorConfig,
    group: str,
    n: int,
    metrics: str | None,
) -> int:
    """Supervise ``n`` decoding processes on the same ports (mamori.ingest.shards)."""
    from mamori.ingest.shards import Supervisor, child_env, reserve_ports

    try:
        held = reserve_ports([(li.host, li.port) for li in listens])
    except OSError as exc:
        fail(str(exc))
    urls = [str(Listen(li.host, port)) for li, (_, port) in zip(listens, held, strict=True)]
    address = metrics or STATE.config().collector.metrics_for(group)
    metrics_host, metrics_port = None, 0
    if address:
        metrics_host, _, port_text = address.rpartition(":")
        if not port_text.isdigit() or not metrics_host:
            fail(f"--metrics {address!r}: expected HOST:PORT", code=2)
        metrics_port = int(port_text)
    commands = []
    for k in range(n):
        cmd = [sys.executable, "-m", "mamori.cli", "collect", "--shard", str(k), "--group", group]
        for url in urls:
            cmd += ["--listen", url]
        cmd += ["--flush-interval", str(settings.flush_interval_s)]
        for exporter, rate in settings.sampling_overrides.items():
            cmd += ["--sampling", f"{exporter}={rate}"]
        if metrics_host is not None:
            cmd += ["--metrics", f"{metrics_host}:{metrics_port + k}"]
        commands.append(cmd)
    config = STATE.config()
    env = child_env(
        MAMORI_STORE=str(config.store),
        MAMORI_CONFIG=str(STATE.config_file) if STATE.config_file else None,
        MAMORI_LOG_FORMAT=STATE.log_format,
        MAMORI_LOG_LEVEL=STATE.log_level,
    )
    supervisor = Supervisor(commands, env)
    try:
        supervisor.start()
    except RuntimeError as exc:
        fail(str(exc))
    finally:
        for sock, _ in held:  # the decoding processes hold the ports now
            sock.close()
    supervisor.install_signal_handlers()
    err.print(
        f"listening on {', '.join(urls)} with {n} decoding processes — SIGTERM or Ctrl-C to stop",
        highlight=False,
    )
    as_log = configured()

    def status() -> None:
        stats = load_stats(STATE.gov(), group)
        if stats is None:
            return
        line = _status_line(_stats_of(stats))
        if as_log:
            log.info("collector: %s", line, extra={"event": "collector.status"})
        else:
            err.print(line, highlight=False)

    code = supervisor.run(status, 10.0, settings.stop_timeout_s + 30.0)
    stats = load_stats(STATE.gov(), group)
    if stats is not None and not as_log:
        err.print("stopped; " + _status_line(_stats_of(stats)), highlight=False)
    return code


def _stats_of(data: dict[str, Any]) -> Stats:
    from collections import Counter

    return Stats(
        counters=Counter(data["counters"]),
        rows_written=data["rows_written"],
        files_written=data["files_written"],
    )


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
