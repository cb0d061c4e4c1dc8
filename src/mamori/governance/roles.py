"""Roles of console accounts, and which views and measures each may use.

The console (``mamori.web``) declares, for every route, the :class:`View` it serves; a request is
let in only when the account's role is among the view's roles. A view also names the measures under
which it reads stored data, so what a role can reach is readable here in one place, without
reading the web code. The public pages (the notice, the transparency report) and the subscriber's
consent page need no account: the consent page is reached with a signed, expiring token instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ACTION_MEASURES",
    "ALERT_MEASURES",
    "CASE_MEASURES",
    "FINDING_MEASURES",
    "NETWORK_KINDS",
    "ROLES",
    "VIEWS",
    "Role",
    "View",
    "may_decide",
    "measures_for",
    "views_for",
]


class Role(StrEnum):
    ANALYST = "analyst"  # security analyst: findings, evidence, actions, traffic aggregates
    ABUSE_DESK = "abuse-desk"  # handles alerts and cases, approves actions
    OPERATOR = "operator"  # network operator: traffic aggregates and the filters in force
    AUDITOR = "auditor"  # independent auditor: the audit log and retention, no communications
    ADMIN = "admin"  # manages console accounts; sees no data


ROLES: tuple[Role, ...] = tuple(Role)
_A, _D, _O, _U, _M = Role.ANALYST, Role.ABUSE_DESK, Role.OPERATOR, Role.AUDITOR, Role.ADMIN


@dataclass(frozen=True)
class View:
    """What a page serves: who may open it, and the measures its reads are made under."""

    name: str
    roles: frozenset[Role]
    measures: tuple[str, ...]
    doc: str
    public: bool = False  # no account needed (the page is public or token-protected)

    def allows(self, role: Role | None) -> bool:
        return self.public or (role is not None and role in self.roles)


def _v(
    name: str, roles: set[Role], measures: tuple[str, ...], doc: str, public: bool = False
) -> View:
    return View(name, frozenset(roles), measures, doc, public)


# Findings and actions are read under the measure that made them, never under another one's
# purpose; M5 reads the infected-host findings it alerts on. Alerts (M5, M6, M9) are actions too.
FINDING_MEASURES = ("M2", "M4", "M10", "M11", "M12", "M13")
ACTION_MEASURES = ("M3", "M5", "M6", "M7", "M8", "M9", "M10", "M11", "M12", "M13")
ALERT_MEASURES = ("M5", "M6", "M9", "M13")
CASE_MEASURES = ("M5", "M6", "M9", "M13")
# Actions on the network itself: operators approve, apply and end them.
NETWORK_KINDS = frozenset({"nftables", "flowspec", "rtbh"})

VIEWS: dict[str, View] = {
    v.name: v
    for v in (
        _v("home", {_A, _D, _O, _U, _M}, (), "start page: links to what the role may use"),
        _v("findings", {_A, _D}, FINDING_MEASURES, "findings with evidence, method, score, basis"),
        _v(
            "actions",
            {_A, _D, _O},
            ACTION_MEASURES,
            "actions: proposed, approved, applied, ended, expired",
        ),
        _v(
            "findings.review",
            {_A},
            FINDING_MEASURES,
            "confirm or reject a finding, or mark it a false positive",
        ),
        _v(
            "actions.propose",
            {_A, _D},
            ACTION_MEASURES,
            "propose an action (block, filter) from a finding; someone else approves it",
        ),
        _v(
            "actions.decide",
            {_A, _D, _O},
            ACTION_MEASURES,
            "approve, reject, apply or end an action (network actions: operators only; never "
            "one's own proposal)",
        ),
        _v(
            "approvals",
            {_A, _D, _O},
            ACTION_MEASURES,
            "actions waiting for approval, with what each would change",
        ),
        _v("alerts", {_A, _D}, ALERT_MEASURES, "alerts to subscribers and their delivery state"),
        _v(
            "cases",
            {_D},
            CASE_MEASURES,
            "abuse-desk cases: status, assignee, notes and timeline; kept by number after an "
            "opt-out",
        ),
        _v("cases.edit", {_D}, CASE_MEASURES, "change a case's status, assignee or notes"),
        _v("trends", {_A, _D, _O}, ("M14",), "trends of findings, alerts and opt-outs (counts)"),
        _v("account", {_A, _D, _O, _U, _M}, (), "one's own account: password, second factor"),
        _v(
            "mailbox",
            {_D},
            ("M5", "M6", "M9"),
            "alert e-mails as delivered to a local mailbox (the demo's SMTP sink)",
        ),
        _v(
            "search",
            {_A, _D},
            FINDING_MEASURES + ACTION_MEASURES + ALERT_MEASURES,
            "search findings, actions and alerts by endpoint or case",
        ),
        _v("traffic", {_A, _O}, ("M14",), "traffic aggregates: volume, top ports, exporters"),
        _v(
            "attacks",
            {_A, _O},
            ("M10", "M13"),
            "attacks (DDoS, reflection, spoofing) and the network rules that answered them, with "
            "the traffic to each attacked prefix, on one time axis",
        ),
        _v("audit", {_U}, (), "audit-log verification, accesses by measure, refusals"),
        _v("retention", {_U}, (), "oldest data held per dataset against its limit"),
        _v("users", {_M}, (), "console accounts"),
        _v(
            "metrics",
            {_M},
            (),
            "Prometheus metrics: stages' runs, alerts and actions by state, audit, retention",
        ),
        _v("public", set(), (), "public notice and transparency report", public=True),
        _v("consent", set(), (), "a subscriber's consent page (signed token)", public=True),
        _v("login", set(), (), "sign in and out", public=True),
    )
}


def views_for(role: Role) -> list[View]:
    return [v for v in VIEWS.values() if not v.public and role in v.roles]


def measures_for(role: Role) -> tuple[str, ...]:
    """Every measure under which a role's views read data (sorted by number)."""
    found = {m for v in views_for(role) for m in v.measures}
    return tuple(sorted(found, key=lambda m: int(m[1:])))


def may_decide(role: Role | None, kind: str) -> bool:
    """Whether ``role`` may approve, apply or end an action of ``kind``: network actions are the
    operators', the others the analysts' and the abuse desk's."""
    if role is None:
        return False
    if kind in NETWORK_KINDS:
        return role is Role.OPERATOR
    return role in (Role.ANALYST, Role.ABUSE_DESK)
