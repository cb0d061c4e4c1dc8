"""`mamori attribute`: who held an address (and port) at a time."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from mamori.cli.common import STATE, actor_name, fail, out, parse_time


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise typer.BadParameter("a blank justification is none; say which risk test holds")
    return value.strip() if value is not None else None


# `mamori attribute`: a single command, registered on the root app in cli/__init__.py.
def attribute_cmd(
    ip: Annotated[str, typer.Option("--ip", help="the address seen")],
    at: Annotated[str, typer.Option("--at", help="when (ISO 8601; no zone means UTC)")],
    port: Annotated[
        int | None,
        typer.Option("--port", help="the port seen (required behind CGNAT)", min=0, max=65535),
    ] = None,
    measure: Annotated[
        str, typer.Option("--measure", "-m", help="measure the lookup is for (M5, M6, M9, M13)")
    ] = "M5",
    basis: Annotated[
        str | None,
        typer.Option(
            "--basis",
            help="legal basis: consent (opted-out subscribers are not looked up), "
            "justified-act, emergency [default: the measure's first]",
        ),
    ] = None,
    justification: Annotated[
        str | None,
        typer.Option(
            "--justification",
            help="the risk test that holds (required for justified-act; not blank)",
            callback=_not_blank,
        ),
    ] = None,
    case: Annotated[str | None, typer.Option("--case", help="abuse-desk case id")] = None,
    skew: Annotated[
        float | None,
        typer.Option(
            "--skew", help="clock-skew tolerance in seconds [default: attribution.skew_s]"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Who held an address (and port) at a time. Answers ok (with the subscriber), ambiguous
    (more than one holder within the clock-skew tolerance), unknown, or port-required (a shared
    CGNAT address given without --port). Every lookup is written to the audit log.
    Exit status 3 when the answer is not ok."""
    from mamori.attribute import attribute_one
    from mamori.governance import AccessRefused

    when = parse_time(at)
    assert when is not None
    try:
        res = attribute_one(
            STATE.gov(),
            ip,
            port,
            when,
            measure=measure.upper(),
            actor=actor_name(),
            case=case,
            basis=basis,
            justification=justification,
            skew_s=skew,
        )
    except AccessRefused as exc:
        fail(str(exc), code=2)
    if as_json:
        out.print_json(res.model_dump_json())
    else:
        where = f"{ip}:{port}" if port is not None else ip
        line = f"{where} at {res.ts.isoformat()}: {res.status}"
        if res.subscriber_id is not None:
            line += f" — subscriber {res.subscriber_id}"
            if res.inside_addr:
                line += f" (inside address {res.inside_addr})"
            line += f" [from {res.allocation_source}]"
        out.print(escape(line), highlight=False)
    if res.status != "ok":
        raise typer.Exit(3)
