"""Governance: the catalogue of measures, consent, the audit log, retention and the access door.

Everything that reads or writes stored data goes through :class:`Governance`.
"""

from mamori.governance.access import AccessRefused, Governance, GovernanceError, Grant
from mamori.governance.audit import AuditLog, Verification
from mamori.governance.consent import ConsentChange, ConsentError, ConsentState
from mamori.governance.measures import Catalogue, LegalBasis, Measure, catalogue
from mamori.governance.retention import PurgeReport, purge, retention_status
from mamori.governance.sandbox import Sandbox

__all__ = [
    "AccessRefused",
    "AuditLog",
    "Catalogue",
    "ConsentChange",
    "ConsentError",
    "ConsentState",
    "Governance",
    "GovernanceError",
    "Grant",
    "LegalBasis",
    "Measure",
    "PurgeReport",
    "Sandbox",
    "Verification",
    "catalogue",
    "purge",
    "retention_status",
]
