"""`mamori share`: exchange C&C lists with the ISAC and trusted ISPs (M3)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mamori.cli.common import STATE, actor_name, err, fail, out

share_app = typer.Typer(
    help="Exchange C&C lists with the ISAC and trusted ISPs (M3).", no_args_is_help=True
)


peers_app = typer.Typer(
    help="Peers who may use this ISP's TAXII server (their API keys and trust groups), and the "
    "peers' servers this ISP polls.",
    no_args_is_help=True,
)
share_app.add_typer(peers_app, name="peers")
groups_app = typer.Typer(
    help="Trust groups: which collections (c2, submissions) their peers may read and write.",
    no_args_is_help=True,
)
peers_app.add_typer(groups_app, name="groups")


class ShareFormat(StrEnum):
    stix = "stix"
    misp = "misp"
    csv = "csv"


_TLP_HELP = "TLP 2.0 marking: clear, green, amber, amber+strict or red"
_CANDIDATES_HELP = (
    "also share candidates nobody has reviewed yet (recorded in the audit log); rejected "
    "endpoints never leave"
)


@share_app.command("export")
def share_export(
    fmt: Annotated[ShareFormat, typer.Option("--format", "-f", help="stix, misp or csv")],
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="file to write (default: standard output)")
    ] = None,
    tlp: Annotated[str, typer.Option("--tlp", help=_TLP_HELP)] = "amber+strict",
    min_score: Annotated[
        float, typer.Option("--min-score", min=0.0, max=1.0, help="leave out weaker endpoints")
    ] = 0.0,
    include_candidates: Annotated[
        bool, typer.Option("--include-candidates", help=_CANDIDATES_HELP)
    ] = False,
) -> None:
    """Export the C&C list (IP, port, protocol, first/last seen, confidence, method) as a STIX 2.1
    bundle, a MISP event or CSV: endpoints an analyst confirmed or a feed has listed since we
    found them, never rejected ones. Only aggregated endpoints leave: the export is refused (and
    the refusal audited) if any address lies in this ISP's own subscriber pools."""
    from mamori.share import ExportRefused, export

    try:
        data, n = export(STATE.gov(), fmt.value, actor_name(), tlp=tlp, min_score=min_score,
                         include_candidates=include_candidates)  # fmt: skip
    except ExportRefused as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc), code=2)
    if out_file is None:
        typer.echo(data.decode(), nl=False)
    else:
        out_file.write_bytes(data)
    err.print(f"exported {n} C&C endpoint(s) as {fmt.value}, TLP:{tlp.upper()}", highlight=False)


@share_app.command("publish")
def share_publish(
    tlp: Annotated[str, typer.Option("--tlp", help=_TLP_HELP)] = "amber+strict",
    min_score: Annotated[float, typer.Option("--min-score", min=0.0, max=1.0)] = 0.0,
    include_candidates: Annotated[
        bool, typer.Option("--include-candidates", help=_CANDIDATES_HELP)
    ] = False,
) -> None:
    """Put the reviewed C&C list (confirmed or corroborated endpoints) into the TAXII collection
    "c2" that peers poll (same checks as export). Endpoints that did not change are not added
    again."""
    from mamori.share import ExportRefused, publish

    try:
        r = publish(STATE.gov(), actor_name(), tlp=tlp, min_score=min_score,
                    include_candidates=include_candidates)  # fmt: skip
    except ExportRefused as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc), code=2)
    out.print(
        f"{r.endpoints} endpoint(s) in the list; {r.objects_added} new STIX object "
        f"version(s) in collection {r.collection}",
        highlight=False,
    )


@share_app.command("import")
def share_import(
    file: Annotated[Path | None, typer.Argument(help="file to load", show_default=False)] = None,
    fmt: Annotated[
        ShareFormat | None, typer.Option("--format", "-f", help="format of FILE")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="who the file came from (default: its name)")
    ] = None,
    peer: Annotated[
        str | None, typer.Option("--peer", help="poll this peer's TAXII collection instead")
    ] = None,
) -> None:
    """Load a peer's C&C list into reputation data, from a file (--format stix|misp|csv FILE)
    or by polling its TAXII collection (--peer NAME, see `share peers remote`); only what the
    peer added since the last poll is fetched."""
    from mamori.share import ShareError, TrustError, import_file, poll_peer

    if (peer is None) == (file is None):
        fail("give either FILE (with --format) or --peer NAME", code=2)
    try:
        if peer is not None:
            r = poll_peer(STATE.gov(), peer, actor_name())
        else:
            assert file is not None
            if fmt is None:
                fail("--format is needed with FILE", code=2)
            if not file.is_file():
                fail(f"no file {file}", code=2)
            r = import_file(STATE.gov(), file, fmt.value, actor_name(), source or file.name)
    except TrustError as exc:
        fail(str(exc), code=2)
    except ShareError as exc:
        fail(str(exc))
    for problem in r.problems:
        err.print(f"skipped {escape(problem)}", highlight=False)
    out.print(
        f"loaded {r.loaded} entr{'y' if r.loaded == 1 else 'ies'} from {r.source}; "
        f"skipped {r.skipped}",
        highlight=False,
    )


