"""Kea DHCPv4 memfile lease files (``kea-leases4.csv``).

Columns ``address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,
state,user_context[,pool_id]`` (pool_id since Kea 2.3). The memfile back end appends a row for
every allocation and renewal (``expire`` = client last transaction time + ``valid_lifetime``) and a
row with ``valid_lifetime`` 0 when a lease is released or deleted (Kea ARM, "Memfile - Basic
Storage for Leases"); ``state`` 1 is declined, 2 expired-reclaimed. Commas inside values are
written as ``&#x2c`` by Kea, so a plain CSV reader suffices.

A lease session is a run of rows for one address and one client (the subscriber key: hwaddr by
default, or client_id / hostname) without a gap: it starts at the first row's transaction time and
ends at a release, at reclamation, or when the last renewal expires — or earlier, when the address
is given to another client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.ingest.allocations.common import (
    EVENT_SCHEMA,
    INTERIM,
    START,
    STOP,
    IngestReport,
    Issues,
    read_csv_text,
)

__all__ = ["KEA_COLUMNS", "KeaKey", "parse_kea_leases"]

KEA_COLUMNS = (
    "address",
    "hwaddr",
    "client_id",
    "valid_lifetime",
    "expire",
    "subnet_id",
    "fqdn_fwd",
    "fqdn_rev",
    "hostname",
    "state",
    "user_context",
)
KeaKey = Literal["hwaddr", "client_id", "hostname"]
DECLINED, RECLAIMED = 1, 2


def _int(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    ok = pc.fill_null(pc.match_substring_regex(col, r"^\d{1,15}$"), False)
    vals = pc.cast(pc.if_else(ok, col, "0"), pa.int64()).to_numpy()
    return np.asarray(vals), ok.to_numpy(zero_copy_only=False)


def parse_kea_leases(path: Path, issues: Issues, *, key: KeaKey = "hwaddr") -> pa.Table:
    report: IngestReport = issues.report
    table, numbers = read_csv_text(path, issues)
    missing = [
        c for c in ("address", "valid_lifetime", "expire", key) if c not in table.column_names
    ]
    if missing:
        raise ValueError(
            f"{path}: not a Kea lease file (header lacks {', '.join(missing)}); expected "
            + ",".join(KEA_COLUMNS)
        )
    report.records += table.num_rows + int(report.malformed)  # the bad lines were records too
    life, life_ok = _int(table.column("valid_lifetime"))
    expire, exp_ok = _int(table.column("expire"))
    state, _ = (
        _int(table.column("state"))
        if "state" in table.column_names
        else (
            np.zeros(table.num_rows, dtype=np.int64),
            None,
        )
    )
    addr = pc.utf8_trim_whitespace(table.column("address").combine_chunks())
    addr_ok = pc.match_substring_regex(addr, r"^\d+\.\d+\.\d+\.\d+$").to_numpy(zero_copy_only=False)
    ident = pc.utf8_trim_whitespace(table.column(key).combine_chunks())
    ident_ok = pc.not_equal(ident, "").to_numpy(zero_copy_only=False)
    good = life_ok & exp_ok & addr_ok
    for mask, why in (
        (~addr_ok, "address is not an IPv4 address"),
        (addr_ok & ~(life_ok & exp_ok), "valid_lifetime or expire is not a number"),
        (good & ~ident_ok, f"no {key} to name the subscriber"),
    ):
        if mask.any():
            issues.lines("malformed", numbers[mask], why)
    good &= ident_ok
    declined = good & (state == DECLINED)
    report.skipped += int(declined.sum())
    good &= ~declined
    idx = np.flatnonzero(good)
    addr_g = pc.take(addr, pa.array(idx))
    ident_g = pc.take(ident, pa.array(idx))
    life_g, expire_g, state_g = life[idx], expire[idx], state[idx]
    ts = (expire_g - life_g) * 1000  # client last transaction time
    stop = (life_g == 0) | (state_g == RECLAIMED)
    # a reclaimed lease ended when it expired; a released one when it was released (cltt)
    ts = np.where(state_g == RECLAIMED, expire_g * 1000, ts)
    until = expire_g * 1000

    # sessions: per address in time order, a new one when the client changes, after a release,
    # or after the previous lease ran out
    a_codes = pc.dictionary_encode(addr_g).indices.to_numpy()
    i_codes = pc.dictionary_encode(ident_g).indices.to_numpy()
    order = np.lexsort((stop, ts, a_codes))
    a_o, i_o, ts_o, stop_o, until_o = (
        a_codes[order],
        i_codes[order],
        ts[order],
        stop[order],
        until[order],
    )
    new = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        same = a_o[1:] == a_o[:-1]
        # latest expiry so far within the address
        prev_until = _segment_cummax(until_o, np.r_[True, ~same])
        new[1:] = ~same | (i_o[1:] != i_o[:-1]) | stop_o[:-1] | (ts_o[1:] > prev_until[:-1])
    sess = np.cumsum(new)
    first = np.r_[True, ~np.equal(sess[1:], sess[:-1])] if len(order) else new
    kind = np.where(stop_o, STOP, np.where(first, START, INTERIM)).astype(np.int8)
    sid = pc.binary_join_element_wise(
        pc.take(addr_g, pa.array(order)),
        pa.array((ts_o // 1000).astype(np.int64)).cast(pa.string()),
        "@",
    )
    # the session key is the address and the start of its session
    start_of = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    sid = pc.take(sid, pa.array(start_of))
    n = len(order)
    return pa.table(
        {
            "sid": sid,
            "ts": pa.array(ts_o, pa.int64()),
            "kind": pa.array(kind),
            "until": pa.array(until_o, pa.int64()),
            "addr": pc.take(addr_g, pa.array(order)),
            "port_start": pa.nulls(n, pa.uint16()),
            "port_end": pa.nulls(n, pa.uint16()),
            "inside_addr": pa.nulls(n, pa.string()),
            "ident": pc.take(ident_g, pa.array(order)),
            "elapsed": pa.nulls(n, pa.int64()),
            "line": pa.array(numbers[idx][order]),
        },
        schema=EVENT_SCHEMA,
    )


def _segment_cummax(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` that restarts wherever ``starts`` is true."""
    seg = np.cumsum(starts) - 1
    # shift each segment above every earlier one, so one global running maximum never carries
    # a value across a segment boundary
    lo = values.min() if values.size else 0
    span = int(values.max() - lo + 1) if values.size else 1
    shifted = (values - lo) + seg.astype(np.int64) * span
    return np.maximum.accumulate(shifted) - seg.astype(np.int64) * span + lo
