"""Alert e-mails give times in the ISP's time zone and name it (web.time_zone, Asia/Tokyo by
default), in both languages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mamori.act.notify import render_alert
from mamori.config import MamoriConfig


@pytest.mark.parametrize(
    ("language", "expected"),
    [("ja", "2026-11-02 21:28（日本時間）"), ("en", "2026-11-02 21:28 (JST, Japan time)")],
)
def test_alert_times_in_the_isps_zone(config: MamoriConfig, language: str, expected: str) -> None:
    at = datetime(2026, 11, 2, 12, 28, tzinfo=UTC)
    msg = render_alert(
        config,
        notification={
            "notification_id": "N-1",
            "subscriber_id": "sub-1",
            "case_id": "C-1",
            "cause": "infected:mirai",
            "legal_basis": "consent",
            "measure": "M5",
        },
        email="sub-1@example.jp",
        language=language,
        observed={"first": at, "last": at, "events": 1, "address": "10.0.0.1"},
        measure_name="Alerting",
        measure_name_ja="注意喚起",
        consent_based=True,
    )
    body = msg.get_content()
    assert expected in body and "UTC" not in body


def test_another_zone_is_named(config: MamoriConfig) -> None:
    cfg = config.model_copy(
        update={"web": config.web.model_copy(update={"time_zone": "Europe/Paris"})}
    )
    at = datetime(2026, 11, 2, 12, 28, tzinfo=UTC)
    msg = render_alert(
        cfg,
        notification={
            "notification_id": "N-1",
            "subscriber_id": "sub-1",
            "case_id": "C-1",
            "cause": "infected:mirai",
            "legal_basis": "consent",
            "measure": "M5",
        },
        email="sub-1@example.jp",
        language="en",
        observed={"first": at, "last": at, "events": 1, "address": "10.0.0.1"},
        measure_name="Alerting",
        measure_name_ja="注意喚起",
        consent_based=True,
    )
    assert "2026-11-02 13:28 (Europe/Paris)" in msg.get_content()
