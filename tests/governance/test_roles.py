"""Roles and views: each view's measures may read what the view shows; roles are separated."""

from __future__ import annotations

import pytest

from mamori.governance import catalogue
from mamori.governance.roles import (
    ACTION_MEASURES,
    ALERT_MEASURES,
    CASE_MEASURES,
    FINDING_MEASURES,
    NETWORK_KINDS,
    VIEWS,
    Role,
    may_decide,
    measures_for,
    views_for,
)


@pytest.mark.parametrize(
    ("measures", "dataset"),
    [
        (FINDING_MEASURES, "findings"),
        (ACTION_MEASURES, "actions"),
        (ALERT_MEASURES, "notifications"),
        (CASE_MEASURES, "cases"),
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
        # operators decide on network actions (may_decide), and see no findings or alerts
        (
            Role.OPERATOR,
            {"traffic", "actions", "actions.decide", "approvals"},
            {"findings", "alerts", "cases", "findings.review"},
        ),
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


@pytest.mark.parametrize("kind", ["rpz", "alert", "smtp-auth-refusal", *sorted(NETWORK_KINDS)])
def test_network_actions_are_the_operators(kind: str) -> None:
    network = kind in NETWORK_KINDS
    assert may_decide(Role.OPERATOR, kind) is network
    assert may_decide(Role.ANALYST, kind) is not network
    assert may_decide(Role.ABUSE_DESK, kind) is not network
    assert not may_decide(Role.AUDITOR, kind) and not may_decide(None, kind)
