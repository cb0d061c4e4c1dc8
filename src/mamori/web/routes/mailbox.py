"""The mailbox page: alert e-mails as the subscribers received them, as a table (paging,
filters, CSV), each linked to its case.

``web.mailbox_dir`` names a local Maildir or folder of ``.eml`` files (in the demo, the one the
simulated subscribers' SMTP server delivers to), so the abuse desk can see exactly what went out.
Production leaves it unset: the ISP's relay delivers the mail and the page says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.governance import Governance
from mamori.governance.roles import VIEWS
from mamori.web.auth import Need, Viewer
from mamori.web.maildir import INDEX_SCHEMA, MailList, read_mailbox
from mamori.web.render import table_response
from mamori.web.specs import MAIL_TABLE

router = APIRouter()
Mailbox = Annotated[Viewer, Depends(Need("mailbox"))]


_TABLES: dict[int, tuple[MailList, pa.Table]] = {}


def mail_table(mails: MailList) -> pa.Table:
    """The messages as a table (kept while :func:`read_mailbox` returns the same list)."""
    hit = _TABLES.get(id(mails))
    if hit is not None and hit[0] is mails:
        return hit[1]
    t = mails.table
    table = pa.table(
        {
            "i": pa.array(range(t.num_rows), pa.int64()),
            "received": t.column("received"),
            "sender": t.column("sender"),
            "recipients": pc.replace_substring(t.column("recipients"), "\n", ", "),
            "subject": t.column("subject"),
            "case_id": t.column("case_id"),
        }
    )
    _TABLES.clear()
    _TABLES[id(mails)] = (mails, table)
    return table


@router.get("/mailbox")
async def mailbox(request: Request, viewer: Mailbox) -> Response:
    gov: Governance = request.app.state.gov
    directory = gov.config.web.mailbox_dir
    mails = (
        read_mailbox(directory)
        if directory is not None and directory.is_dir()
        else MailList(Path("."), INDEX_SCHEMA.empty_table())
    )
    gov.audit.append(
        actor=viewer.actor,
        event="access",
        measure=None,
        detail={"view": "mailbox", "messages": len(mails)},
    )
    return table_response(
        request,
        MAIL_TABLE,
        mail_table(mails),
        "mailbox.html",
        {
            "viewer": viewer,
            "configured": directory is not None,
            "mails": mails,
            "may_cases": VIEWS["cases"].allows(viewer.role),
        },
    )
