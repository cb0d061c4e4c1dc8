"""Reflection and amplification from the flows (M13): victims and open reflectors among the ISP's
own hosts.

* **Victims** — an inside host receiving UDP from many outside sources whose source port is a
  reflection protocol's (``[network.reflection] protocols``, every one configured, switched on
  for filtering or not): the answers of reflectors to queries spoofed with its address. The rate
  is corrected for sampling (packets × 1-in-N over the span the host was hit), so 1/1,000 sampled
  flows give the attack's real size; records of unknown rate are counted as records and sources
  but add nothing to the rate.
* **Open reflectors** — an inside host answering many outside hosts from a reflection port (53,
  123, 1900, 11211 by default), or answering a few at a high rate with many times the bytes of
  the queries it received (abused now: the queries' spoofed sources are the victims): a device
  that can be abused against others. Its owner is to be
  told (an alert, like M9's), and the ISP's own resolvers (``[network] resolvers``) are never
  reported.

Both read the flows under M13 (mass traffic and DDoS response): M10's catalogue entry, the
standing filter's, reads destination address and port only (MISSION), and telling a reflected
answer from a query needs the source port. Findings name an address (and for a reflector its
port), with counts and estimates as evidence — never a subscriber.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydantic import Field

from mamori.detect.base import DetectorParams, DetectorRun, Window
from mamori.detect.flowview import open_oriented
from mamori.governance import Governance

__all__ = ["ReflectionDetector", "ReflectionParams"]


class ReflectionParams(DetectorParams):
    victim_min_sources: int = Field(
        default=10, ge=1, description="distinct outside sources answering from reflection ports"
    )
    victim_min_pps: float = Field(
        default=1000.0,
        ge=0,
        description="and their packets per second, corrected for sampling, over the span the "
        "victim was hit (at least min_span_s)",
    )
    reflector_ports: tuple[int, ...] = Field(
        default=(53, 123, 1900, 11211), description="ports an open reflector answers from"
    )
    reflector_min_clients: int = Field(
        default=20, ge=1, description="distinct outside hosts it answered"
    )
    reflector_min_pps: float = Field(
        default=0.0, ge=0, description="and the rate of its answers, corrected for sampling"
    )
    reflector_abuse_pps: float = Field(
        default=100.0,
        gt=0,
        description="or: answers to one outside host at this rate (corrected for sampling) "
        "carrying at least reflector_min_amplification times the bytes of that host's queries "
        "— a reflector abused against a few victims (the queries' spoofed sources) answers few "
        "hosts",
    )
    reflector_min_amplification: float = Field(
        default=10.0,
        gt=1,
        description="answer bytes per query byte for the abuse test (DNS ANY/DNSSEC 28-54x, "
        "NTP monlist up to 556x; an authoritative server's ordinary answers are a few times "
        "its queries)",
    )
    reflector_min_sampled: int = Field(
        default=10,
        ge=1,
        description="sampled answer packets the abuse test needs: one sampled packet at "
        "1/1,000 stands for a thousand, and says nothing of a rate or of the queries behind it",
    )
    min_span_s: float = Field(
        default=10.0,
        gt=0,
        description="shortest span a rate is taken over (a burst within one record is not a "
        "rate of thousands per second)",
    )
    memory_limit_mb: int | None = Field(default=None, ge=64)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    from mamori.schemas import dataset

    return pa.Table.from_pylist(rows, schema=dataset("findings").arrow)


_SERVICE = {53: "dns", 123: "ntp", 161: "snmp", 389: "cldap", 1900: "ssdp", 11211: "memcached"}


def _for_owners(rows: list[dict[str, Any]]) -> pa.Table:
    """Open-reflector findings as M9 ``vulnerable`` findings (label ``open-reflector:dns``…),
    which ``mamori notify`` attributes and alerts like a NOTICE report."""
    out = []
    for r in rows:
        if r["method"] != "open-reflector":
            continue
        ev = json.loads(r["evidence"])
        service = _SERVICE.get(int(r["port"]), str(r["port"]))
        ev["label"] = f"open-reflector:{service}"
        ev["reflection_finding"] = r["finding_id"]
        out.append(
            {
                **r,
                "finding_id": "vulnerable-" + r["finding_id"],
                "kind": "vulnerable",
                "method": "open-reflector",
                "measure": "M9",
                "evidence": json.dumps(ev, sort_keys=True),
            }
        )
    return _table(out)


def _ports_sql(ports: Sequence[int]) -> str:
    return ", ".join(str(int(p)) for p in sorted(set(ports))) or "NULL"


class ReflectionDetector:
    """``mamori detect reflection``."""

    name = "reflection"
    measure = "M13"
    Params = ReflectionParams

    def __init__(self, params: ReflectionParams | None = None, *, write: bool = True) -> None:
        self.params = params or ReflectionParams()
        self.write = write

    def run(self, gov: Governance, window: Window, *, actor: str) -> DetectorRun:
        p = self.params
        cfg = gov.config
        ports = [proto.port for proto in cfg.network.reflection.protocols.values()]
        resolvers = list(cfg.network.resolvers)
        box = gov.sandbox(p.memory_limit_mb, label="M13-reflection")
        try:
            view = open_oriented(
                gov,
                actor,
                since=window.since,
                until=window.until,
                purpose="reflection victims and open reflectors",
                measure=self.measure,
                sandbox=box,
            )
            span = f"greatest(max(te) - min(ts), {p.min_span_s})"
            victims = view.sql(
                f"""
                SELECT host, count(DISTINCT ext) AS sources, count(*) AS records,
                       sum(packets * rate) / {span} AS pps,
                       8 * sum(bytes * rate) / {span} AS bps,
                       count(*) FILTER (WHERE rate IS NULL) AS unknown_rate,
                       list(DISTINCT eport ORDER BY eport) AS ports,
                       min(ts) AS first, max(te) AS last
                FROM {view.name}
                WHERE NOT outbound AND proto = 17 AND eport IN ({_ports_sql(ports)})
                GROUP BY host
                HAVING count(DISTINCT ext) >= {p.victim_min_sources}
                   AND coalesce(sum(packets * rate) / {span}, 0) >= {p.victim_min_pps}
                ORDER BY pps DESC NULLS LAST, host
                """
            ).to_arrow_table()
            ports_sql = _ports_sql(p.reflector_ports)
            # the abuse test is per answered host: an abused reflector floods its victims (the
            # queries' spoofed source) while it may answer others at an ordinary pace all day
            abused = (
                f"pair_pps >= {p.reflector_abuse_pps} AND sampled >= {p.reflector_min_sampled} "
                f"AND est_bytes >= {p.reflector_min_amplification} * greatest(query_bytes, 1)"
            )
            span_h = f"greatest(max(last) - min(first), {p.min_span_s})"
            reflectors = view.sql(
                f"""
                WITH answers AS (
                    SELECT host, hport, ext, count(*) AS records, sum(packets) AS sampled,
                           sum(packets * rate) AS est_packets, sum(bytes * rate) AS est_bytes,
                           count(*) FILTER (WHERE rate IS NULL) AS unknown_rate,
                           min(ts) AS first, max(te) AS last
                    FROM {view.name}
                    WHERE outbound AND proto = 17 AND hport IN ({ports_sql})
                    GROUP BY host, hport, ext
                ), queries AS (
                    SELECT host, hport, ext, sum(bytes * rate) AS query_bytes
                    FROM {view.name}
                    WHERE NOT outbound AND proto = 17 AND hport IN ({ports_sql})
                    GROUP BY host, hport, ext
                ), pairs AS (
                    SELECT a.*, coalesce(q.query_bytes, 0) AS query_bytes,
                           a.est_packets / greatest(a.last - a.first, {p.min_span_s}) AS pair_pps
                    FROM answers a LEFT JOIN queries q USING (host, hport, ext)
                )
                SELECT host, hport, count(*) AS clients, CAST(sum(records) AS BIGINT) AS records,
                       sum(est_packets) / {span_h} AS pps, 8 * sum(est_bytes) / {span_h} AS bps,
                       CAST(sum(unknown_rate) AS BIGINT) AS unknown_rate, min(first) AS first,
                       max(last) AS last,
                       count(*) FILTER (WHERE {abused}) AS abused_by,
                       max(est_bytes / greatest(query_bytes, 1)) FILTER (WHERE {abused})
                           AS amplification
                FROM pairs
                GROUP BY host, hport
                HAVING coalesce(sum(est_packets) / {span_h}, 0) >= {p.reflector_min_pps}
                   AND (count(*) >= {p.reflector_min_clients}
                        OR count(*) FILTER (WHERE {abused}) > 0)
                ORDER BY clients DESC, host, hport
                """
            ).to_arrow_table()
            unknown = view.unknown_rate
            view.close()
        finally:
            box.close()
        now = datetime.now(UTC)
        rows = [self._victim(r, now, window) for r in victims.to_pylist()]
        skipped = 0
        for r in reflectors.to_pylist():
            addr = ipaddress.ip_address(r["host"])
            if any(addr in net for net in resolvers):
                skipped += 1  # the ISP's own resolvers answer many hosts by design
                continue
            rows.append(self._reflector(r, now, window))
        table = _table(rows)
        if self.write and table.num_rows:
            gov.write(
                self.measure, "findings", table, actor, justification="reflection and amplification"
            )
            owners = _for_owners(rows)
            if owners.num_rows:
                # the owner of an open reflector is alerted like a vulnerable device's (M9)
                gov.write("M9", "findings", owners, actor,
                          justification="open reflectors: their owners are alerted")  # fmt: skip
        summary = {
            "window": window.as_json(),
            "victims": victims.num_rows,
            "open_reflectors": reflectors.num_rows - skipped,
            "resolvers_skipped": skipped,
            "records_unknown_rate": unknown,
            "reflection_ports": sorted(set(ports)),
        }
        return DetectorRun(findings=table, summary=summary)

    def _finding(
        self, method: str, r: dict[str, Any], port: int | None, ev: dict[str, Any], now: datetime,
        window: Window,
    ) -> dict[str, Any]:  # fmt: skip
        key = f"{method}|{r['host']}|{port}|{window.as_json()}"
        score = min(1.0, (ev.get("sources") or ev.get("clients") or 0) / 100)
        return {
            "detected": now,
            "finding_id": f"reflection-{hashlib.sha256(key.encode()).hexdigest()[:16]}",
            "kind": "reflection",
            "method": method,
            "ip": r["host"],
            "port": port,
            "protocol": "udp",
            "score": float(score),
            "first_seen": datetime.fromtimestamp(r["first"], UTC),
            "last_seen": datetime.fromtimestamp(r["last"], UTC),
            "measure": self.measure,
            "evidence": json.dumps(ev, sort_keys=True),
        }

    def _victim(self, r: dict[str, Any], now: datetime, window: Window) -> dict[str, Any]:
        ev = {
            "sources": r["sources"],
            "records": r["records"],
            "est_pps": round(r["pps"] or 0.0, 1),
            "est_bps": round(r["bps"] or 0.0),
            "records_unknown_rate": r["unknown_rate"],
            "source_ports": list(r["ports"]),
        }
        return self._finding("victim", r, None, ev, now, window)

    def _reflector(self, r: dict[str, Any], now: datetime, window: Window) -> dict[str, Any]:
        ev = {
            "clients": r["clients"],
            "records": r["records"],
            "abused_against": r["abused_by"],
            "amplification": round(float(r["amplification"] or 0.0), 1),
            "est_pps": round(r["pps"] or 0.0, 1),
            "est_bps": round(r["bps"] or 0.0),
            "records_unknown_rate": r["unknown_rate"],
            "alert": "M9: the owner is asked to close the service to the Internet",
        }
        return self._finding("open-reflector", r, int(r["hport"]), ev, now, window)
