"""The mailbox page: alert e-mails as the subscribers received them.

``web.mailbox_dir`` names a local Maildir or folder of ``.eml`` files (in the demo, the one the
simulated subscribers' SMTP server delivers to), so the abuse desk can see exactly what went out.
Production leaves it unset: the ISP's relay delivers the mail and the page says so.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.governance import Governance
from mamori.web.auth import Need, Viewer
from mamori.web.maildir import read_mailbox
from mamori.web.render import render

router = APIRouter()
Mailbox = Annotated[Viewer, Depends(Need("mailbox"))]

_SHOWN = 200  # newest messages listed


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
    return render(
        request,
        "mailbox.html",
        {
            "viewer": viewer,
            "configured": directory is not None,
            "total": len(mails),
            "mails": list(reversed(mails))[:_SHOWN],
        },
    )
