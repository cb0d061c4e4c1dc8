"""``mamori demo``: every stage on a simulated ISP, then the console.

The demo is an ordinary operator's run with the simulator standing in for the ISP: the routers'
exports travel over UDP into the real collector, the other sources are real files in their real
formats, alerts travel over SMTP to a real local server (the subscribers' mailboxes), and the
console serves what the store holds. Nothing is faked; each stage prints what it did, and the end
prints how the detectors scored against the simulator's ground truth.

Everything lands under one directory (``demo-out`` by default): ``sim/`` (the simulated ISP's
files), ``store/`` (Mamori's store), ``mamori.toml`` (the configuration, so that any ``mamori``
command can be run on the result), ``mailboxes/``, ``share/`` and ``logins.txt``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mamori.config import AddressPool, MamoriConfig
from mamori.demo_netprot import detect_network, network_config, threshold_pps
from mamori.governance import Governance

# Nothing outside the simulator and the demo imports the simulator (an import-linter contract):
# `mamori simulate` and `mamori eval` reach it through these.
from mamori.sim import SCENARIOS, load_findings, score_c2, score_files, simulate

__all__ = [
    "DEMO_ACCOUNTS",
    "SCENARIOS",
    "DemoError",
    "DemoResult",
    "demo_config",
    "load_findings",
    "run_demo",
    "score_c2",
    "score_files",
    "simulate",
]

ACTOR = "demo"
MARKER = ".mamori-demo"

#: console accounts the demo creates (name → role); passwords are generated and printed
DEMO_ACCOUNTS = {
    "admin": "admin",
    "analyst": "analyst",
    "desk": "abuse-desk",
    "operator": "operator",
    "auditor": "auditor",
}

_POOL_KINDS = {"static": "static", "dynamic": "dynamic", "cgnat-public": "cgnat"}


class DemoError(RuntimeError):
    """The demo cannot run (its output directory holds something else, a stage failed)."""


@dataclass
class DemoResult:
    out_dir: Path
    config: MamoriConfig
    lines: list[tuple[str, str, float]] = field(default_factory=list)  # stage, what, seconds
    logins: dict[str, str] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit_ok: bool = False
    seconds: float = 0.0
    #: the subscribers' mailboxes (a real SMTP server); left running for the console and for
    #: ``mamori notify`` on the demo's configuration, stopped by :meth:`close`
    sink: Any = None

    def close(self) -> None:
        if self.sink is not None:
            self.sink.stop()
            self.sink = None


def _prepare_out(out_dir: Path) -> None:
    """Start from an empty directory; only ever delete a previous demo's own output."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).exists():
            raise DemoError(
                f"{out_dir} exists and is not a previous demo's output; choose another --out"
            )
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by mamori demo; deleted by the next run\n")


def demo_config(
    base: MamoriConfig, out_dir: Path, sim_dir: Path, smtp_host: str, smtp_port: int
) -> MamoriConfig:
    """``base`` with the simulated ISP's address plan, the demo's store, its SMTP server and
    mailbox."""
    plan = json.loads((sim_dir / "world" / "address_plan.json").read_text(encoding="utf-8"))
    pools = tuple(
        AddressPool(name=p["name"], kind=_POOL_KINDS[p["kind"]], prefixes=(p["prefix"],))
        for p in plan["pools"]
        if p["kind"] in _POOL_KINDS
    )
    return base.model_copy(
        update={
            "store": out_dir / "store",
            "address_plan": pools,
            # the simulated Internet is the documentation ranges, which C&C discovery otherwise
            # never reports
            "detect": {
                **base.detect,
                "c2": {**base.detect.get("c2", {}), "report_documentation": True},
            },
            "smtp": base.smtp.model_copy(update={"host": smtp_host, "port": smtp_port}),
            "web": base.web.model_copy(update={"mailbox_dir": out_dir / "mailboxes"}),
            # the maps a Postfix and a Dovecot would read; the demo runs neither (no postmap),
            # and never touches this machine's firewall (no nftables)
            "mail": base.mail.model_copy(
                update={
                    "refusal_backends": ("postfix",),
                    "postmap_command": (),
                    "postfix_access_map": out_dir / "mail" / "client_access",
                    "dovecot_deny_file": out_dir / "mail" / "dovecot-deny.smtp",
                }
            ),
        }
    )


