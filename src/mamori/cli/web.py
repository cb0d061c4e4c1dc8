"""`mamori serve` and `mamori web`: the web console and its accounts."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from mamori.cli.common import STATE, actor_name, err, fail, out

web_app = typer.Typer(help="The web console's accounts.", no_args_is_help=True)


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


# `mamori serve`: a single command, registered on the root app in cli/__init__.py.
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
    listener = None
    if cfg.web.metrics_listen:
        from mamori.web.metrics import serve_loopback

        listener = serve_loopback(STATE.gov(), cfg.web.metrics_listen)
        err.print(f"metrics on http://{cfg.web.metrics_listen}/metrics", highlight=False)
    from mamori.logs import configured

    # with --log-format, uvicorn's lines go through Mamori's handler (JSON, addresses hidden)
    options: dict[str, Any] = {"log_config": None} if configured() else {}
    try:
        serve_console(STATE.gov(), h, p, log_level="info", **options)
    finally:
        if listener is not None:
            listener.close()
