"""Dataset schemas: declared once, and unable to hold packet payload."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mamori.schemas import DATASETS, DataKind

EXPECTED = {
    "flows",
    "flow_days",
    "dns_queries",
    "allocations",
    "subscribers",
    "auth_events",
    "mail_queue",
    "reputation",
    "findings",
    "matches",
    "actions",
    "notifications",
    "cases",
    "consent",
    "audit",
}
# The longest any string column may be: enough for a URL or JSON evidence, far too small for a
# capture. Packet payload has no column to live in.
LONGEST = 16384


def _leaf_types(t: pa.DataType) -> list[pa.DataType]:
    if pa.types.is_nested(t):
        return [x for i in range(t.num_fields) for x in _leaf_types(t.field(i).type)]
    return [t]


def test_every_dataset_is_declared() -> None:
    assert set(DATASETS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_column_can_hold_payload(name: str) -> None:
    schema = DATASETS[name]
    for col in schema.columns:
        for t in _leaf_types(col.type):
            assert not (
                pa.types.is_binary(t)
                or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t)
                or pa.types.is_binary_view(t)
            ), f"{name}.{col.name} is binary"
            assert not pa.types.is_large_string(t), f"{name}.{col.name} is unbounded text"
            if pa.types.is_string(t):
                assert col.max_len is not None and col.max_len <= LONGEST, (name, col.name)
        assert not pa.types.is_list(col.type) and not pa.types.is_large_list(col.type)
        lowered = col.name.lower()
        for word in ("payload", "raw", "body", "content", "header_bytes", "packet_data"):
            assert word not in lowered, f"{name}.{col.name}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_column_declares_its_kind_and_doc(name: str) -> None:
    schema = DATASETS[name]
    assert schema.time_column in schema
    for col in schema.columns:
        assert isinstance(col.kind, DataKind) and col.doc


def test_flow_columns_are_exactly_m1s() -> None:
    assert DATASETS["flows"].column_names == (
        "time_start",
        "time_end",
        "src_addr",
        "dst_addr",
        "src_port",
        "dst_port",
        "protocol",
        "tcp_flags",
        "tos",
        "packets",
        "bytes",
        "exporter",
        "input_if",
        "output_if",
        "sampling_rate",
        "observation_domain",
    )


def test_communications_columns_are_marked() -> None:
    flows = DATASETS["flows"]
    assert flows.column("src_addr").kind is DataKind.COMMUNICATIONS
    assert flows.column("exporter").kind is DataKind.NEITHER
    assert DATASETS["subscribers"].column("email").kind is DataKind.SUBSCRIBER
