"""The mailbox page: alert e-mails as the subscribers received them, as a table (paging,
filters, CSV), each linked to its case.

``web.mailbox_dir`` names a local Maildir or folder of ``.eml`` files (in the demo, the one the
simulated subscribers' SMTP server delivers to), so the abuse desk can see exactly what went out.
Production leaves it unset: the ISP's relay delivers the mail and the page says so.
"""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.governance import Governance
from mamori.governance.roles import VIEWS
from mamori.web.auth import Need, Viewer
from mamori.web.maildir import Mail, read_mailbox
from mamori.web.render import table_response
from mamori.web.specs import MAIL_TABLE

router = APIRouter()
Mailbox = Annotated[Viewer, Depends(Need("mailbox"))]


_TABLES: dict[int, tuple[list[Mail], pa.Table]] = {}


def mail_table(mails: list[Mail]) -> pa.Table:
    """The messages as a table (kept while :func:`read_mailbox` returns the same list)."""
    hit = _TABLES.get(id(mails))
    if hit is not None and hit[0] is mails:
        return hit[1]
    table = _mail_table(mails)
    _TABLES.clear()
    _TABLES[id(mails)] = (mails, table)
    return table


def _mail_table(mails: list[Mail]) -> pa.Table:
    return pa.table(
        {
            "i": pa.array(range(len(mails)), pa.int64()),
            "received": pa.array([m.received for m in mails], pa.timestamp("us", "UTC")),
            "sender": pa.array([m.sender for m in mails], pa.string()),
            "recipients": pa.array([", ".join(m.recipients) for m in mails], pa.string()),
            "subject": pa.array([m.subject for m in mails], pa.string()),
            "case_id": pa.array([m.case_id for m in mails], pa.string()),
        }
    )


@router.get("/mailbox")
async def mailbox(request: Request, viewer: Mailbox) -> Response:
    gov: Governance = request.app.state.gov
    directory = gov.config.web.mailbox_dir
    mails = read_mailbox(directory) if directory is not None and directory.is_dir() else []
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