@share_app.command("serve")
def share_serve(
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 9440,
) -> None:
    """Run the TAXII 2.1 server on its own (the web console mounts the same app under
    /taxii2/). Peers need an API key (`share peers add`); put the list in with `share publish`.
    Put TLS in front of it (a reverse proxy) for anything but loopback."""
    import uvicorn

    from mamori.share import create_taxii_app
    from mamori.share.taxii import collection_id
    from mamori.share.trust import COLLECTIONS

    gov = STATE.gov()
    base = f"http://{host}:{port}"
    out.print(f"TAXII 2.1 discovery: {base}/", highlight=False)
    for alias in COLLECTIONS:
        cid = collection_id(gov.config.isp_name, alias)
        out.print(f"  {alias}: {base}/api/collections/{cid}/", highlight=False)
    uvicorn.run(create_taxii_app(gov), host=host, port=port, log_level="info")


@peers_app.command("add")
def peers_add(
    name: Annotated[str, typer.Argument(help="peer name, e.g. the ISP or ISAC")],
    group: Annotated[str, typer.Option("--group", "-g", help="trust group it belongs to")],
) -> None:
    """Register a peer and print its API key. The key is shown only now; only a hash is kept."""
    from mamori.share import TrustError, TrustStore

    try:
        key = TrustStore.of(STATE.gov()).add_peer(name, group)
    except TrustError as exc:
        fail(str(exc), code=2)
    STATE.gov().audit.append(
        actor=actor_name(),
        event="share-peer-added",
        measure="M3",
        detail={"peer": name, "group": group},
    )
    err.print(
        f"API key for {name} (shown once; give it to the peer over a secure channel):",
        highlight=False,
    )
    typer.echo(key)


@peers_app.command("list")
def peers_list() -> None:
    """Peers with their group, when their key was issued and whether it is revoked; and the
    remote servers polled."""
    from mamori.share import TrustStore

    trust = TrustStore.of(STATE.gov())
    t = Table(title="peers")
    for col in ("peer", "group", "created", "revoked"):
        t.add_column(col)
    for name, p in sorted(trust.peers().items()):
        t.add_row(name, p["group"], p["created"], p.get("revoked") or "")
    out.print(t)
    r = Table(title="remote servers polled")
    for col in ("peer", "collection URL", "added after"):
        r.add_column(col)
    for rem in trust.remotes():
        r.add_row(rem.name, rem.url, rem.added_after or "(never polled)")
    out.print(r)


@peers_app.command("revoke")
def peers_revoke(name: Annotated[str, typer.Argument(help="peer to cut off")]) -> None:
    """Revoke a peer's API key; its next request is refused."""
    from mamori.share import TrustError, TrustStore

    try:
        TrustStore.of(STATE.gov()).revoke_peer(name)
    except TrustError as exc:
        fail(str(exc), code=2)
    STATE.gov().audit.append(
        actor=actor_name(), event="share-peer-revoked", measure="M3", detail={"peer": name}
    )
    out.print(f"revoked {name}", highlight=False)


@peers_app.command("remote")
def peers_remote(
    name: Annotated[str, typer.Argument(help="name the peer's entries will carry as source")],
    url: Annotated[str, typer.Option("--url", help="the peer's TAXII collection URL")],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            envvar="MAMORI_PEER_KEY",
            prompt=True,
            hide_input=True,
            help="API key the peer gave us (prompted for if not given)",
        ),
    ],
) -> None:
    """Record a peer's TAXII collection to poll with `share import --peer NAME`."""
    from mamori.share import TrustError, TrustStore

    try:
        TrustStore.of(STATE.gov()).set_remote(name, url, key)
    except TrustError as exc:
        fail(str(exc), code=2)
    out.print(f"will poll {name} at {url}", highlight=False)


@groups_app.command("set")
def groups_set(
    name: Annotated[str, typer.Argument(help="group name")],
    read: Annotated[
        list[str] | None, typer.Option("--read", help="collection its peers may read (repeat)")
    ] = None,
    write: Annotated[
        list[str] | None, typer.Option("--write", help="collection its peers may write (repeat)")
    ] = None,
) -> None:
    """Create or change a trust group. Collections: c2 (this ISP's list, read only) and
    submissions (where peers may post). Takes effect on the next request."""
    from mamori.share import TrustError, TrustStore

    try:
        TrustStore.of(STATE.gov()).set_group(name, list(read or []), list(write or []))
    except TrustError as exc:
        fail(str(exc), code=2)
    STATE.gov().audit.append(
        actor=actor_name(),
        event="share-group-set",
        measure="M3",
        detail={"group": name, "read": read or [], "write": write or []},
    )
    out.print(f"group {name}: read {read or []}, write {write or []}", highlight=False)


@groups_app.command("list")
def groups_list() -> None:
    """Trust groups and their rights."""
    from mamori.share import TrustStore

    t = Table(title="trust groups")
    for col in ("group", "read", "write"):
        t.add_column(col)
    for name, g in sorted(TrustStore.of(STATE.gov()).groups().items()):
        t.add_row(name, ", ".join(g["read"]), ", ".join(g["write"]))
    out.print(t)
