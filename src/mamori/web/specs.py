"""The console's tables, declared once (columns, filters, default order): see
:mod:`mamori.web.tables`."""

from __future__ import annotations

from mamori.web.tables import Col, TableSpec

__all__ = [
    "ACTIONS_TABLE",
    "ALERTS_TABLE",
    "AUDIT_TABLE",
    "CASES_TABLE",
    "FINDINGS_TABLE",
    "MAIL_TABLE",
]

FINDINGS_TABLE = TableSpec(
    "findings",
    (
        Col("detected", "detected"),
        Col("kind", "kind", filter="choice"),
        Col("endpoint", "endpoint"),
        Col("method", "method", filter="choice"),
        Col("score", "score"),
        Col("measure", "measure", filter="choice"),
        Col("review", "status", filter="choice"),
        Col("evidence", "evidence", sortable=False),
    ),
    sort="detected",
    search=("endpoint", "finding_id", "kind", "method", "evidence"),
    time="detected",
    net="ip",
    csv_columns=(
        "detected",
        "finding_id",
        "kind",
        "method",
        "ip",
        "port",
        "protocol",
        "score",
        "measure",
        "review",
        "first_seen",
        "last_seen",
    ),
)

ACTIONS_TABLE = TableSpec(
    "actions",
    (
        Col("action_id", "id"),
        Col("kind", "kind", filter="choice"),
        Col("target", "target", filter="text"),
        Col("measure", "measure", filter="choice"),
        Col("status", "status", filter="choice"),
        Col("created", "created"),
        Col("expires", "expires"),
        Col("start", "start"),
        Col("end", "end"),
        Col("subscribers_affected", "subscribers"),
        Col("approved_by", "approved by", filter="text"),
    ),
    sort="created",
    search=("action_id", "target", "finding_id", "approved_by", "justification"),
    time="created",
    csv_columns=(
        "action_id",
        "kind",
        "target",
        "measure",
        "legal_basis",
        "status",
        "created",
        "expires",
        "start",
        "end",
        "subscribers_affected",
        "approved_by",
        "finding_id",
    ),
)

ALERTS_TABLE = TableSpec(
    "alerts",
    (
        Col("created", "created"),
        Col("notification_id", "alert"),
        Col("subscriber_id", "subscriber", filter="text"),
        Col("measure", "measure", filter="choice"),
        Col("case_id", "case"),
        Col("cause", "cause", filter="choice"),
        Col("state", "state", filter="choice"),
        Col("attempts", "attempts"),
        Col("sent", "sent"),
    ),
    sort="created",
    search=("notification_id", "case_id", "subscriber_id", "cause"),
    time="created",
    csv_columns=(
        "created",
        "notification_id",
        "subscriber_id",
        "measure",
        "legal_basis",
        "case_id",
        "cause",
        "state",
        "attempts",
        "sent",
        "updated",
    ),
)

CASES_TABLE = TableSpec(
    "cases",
    (
        Col("case_id", "case"),
        Col("measure", "measure", filter="choice"),
        Col("status", "status", filter="choice"),
        Col("assignee", "assignee", filter="text"),
        Col("subscriber_id", "subscriber", filter="text"),
        Col("cause", "cause", filter="choice"),
        Col("notification_state", "alert", filter="choice"),
        Col("opened", "opened"),
        Col("updated", "updated"),
    ),
    sort="updated",
    search=("case_id", "subscriber_id", "cause", "assignee"),
    time="opened",
)

MAIL_TABLE = TableSpec(
    "mailbox",
    (
        Col("received", "received"),
        Col("recipients", "to", filter="text"),
        Col("subject", "subject", filter="text"),
        Col("case_id", "case", sortable=False),
    ),
    sort="received",
    search=("recipients", "subject", "sender", "case_id"),
    time="received",
    csv_columns=("received", "sender", "recipients", "subject", "case_id"),
)

AUDIT_TABLE = TableSpec(
    "audit",
    (
        Col("seq", "#"),
        Col("ts", "time"),
        Col("actor", "actor", filter="text"),
        Col("event", "event", filter="choice"),
        Col("measure", "measure", filter="choice"),
        Col("legal_basis", "legal basis", filter="choice"),
        Col("dataset", "dataset", filter="choice"),
        Col("detail", "detail", sortable=False),
    ),
    sort="seq",
    time="ts",
    per_page=100,
    # the detail (addresses masked, as everywhere on these pages) and each entry's hash, so the
    # transparency report can be rebuilt from the export, its audit head included
    csv_columns=(
        "seq",
        "ts",
        "actor",
        "event",
        "measure",
        "legal_basis",
        "dataset",
        "case_id",
        "detail",
        "hash",
    ),
)