def _write_toml(config: MamoriConfig, path: Path) -> None:
    """The configuration the demo ran with, so ``mamori --config`` works on its output (strings
    as JSON strings, which TOML basic strings accept; paths absolute)."""

    def q(value: object) -> str:
        return json.dumps(str(value), ensure_ascii=False)

    mailbox = config.web.mailbox_dir.resolve() if config.web.mailbox_dir else None
    lines = [f"store = {q(config.store.resolve())}", f"isp_name = {q(config.isp_name)}", ""]
    for p in config.address_plan:
        prefixes = ", ".join(q(n) for n in p.prefixes)
        lines += ["[[address_plan]]", f"name = {q(p.name)}", f"kind = {q(p.kind)}"]
        lines += [f"prefixes = [{prefixes}]", ""]
    lines += [
        "[smtp]  # the demo's mailboxes; a server only while `mamori demo` runs",
        f"host = {q(config.smtp.host)}",
        f"port = {config.smtp.port}",
        "",
        "[web]",
        f"host = {q(config.web.host)}",
        f"port = {config.web.port}",
        f"base_url = {q(config.web.base_url)}",
        *([f"mailbox_dir = {q(mailbox)}"] if mailbox else []),
        "",
        "[mail]  # the SMTP AUTH maps the demo writes (no Postfix runs: no postmap)",
        f"refusal_backends = {json.dumps(list(config.mail.refusal_backends))}",
        f"postmap_command = {json.dumps(list(config.mail.postmap_command))}",
        *(
            [f"postfix_access_map = {q(config.mail.postfix_access_map.resolve())}"]
            if config.mail.postfix_access_map
            else []
        ),
        *(
            [f"dovecot_deny_file = {q(config.mail.dovecot_deny_file.resolve())}"]
            if config.mail.dovecot_deny_file
            else []
        ),
        "",
        "[detect.c2]  # the simulated Internet is the documentation ranges",
        f"report_documentation = {json.dumps(bool(config.detect.get('c2', {}).get('report_documentation')))}",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


class _Stages:
    """One progress bar over the stages, a spinner line for the running one, and a log."""

    def __init__(self, console: Console, total: int, result: DemoResult) -> None:
        self.console = console
        self.result = result
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("demo", total=total)

    @contextmanager
    def stage(self, name: str) -> Iterator[Callable[[str], None]]:
        self.progress.update(self.task, description=name)
        notes: list[str] = []
        t0 = time.perf_counter()
        yield notes.append
        dt = time.perf_counter() - t0
        text = "; ".join(notes)
        self.result.lines.append((name, text, dt))
        self.progress.console.print(f"[green]✓[/] [bold]{name}[/] ({dt:.1f} s) — {text}")
        self.progress.advance(self.task)


def _collect(gov: Governance, pcap: Path) -> tuple[int, Counter[str], int]:
    from mamori.ingest.collector import Collector, Listen, replaying
    from mamori.sim import replay

    # the simulated day is not today: its export times are not a broken clock
    settings = replaying(gov.config.collector.model_copy(update={"flush_interval_s": 1.0}))
    collector = Collector(gov, settings)
    collector.start([Listen("127.0.0.1", 0)])
    port = collector.bound()[0].port
    worker = threading.Thread(target=collector.run, name="collector")
    worker.start()
    try:
        # Loopback at a rate the 2-core reference machine keeps up with while decoding.
        sent = replay(pcap, port=port, rate=50_000)
        time.sleep(0.5)
    finally:
        collector.request_stop()
        worker.join()
    stored: Counter[str] = Counter()
    for exporter, counts in collector.stats.by_exporter.items():
        stored[exporter] = counts["records"]
    errors = sum(v for k, v in collector.stats.counters.items() if k.startswith("errors."))
    return sent, stored, errors


def run_demo(
    base: MamoriConfig,
    out_dir: Path,
    *,
    scenario: str = "demo",
    seed: int = 0,
    console: Console | None = None,
) -> DemoResult:
    """Simulate an ISP and run every stage on it; returns what each stage did."""
    from mamori.sim.mailsink import MailSink

    console = console or Console()
    t_start = time.perf_counter()
    _prepare_out(out_dir)
    sim_dir = out_dir / "sim"
    result = DemoResult(out_dir=out_dir, config=base)
    st = _Stages(console, total=15, result=result)
    with st.progress:
        with st.stage("simulate the ISP") as note:
            summary = simulate(scenario, sim_dir, seed=seed)
            files = {k: sim_dir / v for k, v in summary.files.items()}
            note(
                f"scenario {scenario!r}: {summary.counts.get('subscribers', '?')} subscribers, "
                f"{sum(r.records + r.samples for r in summary.routers):,} flow records from "
                f"{len(summary.routers)} routers"
            )
        result.sink = MailSink(out_dir / "mailboxes").start()
        config = demo_config(base, out_dir, sim_dir, result.sink.host, result.sink.port)
        # the ISP's resolvers and customer-facing interfaces (reflection, BCP 38)
        config = network_config(config, sim_dir, config.store)
        result.config = config
        gov = Governance(config)
        try:
            _pipeline(gov, st, files, summary, result)
        except BaseException:
            result.close()
            raise
        finally:
            gov.close()
    result.seconds = time.perf_counter() - t_start
    return result


def _pipeline(
    gov: Governance,
    st: _Stages,
    files: dict[str, Path],
    summary: Any,
    result: DemoResult,
) -> None:
    from mamori.act.notify import queue_alerts, send_queued
    from mamori.act.rpz import generate_rpz
    from mamori.detect.c2 import run_c2
    from mamori.detect.reputation_match import match_reputation
    from mamori.ingest.allocations import SubscriberMap, load_allocations
    from mamori.ingest.dns import ingest_dnstap_file
    from mamori.ingest.reports import load_report, parse_report
    from mamori.ingest.reputation import load_feed
    from mamori.ingest.subscribers import load_subscribers
    from mamori.report.transparency import build_report
    from mamori.runs import stage_run
    from mamori.share import export, publish, reviewed_list
    from mamori.sim.evaluate import score, score_c2
    from mamori.web.auth import Accounts

    out_dir = result.out_dir
    truth = json.loads(files["truth"].read_text(encoding="utf-8"))
    runs = gov.state_dir("runs")  # the stages' runs, as the timers would record them

    with st.stage("subscriber records") as note:
        subs = load_subscribers(
            gov, files["subscribers"], actor=ACTOR, opted_out_column="opted_out"
        )
        note(f"{subs.rows_stored:,} subscribers, {subs.consent_changes:,} opt-outs")
        by_user = SubscriberMap.from_csv(files["subscribers"], "user_name")
        radius = load_allocations(
            gov, files["radius_detail"], "radius", actor=ACTOR, subscribers=by_user
        )
        kea = load_allocations(
            gov,
            files["kea_leases"],
            "kea",
            actor=ACTOR,
            kea_key="hostname",
            subscribers=SubscriberMap(pattern=r"^host-0*(\d+)$"),
        )
        cgnat = load_allocations(gov, files["cgnat_syslog"], "cgnat-syslog", actor=ACTOR)
        note(
            f"allocations: RADIUS {radius.rows_stored:,}, Kea {kea.rows_stored:,}, "
            f"CGNAT port blocks {cgnat.rows_stored:,}"
        )

    with st.stage("collect flows over UDP (M1)") as note:
        sent, stored, errors = _collect(gov, files["pcap"])
        exported = sum(r.records + r.samples for r in summary.routers)
        note(
            f"{sent:,} export datagrams from {len(stored)} routers replayed; "
            f"{sum(stored.values()):,} of {exported:,} exported flow records stored; "
            f"{errors:,} decode errors"
        )

    with st.stage("network protection: DDoS, reflection, spoofing (M10, M13)") as note:
        net = _network_stage(gov, out_dir, note)

    with st.stage("feeds and resolver logs") as note:
        loaded = []
        for key, fmt, category in (
            ("feodo", "feodo", None),
            ("urlhaus", "urlhaus", None),
            ("threatfox", "threatfox", None),
            ("stix", "stix", None),
            ("phishing", "plain", "phishing"),
        ):
            rep = load_feed(gov, files[key], fmt, actor=ACTOR, source=key, category=category)
            loaded.append(f"{key} {rep.rows_loaded:,}")
        note("reputation: " + ", ".join(loaded))
        queries = 0
        for key in sorted(k for k in files if k.startswith("dnstap_")):
            queries += ingest_dnstap_file(gov, files[key], ACTOR).stored
        note(f"{queries:,} resolver queries of consenting subscribers (dnstap)")

    with st.stage("third-party reports") as note:
        parts = []
        for kind, key in (
            ("infected", "report_infected"),
            ("takedown", "report_takedown"),
            ("vulnerable", "report_vulnerable"),
        ):
            parsed = parse_report(files[key], "csv")
            loaded_r = load_report(gov, parsed, kind, actor=ACTOR, source=files[key].stem)
            parts.append(f"{kind} {loaded_r.stored:,}")
        note(", ".join(parts))

    with st.stage("detect C&C servers (M2)") as note, stage_run(runs, "detect-c2") as rec:
        run = run_c2(gov, actor=ACTOR, train=True)
        c2_findings = run.findings.to_pylist()
        rec.count(findings=len(c2_findings))
        note(f"{len(c2_findings):,} candidate C&C endpoints not yet in any feed")

    with st.stage("detect infected hosts (M4)") as note, stage_run(runs, "detect-infected") as rec:
        match = match_reputation(gov, actor=ACTOR)
        rec.count(findings=len(match.findings))
        note(
            f"{match.flow_matches:,} flows and {match.dns_matches:,} queries matched; "
            f"{len(match.findings):,} findings"
        )

    with st.stage("block and warn: RPZ (M7, M8)") as note, stage_run(runs, "rpz"):
        rpz = generate_rpz(gov, ACTOR)
        note(", ".join(f"{z.zone} {z.names:,} names" for z in rpz.zones))

    with st.stage("SMTP AUTH abuse: refuse and suspend (M11, M12)") as note:
        smtp_found = _smtp_stage(gov, files["mail_log"], note)

    with st.stage("share the C&C list (M3)") as note:
        share_dir = out_dir / "share"
        share_dir.mkdir(exist_ok=True)
        # only what an analyst confirmed or a feed corroborated leaves; the rest waits in the
        # console for review
        data, n = export(gov, "stix", ACTOR)
        (share_dir / "c2-list.stix.json").write_bytes(data)
        pub = publish(gov, ACTOR)
        waiting = reviewed_list(gov, ACTOR).held_back.get("candidate", 0)
        note(
            f"{n:,} confirmed or corroborated endpoints exported (STIX 2.1, TLP:AMBER+STRICT); "
            f"TAXII collection +{pub.objects_added:,} objects; {waiting:,} candidates await review"
        )

    with (
        st.stage("alert subscribers by e-mail (M5, M6, M9)") as note,
        stage_run(runs, "notify") as rec,
    ):
        queued = queue_alerts(gov, actor=ACTOR)
        sent_summary = send_queued(gov, actor=ACTOR)
        rec.count(queued=sum(q.queued for q in queued), attempted=sent_summary.attempted)
        mails = result.sink.count()
        per = ", ".join(f"{q.measure} {q.queued}" for q in queued)
        note(
            f"queued {per}; {sent_summary.states.get('sent', 0):,} sent, {mails:,} in the mailboxes"
        )

    with st.stage("transparency report") as note, stage_run(runs, "transparency"):
        period = str(summary.start)[:7]
        report = build_report(gov, period, actor=ACTOR)
        (out_dir / f"transparency-{period}.json").write_text(
            report.model_dump_json(indent=1), encoding="utf-8"
        )
        note(f"{period}: written to transparency-{period}.json and served at /transparency")

    with st.stage("score against the ground truth") as note:
        c2 = score_c2(c2_findings, truth)
        inf = score("infected", match.findings, truth)
        wrong = {f"{w['ip']}:{w['port']}" for w in truth["feeds"].get("wrong_entries", [])}
        wrong |= {w["domain"] for w in truth["feeds"].get("wrong_entries", []) if w.get("domain")}
        spurious = set(inf.spurious)
        on_wrong = len(
            {
                f"{f['ip']}:{f.get('port')}"
                for f in match.findings
                if f"{f['ip']}:{f.get('port')}" in spurious
                and set(f["evidence"].get("indicators", [])) <= wrong
            }
        )
        sm = score("smtp", smtp_found, truth)
        thr = threshold_pps(gov.config)
        nets = {k: score(k, net[k], truth, min_pps=thr) for k in ("ddos", "reflection", "spoofing")}
        result.scores = {
            "c2": c2.model_dump(),
            "infected": inf.model_dump(),
            "smtp": sm.model_dump(),
            **{k: v.model_dump() for k, v in nets.items()},
        }
        note(
            f"C&C: precision {c2.precision:.2f}, recall on unknown C&C {c2.recall_unknown:.2f}; "
            f"infected (M4 matching): precision {inf.precision:.2f}, recall {inf.recall:.2f} "
            f"({on_wrong:,} of {len(spurious):,} false positives rest only on entries the feeds "
            f"list by mistake); SMTP AUTH: precision {sm.precision:.2f}, recall {sm.recall:.2f}; "
            + "; ".join(
                f"{k}: precision {v.precision:.2f}, recall {v.recall:.2f}" for k, v in nets.items()
            )
            + f" (DDoS: attacks of {thr:,.0f} pps and more)"
        )

    with st.stage("console accounts and audit") as note:
        accounts = Accounts(gov)
        for name, role in DEMO_ACCOUNTS.items():
            result.logins[name] = accounts.add(name, role)
        logins = out_dir / "logins.txt"
        fd = os.open(logins, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(
                f"{name}\t{DEMO_ACCOUNTS[name]}\t{pw}\n" for name, pw in result.logins.items()
            )
        verification = gov.audit.verify()
        result.audit_ok = verification.ok
        note(f"{len(result.logins)} accounts (logins.txt); audit log: {verification}")
    _write_toml(gov.config, out_dir / "mamori.toml")


def _network_stage(
    gov: Governance, out_dir: Path, note: Callable[[str], None]
) -> dict[str, list[dict[str, Any]]]:
    """The standing reflection filters and the ingress filters rendered (not applied: the demo
    never touches this machine's firewall), then DDoS, reflection and spoofing detection over the
    collected flows; the senders of outbound attacks and the open reflectors' owners are alerted
    by the alert stage."""
    from mamori.act.antispoof import nft_antispoof
    from mamori.act.nft import render_reflection
    from mamori.act.reflection import reflection_plan

    filters = out_dir / "filters"
    filters.mkdir(exist_ok=True)
    plan = reflection_plan(gov.config)
    (filters / "reflection.nft").write_text(
        render_reflection(plan, gov.config.network.nft, "demo").text, encoding="utf-8"
    )
    (filters / "antispoof.nft").write_text(nft_antispoof(gov.config, "demo"), encoding="utf-8")
    found = detect_network(gov, write=True, actor=ACTOR)
    kinds = Counter(
        (f["method"], f["evidence"].get("direction", "")) for f in found["ddos"] if f["evidence"]
    )
    note(
        f"filters/: reflection filter over {plan.prefixes:,} dynamic prefixes, ingress filters "
        f"for {len(gov.config.network.customer_interfaces)} interfaces; "
        f"{len(found['ddos'])} DDoS attacks ("
        + ", ".join(f"{n} {k} {d}".strip() for (k, d), n in sorted(kinds.items()))
        + f"), {len(found['reflection'])} reflection findings, "
        f"{len(found['spoofing'])} interfaces receiving spoofed sources"
    )
    return found


def _smtp_stage(
    gov: Governance, mail_log: Path, note: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Load the mail log, detect brute force and compromised accounts, refuse and suspend (the
    owners' alerts go to the demo's mailboxes)."""
    import pyarrow as pa

    from mamori.act.smtp import act_on_findings
    from mamori.demo_smtp import finding_json, load_mail
    from mamori.detect.base import Window
    from mamori.detect.registry import build

    loaded = load_mail(gov, mail_log, ACTOR)
    tables = [
        build(name, gov.config.detect).run(gov, Window(), actor=ACTOR).findings
        for name in ("smtp-brute-force", "smtp-compromised")
    ]
    found = pa.concat_tables(tables)
    report = act_on_findings(gov, found, actor=ACTOR)
    kinds = [a.kind.value for a in report.applied]
    note(
        f"{loaded['failures']:,} AUTH failures, {loaded['messages']:,} queued messages; "
        f"{kinds.count('smtp-auth-refusal')} addresses refused (M12), "
        f"{kinds.count('account-suspension')} AUTH IDs suspended (M11), "
        f"{list(report.alerts.values()).count('sent')} owners alerted"
    )
    return [finding_json(r) for r in found.to_pylist()]


def summary_table(result: DemoResult) -> Table:
    t = Table(title=f"Mamori demo — {result.seconds:.0f} s")
    t.add_column("stage")
    t.add_column("seconds", justify="right")
    t.add_column("what it did")
    for name, text, dt in result.lines:
        t.add_row(name, f"{dt:.1f}", text)
    return t
