"""The notice to existing subscribers: the consent-based measures their terms now include, what
each does, that it is on unless they switch it off, and how to switch it off at any time — in
Japanese and English (seeds/002: the blanket consent is valid only if subscribers are told).

``send_notice`` mails every subscriber in the directory who has not had it yet, at most
``alerts.rate_limit_per_hour`` an hour (a run sends what the hour allows and the next run goes
on), and remembers who had it in ``<store>/_state/notice/sent.json`` (ids only). Each run is one
``notice`` audit entry with its counts; the directory read is audited by governance.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from mamori.act.mailer import Mailer
from mamori.config import MamoriConfig
from mamori.governance import Governance, Measure
from mamori.governance.tokens import consent_token

__all__ = ["NoticeSummary", "render_notice", "send_notice"]


@dataclass
class NoticeSummary:
    subscribers: int = 0
    already: int = 0
    sent: int = 0
    failed: int = 0
    waiting: int = 0  # over this hour's limit: the next run sends them
    dry_run: bool = False
    states: dict[str, int] = field(default_factory=dict)


def _measures_ja(measures: list[Measure]) -> str:
    return "\n".join(
        f"・{m.name_ja}（{m.id}）\n  {m.purpose_ja}\n  現在の設定：参加（停止されない限り有効です）"
        for m in measures
    )


def _measures_en(measures: list[Measure]) -> str:
    return "\n".join(
        f"- {m.name} ({m.id})\n  {m.purpose}\n  Your setting: on (until you switch it off)"
        for m in measures
    )


def render_notice(
    config: MamoriConfig,
    measures: list[Measure],
    subscriber_id: str,
    email: str,
    language: str | None,
) -> EmailMessage:
    base = config.web.base_url.rstrip("/")
    link = f"{base}/consent/{consent_token(config, subscriber_id)}"
    ja = (
        f"{config.isp_name}をご利用のお客さまへ\n\n"
        "利用規約の改定により、次の通信の安全対策を行います。いずれも、お客さまが停止しない限り"
        "有効です。いつでも停止・再開でき、どちらを選んでもご契約の条件・料金・サービス内容は"
        "変わりません。\n\n"
        f"{_measures_ja(measures)}\n\n"
        f"設定の確認・変更：\n  {link}\n"
        f"（このリンクの有効期限が切れた場合は {base}/consent からご契約番号で変更できます。"
        "お電話でもサポート窓口で承ります。）\n"
        f"公表事項：{base}/\n"
    )
    en = (
        f"To our subscribers at {config.isp_name}\n\n"
        "Under our revised terms of service we take the security measures below. Each is on "
        "unless you switch it off. You can switch each off, or on again, at any time; your "
        "contract, price and service are the same whichever you choose.\n\n"
        f"{_measures_en(measures)}\n\n"
        f"See or change your settings:\n  {link}\n"
        f"(When this link has expired, use {base}/consent with your contract id, or call the "
        "support desk.)\n"
        f"Public notice: {base}/\n"
    )
    first, second = (en, ja) if (language or "ja").lower().startswith("en") else (ja, en)
    msg = EmailMessage()
    msg["From"] = config.smtp.sender
    msg["To"] = email
    msg["Subject"] = (
        f"【{config.isp_name}】通信の安全対策についてのお知らせ / About our security measures"
    )
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=config.smtp.sender.rsplit("@", 1)[-1])
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(first + "\n----\n\n" + second)
    return msg


def _state(gov: Governance) -> tuple[Path, dict[str, list[str]]]:
    path = gov.state_dir("notice") / "sent.json"
    try:
        data: dict[str, list[str]] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {"sent": [], "hour": []}
    return path, data


def send_notice(
    gov: Governance,
    actor: str,
    *,
    subscribers: list[str] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> NoticeSummary:
    """Mail the notice to every subscriber (``subscribers``: only these) not told yet."""
    at = now or datetime.now(UTC)
    measures = [m for m in gov.catalogue.consent_based() if gov.config.measure_enabled(m.id)]
    path, state = _state(gov)
    told = set(state.get("sent", []))
    # sends of the last hour (times), for the hourly limit shared across runs
    hour = [t for t in state.get("hour", []) if datetime.fromisoformat(t) > at - timedelta(hours=1)]
    budget = max(0, gov.config.alerts.rate_limit_per_hour - len(hour))
    everyone = gov.consent.contacts(actor=actor)
    wanted = set(subscribers) if subscribers is not None else None
    todo = [c for c in everyone if (wanted is None or c[0] in wanted) and c[0] not in told]
    summary = NoticeSummary(
        subscribers=len(everyone)
        if wanted is None
        else len([c for c in everyone if c[0] in wanted]),
        already=len(told if wanted is None else told & wanted),
        dry_run=dry_run,
    )
    if dry_run:
        summary.waiting = len(todo)
        return summary
    batch, summary.waiting = todo[:budget], max(0, len(todo) - budget)
    if batch:
        with Mailer(gov.config.smtp, timeout_s=gov.config.alerts.smtp_timeout_s) as mailer:
            for sub, email, lang in batch:
                d = mailer.send(render_notice(gov.config, measures, sub, email, lang))
                summary.states[d.state] = summary.states.get(d.state, 0) + 1
                if d.state == "sent":
                    summary.sent += 1
                    told.add(sub)
                    hour.append(at.isoformat())
                else:
                    summary.failed += 1
                if d.server_down:
                    summary.waiting += len(batch) - summary.sent - summary.failed
                    break
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"sent": sorted(told), "hour": hour}), encoding="utf-8")
    os.replace(tmp, path)
    gov.audit.append(
        actor=actor,
        event="notice",
        detail={
            "rows": summary.sent,
            "failed": summary.failed,
            "waiting": summary.waiting,
            "measures": [m.id for m in measures],
        },
    )
    return summary
