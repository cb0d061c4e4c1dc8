"""The web console (analysts, abuse desk, operators, auditors, admins), the subscribers' consent
pages, the public notice and the transparency report — FastAPI, rendered on the server, offline.

Start it on any store::

    from mamori.governance import Governance
    from mamori.web import Accounts, create_app, serve

    gov = Governance(config)
    password = Accounts(gov).add("admin", "admin")      # generated, shown once
    app = create_app(gov, extra_routers=[...], mounts={"/taxii2": taxii_app})
    serve(gov, "127.0.0.1", 8080)                      # or uvicorn.run(app, ...)

Who may open which page is in :mod:`mamori.governance.roles`.
"""

from mamori.web.app import console_routes, create_app, serve
from mamori.web.auth import Account, AccountError, Accounts

__all__ = ["Account", "AccountError", "Accounts", "console_routes", "create_app", "serve"]
