"""CGNAT port-block allocation logs: Juniper Junos syslog (MS-MPC / MS-MIC, Next Gen Services).

With port block allocation (PBA) the CGN logs one line per block given to an inside address::

    <syslog time> <host> … JSERVICES_NAT_PORT_BLOCK_ALLOC: 100.64.0.44 -> 203.0.113.2:28160-28671 0x6ae7639d
    … JSERVICES_NAT_PORT_BLOCK_ACTIVE: … (interim logging, optional)
    … JSERVICES_NAT_PORT_BLOCK_RELEASE: …

(Juniper, "Port Block Allocation" in the Junos NAT guide, and the system-log reference entries
JSERVICES_NAT_PORT_BLOCK_ALLOC / _ACTIVE / _RELEASE). The trailing hex number is the CGN's own
time (seconds since the epoch) and is the time used; the syslog header time is the collector's,
and when the two disagree (beyond the skew tolerance, compared within the day because RFC 3164
headers carry no year) the line is counted under ``clock_skew``.

Rows are stored two-stage: public address + port block → ``inside_addr``, no subscriber; the
subscriber is whoever held the inside address (RADIUS, DHCP) at the time, resolved at lookup.
"""

from __future__ import annotations

from pathlib import Path

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
    port_block_events,
    read_text,
)

__all__ = ["parse_juniper_pba"]

_MARK = "JSERVICES_NAT_PORT_BLOCK_"
_LINE = (
    r"^(?:<\d+>)?(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d) .*?"
    r"JSERVICES_NAT_PORT_BLOCK_(?P<ev>ALLOC|ACTIVE|RELEASE): +"
    r"(?P<inside>[0-9A-Fa-f.:]+) +-> +(?P<pub>\d+\.\d+\.\d+\.\d+):(?P<lo>\d{1,5})-(?P<hi>\d{1,5})"
    r" +0x(?P<epoch>[0-9A-Fa-f]{1,12})\b"
)
_HEX = np.full(256, 0, dtype=np.int64)
for _i, _c in enumerate("0123456789abcdef"):
    _HEX[ord(_c)] = _i
    _HEX[ord(_c.upper())] = _i


def _hex(values: pa.Array) -> np.ndarray:
    """Hexadecimal text (at most 12 digits) → int64, without a per-value loop."""
    padded = pc.utf8_lpad(values, 12, "0").cast(pa.binary())
    raw = np.frombuffer(padded.buffers()[2], dtype=np.uint8)
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32)
    start = offsets[padded.offset : padded.offset + len(padded)]
    digits = raw[start[:, None] + np.arange(12)[None, :]]
    weights = 16 ** np.arange(11, -1, -1, dtype=np.int64)
    return np.asarray((_HEX[digits] * weights).sum(axis=1), dtype=np.int64)


def parse_juniper_pba(path: Path, issues: Issues, *, timeout_s: float, skew_s: float) -> pa.Table:
    report: IngestReport = issues.report
    text = read_text(path, issues)
    lines = text.text
    if not len(lines):
        return EVENT_SCHEMA.empty_table()
    numbers = text.numbers
    ours = pc.match_substring(lines, _MARK).to_numpy(zero_copy_only=False) & ~text.bad
    other = ~ours & ~text.bad & pc.not_equal(lines, "").to_numpy(zero_copy_only=False)
    report.skipped += int(other.sum())
    sub = pc.filter(lines, pa.array(ours))
    parts = pc.extract_regex(sub, _LINE)
    ok = pc.is_valid(parts).to_numpy(zero_copy_only=False)
    lo_hi_ok = ok.copy()
    if ok.any():
        f = parts.filter(pa.array(ok))
        lo = pc.cast(pc.struct_field(f, ["lo"]), pa.int64()).to_numpy()
        hi = pc.cast(pc.struct_field(f, ["hi"]), pa.int64()).to_numpy()
        lo_hi_ok[ok] = (lo <= hi) & (hi <= 65535)
    if not lo_hi_ok.all():
        issues.lines(
            "malformed",
            numbers[ours][~lo_hi_ok],
            "not a port-block line: '<inside> -> <public>:<first>-<last> 0x<time>'",
        )
    good = lo_hi_ok
    report.records += int(ours.sum())
    f = parts.filter(pa.array(good))
    n = len(f)
    if not n:
        return EVENT_SCHEMA.empty_table()
    line_no = numbers[ours][good]
    epoch = _hex(pc.struct_field(f, ["epoch"])) * 1000
    header = pc.binary_join_element_wise(
        pc.struct_field(f, ["mon"]), pc.struct_field(f, ["day"]), pc.struct_field(f, ["hms"]), " "
    )
    t_head = pc.strptime(header, "%b %d %H:%M:%S", "ms", error_is_null=True)
    head_ms = pc.fill_null(pc.cast(t_head, pa.int64()), 0).to_numpy(zero_copy_only=False)
    has_head = pc.is_valid(t_head).to_numpy(zero_copy_only=False)
    day = 86_400_000
    d = (epoch % day) - (head_ms % day)
    d = (d + day // 2) % day - day // 2
    skewed = has_head & (np.abs(d) > skew_s * 1000)
    if skewed.any():
        idx = np.flatnonzero(skewed)
        issues.add(
            "clock_skew",
            int(idx.size),
            [
                f"line {line_no[i]}: syslog time and the CGN's time differ by {abs(d[i]) / 1000:g} s"
                for i in idx[:10]
            ],
        )
    ev = pc.struct_field(f, ["ev"])
    kind = pc.take(
        pa.array([START, INTERIM, STOP], pa.int8()),
        pc.index_in(ev, value_set=pa.array(["ALLOC", "ACTIVE", "RELEASE"])),
    ).to_numpy(zero_copy_only=False)
    return port_block_events(
        epoch,
        kind,
        pc.struct_field(f, ["pub"]),
        pc.cast(pc.struct_field(f, ["lo"]), pa.uint16()),
        pc.cast(pc.struct_field(f, ["hi"]), pa.uint16()),
        pc.struct_field(f, ["inside"]),
        line_no,
        timeout_ms=round(timeout_s * 1000),
    )
