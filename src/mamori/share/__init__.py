"""share stage: the C&C list to and from the ISAC and trusted ISPs (measure M3).

- :mod:`.c2list` — the list (aggregated endpoints), the review gate (confirmed and corroborated
  endpoints only) and the guard every export passes
- :mod:`.stix`, :mod:`.misp`, :mod:`.csvio` — the formats, both ways
- :mod:`.export` — ``export(gov, fmt, actor)``
- :mod:`.taxii` — the TAXII 2.1 server (``create_taxii_app``) and ``publish``
- :mod:`.trust` — trust groups, peers and their API keys, remote servers we poll
- :mod:`.importer` — files and TAXII polls into reputation data
"""

from mamori.share.c2list import (
    ALLOWED_FIELDS,
    ExportRefused,
    ReviewedList,
    ShareError,
    c2_list,
    guard,
    reviewed_list,
)
from mamori.share.export import export
from mamori.share.importer import ImportResult, import_file, poll_peer
from mamori.share.taxii import create_taxii_app, publish
from mamori.share.trust import TrustError, TrustStore

__all__ = [
    "ALLOWED_FIELDS",
    "ExportRefused",
    "ImportResult",
    "ReviewedList",
    "ShareError",
    "TrustError",
    "TrustStore",
    "c2_list",
    "create_taxii_app",
    "export",
    "guard",
    "import_file",
    "poll_peer",
    "publish",
    "reviewed_list",
]
