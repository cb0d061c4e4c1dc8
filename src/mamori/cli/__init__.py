"""The ``mamori`` command line.

One sub-command group per stage (ARCHITECTURE.md), one module per group; what they share is in
``common``. ``--store DIR`` and ``--config FILE`` are accepted anywhere on the line. A command
whose stage is not built yet says so and exits with status 69 (EX_UNAVAILABLE); it never prints
made-up output.
"""

from __future__ import annotations

import typer

from mamori.cli import (
    act,
    attribute,
    collect,
    demo,
    detect,
    governance,
    ingest,
    notify,
    report,
    share,
    sim,
    status,
    units,
    web,
)
from mamori.cli.common import EX_UNAVAILABLE, STATE, Pending, RootGroup, global_options

__all__ = ["EX_UNAVAILABLE", "STATE", "_PENDING", "app", "main"]

app = typer.Typer(
    name="mamori",
    cls=RootGroup,
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
app.callback()(global_options)

# `mamori --help` lists these in registration order: the single commands first, then the groups.
app.command("purge")(governance.purge_cmd)
app.command("simulate")(sim.simulate_cmd)
app.command("serve")(web.serve)
app.command("attribute")(attribute.attribute_cmd)
app.command("demo")(demo.demo)
app.command("status")(status.status_cmd)
app.command("review")(detect.review_cmd)
app.command("install-units")(units.install_units_cmd)
for _group, _name in (
    (governance.config_app, "config"),
    (governance.consent_app, "consent"),
    (governance.audit_app, "audit"),
    (collect.collect_app, "collect"),
    (sim.eval_app, "eval"),
    (ingest.ingest_app, "ingest"),
    (detect.detect_app, "detect"),
    (share.share_app, "share"),
    (report.report_app, "report"),
    (web.web_app, "web"),
    (act.act_app, "act"),
    (notify.notify_app, "notify"),
):
    app.add_typer(_group, name=_name)

_PENDING: list[Pending] = [*ingest.PENDING, *detect.PENDING]


def main() -> None:
    app(prog_name="mamori")
