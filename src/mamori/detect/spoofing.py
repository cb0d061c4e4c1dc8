"""Spoofed sources (BCP 38, M13): flows entering the network on a customer-facing interface
whose source address is not one of the addresses behind that interface.

``[network.customer_interfaces]`` names each such interface (exporter and SNMP index, as the flow
records give them) and what lies behind it (address-plan pools, other prefixes). For each
interface with enough records from foreign sources the detector reports one finding per window:
the interface (the exporter's address is the finding's ``ip``; the index and name are in the
evidence), how many records, sampled and estimated packets came from outside its addresses, and
their share of what entered there. Estimates use the sampling rate; records whose rate is unknown
are counted as records but add nothing to the estimate. A finding names a router interface,
never a subscriber, and no spoofed address is kept (they are random or a victim's).

The same configuration renders uRPF and ingress ACLs (``mamori act filters --kind spoofing``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydantic import Field

from mamori.config import MamoriConfig
from mamori.config_network import CustomerInterface
from mamori.detect.base import DetectorParams, DetectorRun, Window
from mamori.detect.flowview import v4_range_sql
from mamori.governance import Governance

__all__ = [
    "SpoofingDetector",
    "SpoofingParams",
    "allowed_prefixes",
]

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
COLUMNS = ["time_start", "src_addr", "packets", "bytes", "exporter", "input_if", "sampling_rate"]


class SpoofingParams(DetectorParams):
    min_records: int = Field(
        default=3,
        ge=1,
        description="sampled records from foreign sources an interface needs before it is "
        "reported (one stray record is more likely a missing prefix in the configuration)",
    )
    min_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="and their least share of the records that entered on that interface",
    )
    memory_limit_mb: int | None = Field(default=None, ge=64)


def allowed_prefixes(config: MamoriConfig, iface: CustomerInterface) -> list[Net]:
    """The addresses behind ``iface``: its pools' prefixes and its own prefixes."""
    pools = {p.name: p for p in config.address_plan}
    unknown = [p for p in iface.pools if p not in pools]
    if unknown:
        raise ValueError(
            f"network.customer_interfaces {iface.name}: no address-plan pool {unknown}; "
            f"known: {sorted(pools)}"
        )
    nets: list[Net] = [n for name in iface.pools for n in pools[name].prefixes]
    return nets + list(iface.prefixes)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    from mamori.schemas import dataset

    return pa.Table.from_pylist(rows, schema=dataset("findings").arrow)


