"""`mamori demo`: defend a simulated ISP end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mamori.cli.common import STATE, fail, out


# `mamori demo`: a single command, registered on the root app in cli/__init__.py.
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
