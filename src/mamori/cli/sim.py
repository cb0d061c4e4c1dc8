"""`mamori simulate` and `mamori eval`: a simulated ISP and scoring against its ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mamori.cli.common import fail, out

eval_app = typer.Typer(
    help="Score detector output against a simulated ISP's ground truth.", no_args_is_help=True
)


# `mamori simulate`: a single command, registered on the root app in cli/__init__.py.
def simulate_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write into (created)")],
    scenario: Annotated[
        str, typer.Option("--scenario", help="tiny | small | demo | large | national (see --list)")
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
    sampling: Annotated[
        int | None,
        typer.Option(
            "--sampling",
            help="every router samples 1-in-N packets (national: 1000 or 10000)",
            min=1,
            max=10_000,
        ),
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
        summary = simulate(
            scenario, out_dir, seed=seed, subscribers=subscribers, hours=hours, sampling=sampling
        )
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
    "spoofing": "customer-facing interfaces spoofed packets entered on (BCP 38)",
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
        min_pps: Annotated[
            float | None,
            typer.Option(
                "--min-pps",
                help="ddos only: the detection threshold; victims attacked below it (the "
                "truth's victim_pps) need not be found and are no false alarm",
            ),
        ] = None,
    ) -> None:
        from mamori.demo import score_files

        result = score_files(kind, findings, truth, min_pps=min_pps)
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
