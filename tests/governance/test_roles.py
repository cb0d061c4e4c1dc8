"""Roles and views: each view's measures may read what the view shows; roles are separated."""

from __future__ import annotations

import pytest

from mamori.governance import catalogue
from mamori.governance.roles import (
    ACTION_MEASURES,
    ALERT_MEASURES,
    FINDING_MEASURES,
    VIEWS,
    Role,
    measures_for,
    views_for,
)


@pytest.mark.parametrize(
    ("measures", "dataset"),
    [
        (FINDING_MEASURES, "findings"),
        (ACTION_MEASURES, "actions"),
        (ALERT_MEASURES, "notifications"),
    ],
)
def test_view_measures_may_read_their_dataset(measures: tuple[str, ...], dataset: str) -> None:
    cat = catalogue()
    for m in measures:
        assert cat[m].may_read(dataset), (m, dataset)
        assert cat[m].may_write(dataset) or m == "M5", (m, dataset)  # read what it made


@pytest.mark.parametrize(
    ("role", "sees", "never"),
    [
        (Role.ANALYST, {"findings", "actions", "traffic"}, {"audit", "users"}),
        (Role.ABUSE_DESK, {"alerts", "actions.decide"}, {"audit", "traffic", "users"}),
        (Role.OPERATOR, {"traffic", "actions"}, {"actions.decide", "findings", "alerts"}),
        (Role.AUDITOR, {"audit", "retention"}, {"findings", "actions", "alerts", "traffic"}),
        (Role.ADMIN, {"users"}, {"findings", "audit", "alerts", "traffic"}),
    ],
)
def test_role_views(role: Role, sees: set[str], never: set[str]) -> None:
    names = {v.name for v in views_for(role)}
    assert sees <= names
    assert not (never & names)


def test_auditor_and_admin_read_no_measure_data() -> None:
    assert measures_for(Role.AUDITOR) == ()
    assert measures_for(Role.ADMIN) == ()
    assert measures_for(Role.OPERATOR) == tuple(
        sorted({"M14", *ACTION_MEASURES}, key=lambda m: int(m[1:]))
    )


def test_m14_reads_aggregatable_columns_only() -> None:
    m14 = catalogue()["M14"]
    assert not {"src_addr", "dst_addr", "src_port"} & set(m14.may_read("flows"))
    assert "target" not in m14.may_read("actions")


def test_public_views_have_no_roles() -> None:
    for v in VIEWS.values():
        assert v.public == (not v.roles)
        assert not v.public or not v.measures
