"""SMTP AUTH actions: refuse AUTH from brute-forcing addresses (M12), suspend compromised AUTH
IDs (M11) and tell the account's owner, through the action contract (:mod:`mamori.act.base`).

From findings (``detect smtp``):

* an ``smtp-brute-force`` finding becomes an ``smtp-auth-refusal`` of its address, for the attack
  so far plus ``[mail] refusal_margin_s`` (between ``refusal_min_s`` and ``refusal_max_s``);
* an ``smtp-compromised`` finding becomes an ``account-suspension`` of its AUTH ID for
  ``[mail] suspension_hours``, and, once applied, an alert to the account's owner
  (``[mail] owner_address``) in Japanese and English: what was seen, what was done, what to do,
  how sending is restored. The alert is an ``alert`` action of M11 too.

A target that already has an open action of the same kind is left alone (the attack is already
being answered). With ``[mail] auto_refuse`` / ``auto_suspend`` (the default) the policy approves
and the back end applies at once (``approved_by`` = ``policy:M12-refusal`` / ``policy:M11-
suspension``); otherwise the actions stay proposed for the abuse desk. Every step — suspension
and restore alike — is written through governance with its legal basis (justified act) and
justification, so the audit log holds them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import jinja2
import pyarrow as pa

from mamori.act import base as act
from mamori.act.base import Action, ActionKind, ActionState, Backend
from mamori.act.mailer import Mailer
from mamori.act.smtp_backends import DovecotDenyFile, SmtpRefusalBackend
from mamori.config import MamoriConfig
from mamori.detect.smtp_accounts import KIND as COMPROMISED
from mamori.detect.smtp_bruteforce import KIND as BRUTE_FORCE
from mamori.governance import Governance, LegalBasis, catalogue

__all__ = [
    "SmtpActReport",
    "act_on_findings",
    "open_smtp_actions",
    "plan_refusal",
    "plan_suspension",
    "render_owner_alert",
    "restore",
    "smtp_backends",
]

log = logging.getLogger(__name__)

REFUSAL_MEASURE = "M12"
SUSPENSION_MEASURE = "M11"
_BAD_AUTH_ID = re.compile(r"[\s:]")  # a passwd-file line cannot hold these
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("mamori.act", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def smtp_backends(config: MamoriConfig) -> dict[ActionKind, Backend[object]]:
    return {
        ActionKind.SMTP_AUTH_REFUSAL: SmtpRefusalBackend(config),
        ActionKind.ACCOUNT_SUSPENSION: DovecotDenyFile(config),
    }


def _aid(prefix: str, finding_id: str) -> str:
    return f"{prefix}-" + hashlib.sha256(finding_id.encode()).hexdigest()[:24]


def _in_pools(config: MamoriConfig, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr in net for net in config.pools() if net.version == addr.version)


def plan_refusal(config: MamoriConfig, finding: dict[str, Any], now: datetime) -> Action:
    """The refusal a brute-force finding calls for (proposed, not recorded)."""
    mail = config.mail
    ip = ipaddress.ip_address(finding["ip"]).compressed
    first, last = finding["first_seen"], finding["last_seen"]
    ev = json.loads(finding["evidence"] or "{}")
    so_far = (last - first).total_seconds()
    length = min(max(so_far, mail.refusal_min_s) + mail.refusal_margin_s, mail.refusal_max_s)
    return Action(
        action_id=_aid("smtp-refusal", finding["finding_id"]),
        kind=ActionKind.SMTP_AUTH_REFUSAL,
        target=ip,
        measure=REFUSAL_MEASURE,
        legal_basis=LegalBasis.JUSTIFIED_ACT,
        justification=(
            f"SMTP AUTH brute force ({finding['method']}): {ev.get('failures', '?')} failures on "
            f"{ev.get('auth_ids_tried', '?')} AUTH IDs over {round(so_far)} s; AUTH refused "
            "for the attack's duration plus a margin"
        ),
        created=now,
        # from now, or from the last failure when the finding is read later than it happened
        expires=max(now, last) + timedelta(seconds=length),
        finding_id=finding["finding_id"],
        # an address in the ISP's own pools is a subscriber's (a hijacked device)
        subscribers_affected=1 if _in_pools(config, ip) else 0,
    )


def plan_suspension(config: MamoriConfig, finding: dict[str, Any], now: datetime) -> Action:
    """The suspension a compromised-account finding calls for (proposed, not recorded)."""
    ev = json.loads(finding["evidence"] or "{}")
    return Action(
        action_id=_aid("smtp-suspension", finding["finding_id"]),
        kind=ActionKind.ACCOUNT_SUSPENSION,
        target=finding["auth_id"],
        measure=SUSPENSION_MEASURE,
        legal_basis=LegalBasis.JUSTIFIED_ACT,
        justification=(
            f"mail queue spike ({ev.get('trigger', '?')}); the AUTH ID sent "
            f"{ev.get('recipients_per_hour', '?')} recipients in an hour against at most "
            f"{ev.get('baseline_busiest_hour', '?')} before ({', '.join(ev.get('signs', []))}); "
            "SMTP AUTH suspended to stop the spam"
        ),
        created=now,
        expires=now + timedelta(hours=config.mail.suspension_hours),
        finding_id=finding["finding_id"],
        subscribers_affected=1,
    )


@dataclass
class SmtpActReport:
    """What one pass did: actions by state, targets left alone, alerts sent."""

    proposed: list[Action] = field(default_factory=list)
    applied: list[Action] = field(default_factory=list)
    already_open: int = 0
    unusable: list[str] = field(default_factory=list)
    alerts: dict[str, str] = field(default_factory=dict)  # suspension action id → outcome


def _smtp_actions(gov: Governance, actor: str, now: datetime) -> list[Action]:
    since = now - timedelta(seconds=max(gov.config.mail.refusal_max_s, 90 * 86400))
    cur = act.current(gov, actor, [REFUSAL_MEASURE, SUSPENSION_MEASURE], since=since)
    kinds = (ActionKind.SMTP_AUTH_REFUSAL, ActionKind.ACCOUNT_SUSPENSION)
    return [a for a in cur.values() if a.kind in kinds]


def open_smtp_actions(gov: Governance, actor: str, now: datetime) -> dict[str, Action]:
    """Open (proposed, approved, applied, not past expiry) refusals and suspensions by
    ``kind:target``."""
    return {
        f"{a.kind.value}:{a.target}": a
        for a in _smtp_actions(gov, actor, now)
        if a.state in act.OPEN and a.expires > now
    }


def act_on_findings(
    gov: Governance,
    findings: pa.Table,
    *,
    actor: str,
    now: datetime | None = None,
    backends: dict[ActionKind, Backend[object]] | None = None,
    alert: bool = True,
) -> SmtpActReport:
    """Propose (and, by policy, approve and apply) the actions ``findings`` call for."""
    at = now or datetime.now(UTC)
    cfg = gov.config
    be = backends if backends is not None else smtp_backends(cfg)
    report = SmtpActReport()
    rows = findings.to_pylist()
    if not rows:
        return report
    known = _smtp_actions(gov, actor, at)
    existing = {
        f"{a.kind.value}:{a.target}" for a in known if a.state in act.OPEN and a.expires > at
    }
    # a finding acted on once is not acted on again (its action may have expired since)
    acted = {a.finding_id for a in known if a.finding_id}
    planned: dict[str, Action] = {}
    for r in rows:
        if r["finding_id"] in acted:
            report.already_open += 1
            continue
        try:
            if r["kind"] == BRUTE_FORCE and r["ip"]:
                a = plan_refusal(cfg, r, at)
            elif r["kind"] == COMPROMISED and r.get("auth_id"):
                if _BAD_AUTH_ID.search(r["auth_id"]):
                    report.unusable.append(f"{r['finding_id']}: AUTH ID not writable to Dovecot")
                    continue
                a = plan_suspension(cfg, r, at)
            else:
                continue
        except ValueError as exc:
            report.unusable.append(f"{r['finding_id']}: {exc}")
            continue
        key = f"{a.kind.value}:{a.target}"
        if key in existing or key in planned:
            report.already_open += 1
            continue
        planned[key] = a
    for kind, auto, rule in (
        (ActionKind.SMTP_AUTH_REFUSAL, cfg.mail.auto_refuse, "M12-refusal"),
        (ActionKind.ACCOUNT_SUSPENSION, cfg.mail.auto_suspend, "M11-suspension"),
    ):
        group = [a for a in planned.values() if a.kind is kind]
        if not group:
            continue
        proposed = act.propose(gov, group, actor, now=at)
        report.proposed += proposed
        if not auto:
            continue
        approved = act.approve(
            gov, proposed, actor, approved_by=f"policy:{rule}", now=at,
            detail={"decision": f"[mail] auto_{'refuse' if kind is ActionKind.SMTP_AUTH_REFUSAL else 'suspend'}"},
        )  # fmt: skip
        applied = act.apply(gov, approved, actor, backend=be.get(kind), now=at)
        report.applied += applied
        if kind is ActionKind.ACCOUNT_SUSPENSION and alert:
            by_id = {r["finding_id"]: r for r in rows}
            for a in applied:
                report.alerts[a.action_id] = _alert_owner(
                    gov, a, by_id.get(a.finding_id), actor, at
                )
    return report


# ---------------------------------------------------------------- the owner's alert


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def render_owner_alert(
    config: MamoriConfig, suspension: Action, finding: dict[str, Any] | None, to: str
) -> EmailMessage:
    """The owner's alert for a suspension, in ``[mail] alert_languages`` (one message, each
    language in turn)."""
    ev = json.loads((finding or {}).get("evidence") or "{}")
    first = (finding or {}).get("first_seen") or suspension.created
    last = (finding or {}).get("last_seen") or suspension.created
    m = catalogue()[SUSPENSION_MEASURE]
    values = {
        "isp_name": config.isp_name,
        "ref": suspension.action_id,
        "auth_id": suspension.target,
        "first": _fmt(first),
        "last": _fmt(last),
        "per_hour": ev.get("recipients_per_hour", "?"),
        "usual": ev.get("baseline_busiest_hour", 0),
        "networks": ev.get("networks", "?"),
        "failures": ev.get("failures_before_success", 0),
        "until": _fmt(suspension.expires),
        "measure": SUSPENSION_MEASURE,
        "measure_name": m.name,
        "measure_name_ja": m.name_ja,
    }
    parts = [
        _ENV.get_template(f"suspension.{lang}.txt").render(**values)
        for lang in config.mail.alert_languages
    ]
    subjects, bodies = zip(*(p.partition("\n\n")[::2] for p in parts), strict=True)
    msg = EmailMessage()
    msg["Subject"] = subjects[0].strip()
    msg["From"] = config.smtp.sender
    msg["To"] = to
    msg["Date"] = format_datetime(datetime.now(UTC))
    domain = config.smtp.sender.rpartition("@")[2] or "mamori.invalid"
    msg["Message-ID"] = f"<{suspension.action_id}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    sep = "\n" + "-" * 60 + "\n\n"
    msg.set_content(sep.join(b.lstrip("\n") for b in bodies), charset="utf-8")
    return msg


def _alert_owner(
    gov: Governance, suspension: Action, finding: dict[str, Any] | None, actor: str, now: datetime
) -> str:
    cfg = gov.config
    to = cfg.mail.owner_address.replace("{auth_id}", suspension.target)
    if "@" not in to:
        return "not sent: no address for the owner ([mail] owner_address)"
    alert = Action(
        action_id=f"alert-{suspension.action_id}",
        kind=ActionKind.ALERT,
        target=suspension.action_id,
        measure=SUSPENSION_MEASURE,
        legal_basis=LegalBasis.JUSTIFIED_ACT,
        justification="the owner of a suspended AUTH ID is told what was seen and how to restore",
        created=now,
        expires=suspension.expires,
        finding_id=suspension.finding_id,
        subscribers_affected=1,
    )
    proposed = act.propose(gov, [alert], actor, now=now)
    approved = act.approve(gov, proposed, actor, approved_by="policy:M11-suspension", now=now)
    with Mailer(cfg.smtp, cfg.alerts.smtp_timeout_s) as mailer:
        delivery = mailer.send(render_owner_alert(cfg, suspension, finding, to))
    if delivery.state != "sent":
        # left approved: the expiry sweep records it as expired
        log.warning("owner alert for %s: %s", suspension.action_id, delivery.error)
        return f"{delivery.state}: {delivery.error}"
    applied = act.apply(gov, approved, actor, now=now)
    act.end(gov, applied, actor, now=now, detail={"delivered": True})
    return "sent"


# ---------------------------------------------------------------- restore


def restore(
    gov: Governance,
    target: str,
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
    backends: dict[ActionKind, Backend[object]] | None = None,
) -> list[Action]:
    """End the open refusal of an address or suspension of an AUTH ID before its expiry (the
    desk restored it): the back end withdraws it, then the step is recorded with ``reason``."""
    at = now or datetime.now(UTC)
    be = backends if backends is not None else smtp_backends(gov.config)
    out: list[Action] = []
    for key, a in open_smtp_actions(gov, actor, at).items():
        if a.target != target:
            continue
        if a.state is ActionState.APPLIED:
            out += act.end(
                gov, [a], actor, backend=be.get(a.kind), now=at, detail={"restore": reason}
            )
        elif a.state is ActionState.PROPOSED:
            out += act.reject(gov, [a], actor, now=at, detail={"restore": reason})
        else:  # approved, not applied: nothing to withdraw; it is over once it expires
            log.info("restore %s: %s is approved but not applied", target, key)
    return out


def withdraw_expired(
    gov: Governance,
    actor: str,
    *,
    now: datetime | None = None,
    backends: dict[ActionKind, Backend[object]] | None = None,
) -> list[Action]:
    """The expiry sweep for M11 and M12: every refusal and suspension past its expiry is
    withdrawn and recorded as expired."""
    be = backends if backends is not None else smtp_backends(gov.config)
    return act.expire_due(
        gov, actor, now, backends=be, measures=[REFUSAL_MEASURE, SUSPENSION_MEASURE]
    )


def summarise(actions: Sequence[Action]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in actions:
        key = f"{a.kind.value}:{a.state.value}"
        out[key] = out.get(key, 0) + 1
    return out