class SpoofingDetector:
    """``mamori detect spoofing``."""

    name = "spoofing"
    measure = "M13"
    Params = SpoofingParams

    def __init__(self, params: SpoofingParams | None = None, *, write: bool = True) -> None:
        self.params = params or SpoofingParams()
        self.write = write

    def run(self, gov: Governance, window: Window, *, actor: str) -> DetectorRun:
        cfg = gov.config
        ifaces = cfg.network.customer_interfaces
        now = datetime.now(UTC)
        box = gov.sandbox(self.params.memory_limit_mb, label="M13-spoofing")
        try:
            grant = gov.open(
                self.measure,
                "flows",
                COLUMNS,
                actor,
                justification="BCP 38: sources entering on customer-facing interfaces",
                start=window.since,
                end=window.until,
                sandbox=box,
            )
            rows = self._count(box, grant.name, ifaces, cfg, window) if ifaces else []
        finally:
            box.close()
        findings = []
        for r in rows:
            share = r["foreign"] / r["records"] if r["records"] else 0.0
            if r["foreign"] < self.params.min_records or share < self.params.min_share:
                continue
            iface: CustomerInterface = r["iface"]
            key = f"{iface.exporter}|{iface.ifindex}|{window.as_json()}"
            evidence = {
                "exporter": str(iface.exporter),
                "input_if": iface.ifindex,
                "interface": iface.name,
                "records": r["foreign"],
                "records_on_interface": r["records"],
                "share": round(share, 4),
                "sampled_packets": r["sampled"],
                "estimated_packets": r["estimated"],
                "unknown_rate_records": r["unknown"],
                "distinct_sources": r["sources"],
                "window": window.as_json(),
            }
            findings.append(
                {
                    "detected": now,
                    "finding_id": "spoofing-" + hashlib.sha256(key.encode()).hexdigest()[:16],
                    "kind": "spoofing",
                    "method": "ingress-source",
                    "ip": str(iface.exporter),
                    "port": None,
                    "protocol": None,
                    "score": float(min(1.0, share)),
                    "first_seen": r["first"],
                    "last_seen": r["last"],
                    "measure": self.measure,
                    "evidence": json.dumps(evidence, sort_keys=True),
                }
            )
        table = _table(findings)
        if self.write and table.num_rows:
            gov.write(self.measure, "findings", table, actor, justification="BCP 38 findings")
        summary = {
            "window": window.as_json(),
            "interfaces": len(ifaces),
            "interfaces_seen": len(rows),
            "findings": table.num_rows,
            "spoofed_records": sum(r["foreign"] for r in rows),
            "estimated_spoofed_packets": sum(r["estimated"] for r in rows),
        }
        return DetectorRun(findings=table, summary=summary)

    def _count(
        self,
        box: Any,
        raw: str,
        ifaces: tuple[CustomerInterface, ...],
        cfg: MamoriConfig,
        window: Window,
    ) -> list[dict[str, Any]]:
        where = ["TRUE"]
        if window.since is not None:
            where.append(f"time_start >= TIMESTAMPTZ '{window.since.isoformat()}'")
        if window.until is not None:
            where.append(f"time_start < TIMESTAMPTZ '{window.until.isoformat()}'")
        # one CASE arm per interface: which interface a record entered on, and whether its
        # source is one of that interface's addresses (IPv4 in SQL; IPv6 on distinct sources)
        arms, allowed_arms = [], []
        v6_allowed: list[str] = []
        for i, iface in enumerate(ifaces):
            nets = allowed_prefixes(cfg, iface)
            match = f"(exporter = '{iface.exporter.compressed}' AND input_if = {iface.ifindex})"
            arms.append(f"WHEN {match} THEN {i}")
            allowed_arms.append(f"WHEN {i} THEN coalesce({v4_range_sql('src_addr', nets)}, FALSE)")
            v6 = [n for n in nets if n.version == 6]
            if v6:
                distinct = box.sql(
                    f"SELECT DISTINCT src_addr FROM {raw} WHERE {match} AND contains(src_addr, ':')"
                ).fetchall()
                for (text,) in distinct:
                    try:
                        ip = ipaddress.ip_address(text)
                    except ValueError:
                        continue
                    if any(ip in n for n in v6):
                        v6_allowed.append(f"({i}, '{ip.compressed}')")
        v6_table = f"{raw}_v6ok"
        box.execute(f"CREATE TABLE {v6_table} (i INTEGER, a VARCHAR)")
        if v6_allowed:
            box.execute(f"INSERT INTO {v6_table} VALUES {', '.join(v6_allowed)}")
        tagged = f"""
            SELECT *, CASE {" ".join(arms)} END AS i FROM {raw} WHERE {" AND ".join(where)}
        """
        query = f"""
            WITH t AS ({tagged}), c AS (
                SELECT t.*, CASE t.i {" ".join(allowed_arms)} END
                       OR (v.a IS NOT NULL) AS ok
                FROM t LEFT JOIN {v6_table} v ON v.i = t.i AND v.a = t.src_addr
                WHERE t.i IS NOT NULL
            )
            SELECT i, count(*) AS records,
                   count(*) FILTER (WHERE NOT ok) AS foreign,
                   coalesce(sum(packets) FILTER (WHERE NOT ok), 0) AS sampled,
                   coalesce(sum(packets * nullif(sampling_rate, 0)) FILTER (WHERE NOT ok), 0)
                       AS estimated,
                   count(*) FILTER (WHERE NOT ok AND coalesce(sampling_rate, 0) = 0) AS unknown,
                   count(DISTINCT src_addr) FILTER (WHERE NOT ok) AS sources,
                   min(time_start) FILTER (WHERE NOT ok) AS first,
                   max(time_start) FILTER (WHERE NOT ok) AS last
            FROM c GROUP BY i ORDER BY i
        """
        out = []
        for r in box.sql(query).to_arrow_table().to_pylist():
            r["iface"] = ifaces[r["i"]]
            r["estimated"] = int(r["estimated"])
            r["sampled"] = int(r["sampled"])
            out.append(r)
        return out
