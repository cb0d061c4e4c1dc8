"""Compromised SMTP AUTH accounts (measure M11): whose stolen credentials are sending spam.

Read through governance under M11 — address, time, mail address, AUTH ID and counts, nothing else
— in the detector's sandbox:

1. **The trigger is a queue spike.** Where a sampler runs (``mamori ingest mail --queue``), a
   sample holding at least ``queue_min_messages`` messages and ``queue_factor`` times the median of
   the samples in the ``baseline_days`` before it. Where none runs, the recipients queued per
   ``spike_bucket_s`` (from the ``qmgr`` lines' ``nrcpt``; a message whose count is unknown counts
   one) against the same kind of median, at least ``spike_min_recipients``.
2. **Candidates** are the AUTH IDs that queued mail during a spike (for a queue sample: in the
   ``spike_pad_s`` before it).
3. **Evidence**, per candidate, over its busiest hour around the spike:

   * recipients in that hour against the account's own busiest hour in the ``baseline_days``
     before (at least ``min_recipients_per_hour`` and ``baseline_factor`` times the baseline);
   * the distinct source addresses, networks (/24, /48) and — with an offline ``asn_table`` —
     ASNs or countries it sent from, and how many networks it had never sent from before;
   * failures on that AUTH ID in the ``failure_window_s`` before its first success of the hour (a
     success right after a burst of failures).

   A candidate with the volume and, unless ``require_evidence`` is off, one more sign (a new
   network, ``min_sources`` sources, ``min_networks`` networks, ``min_asns`` ASNs, or
   ``failures_before_success`` failures) is a finding of kind ``smtp-compromised``. It names the
   AUTH ID (to suspend) and the address it was used from most; the evidence holds counts only.
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from mamori.detect.base import DetectorParams, DetectorRun, Window
from mamori.governance import Governance, Sandbox
from mamori.schemas import AUTH_EVENTS, FINDINGS, MAIL_QUEUE

__all__ = ["KIND", "CompromisedDetector", "CompromisedParams", "load_asn_table"]

MEASURE = "M11"
KIND = "smtp-compromised"


class CompromisedParams(DetectorParams):
    """``[detect.smtp-compromised]``: compromised SMTP AUTH accounts (M11)."""

    queue_min_messages: int = Field(
        default=200, ge=1, description="queue sample: a spike holds at least this many messages"
    )
    queue_factor: float = Field(
        default=5.0, ge=1, description="…and this many times the median sample of the baseline"
    )
    spike_bucket_s: float = Field(
        default=600.0, gt=0, description="no sampler: recipients queued per bucket of this length"
    )
    spike_min_recipients: int = Field(
        default=20, ge=1, description="no sampler: a spike bucket has at least this many"
    )
    spike_factor: float = Field(
        default=5.0, ge=1, description="…and this many times the median bucket of the baseline"
    )
    spike_history_min: int = Field(
        default=6,
        ge=1,
        description="a spike is judged against at least this many samples or buckets before it "
        "(at the start of the data there is no usual to compare with)",
    )
    spike_pad_s: float = Field(
        default=3600.0, gt=0, description="queue sample: accounts sending this long before it"
    )
    baseline_days: float = Field(
        default=7.0, gt=0, le=90, description="the account's (and the queue's) usual, before"
    )
    min_recipients_per_hour: int = Field(
        default=50, ge=1, description="an account's busiest hour at the spike has at least"
    )
    baseline_factor: float = Field(
        default=5.0, ge=1, description="…and this many times its busiest hour in the baseline"
    )
    baseline_floor: int = Field(
        default=5, ge=1, description="an account without history is taken to send this many"
    )
    require_evidence: bool = Field(
        default=True, description="volume alone is not enough: one more sign is needed"
    )
    min_sources: int = Field(default=3, ge=2, description="source addresses in that hour")
    min_networks: int = Field(default=2, ge=2, description="source networks (/24, /48)")
    min_asns: int = Field(default=2, ge=2, description="ASNs or countries (with asn_table)")
    failures_before_success: int = Field(
        default=5, ge=1, description="failures on the AUTH ID before its first success"
    )
    failure_window_s: float = Field(default=3600.0, gt=0)
    asn_table: Path | None = Field(
        default=None,
        description="offline CSV prefix,asn[,country] (IPv4) to count ASNs per account",
    )
    memory_limit_mb: int | None = Field(default=None, ge=64)


def load_asn_table(path: Path) -> pa.Table:
    """An offline prefix → ASN table (CSV ``prefix,asn[,country]``; a header line is allowed)
    as integer ranges, IPv4 only."""
    lo, hi, asn = [], [], []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if not row or row[0].startswith("#"):
                continue
            try:
                net = ipaddress.ip_network(row[0].strip(), strict=False)
            except ValueError:
                continue  # the header, or a line that is not a prefix
            if net.version != 4 or len(row) < 2:
                continue
            label = row[1].strip() + (f"/{row[2].strip()}" if len(row) > 2 else "")
            lo.append(int(net.network_address))
            hi.append(int(net.broadcast_address))
            asn.append(label)
    return pa.table({"lo": pa.array(lo, pa.uint64()), "hi": pa.array(hi, pa.uint64()), "asn": asn})


def _iv(seconds: float) -> str:
    return f"INTERVAL '{round(seconds * 1000)} milliseconds'"


def _v4_int(col: str) -> str:
    parts = " + ".join(
        f"(TRY_CAST(split_part({col}, '.', {k + 1}) AS UBIGINT) << {24 - 8 * k})" for k in range(4)
    )
    return f"(CASE WHEN regexp_full_match({col}, '\\d+\\.\\d+\\.\\d+\\.\\d+') THEN {parts} END)"


def _network(col: str) -> str:
    """/24 of an IPv4 address, /48 of an IPv6 one (text)."""
    return (
        f"(CASE WHEN contains({col}, ':') THEN array_to_string(string_split({col}, ':')[1:3], ':')"
        f" ELSE regexp_extract({col}, '^(\\d+\\.\\d+\\.\\d+)\\.', 1) END)"
    )


def _sql(ev: str, queue: str, asn: str | None, p: CompromisedParams, spike_from: str) -> str:
    bucket = round(p.spike_bucket_s)
    base_buckets = max(1, round(p.baseline_days * 86400 / p.spike_bucket_s))
    asn_join = (
        f"LEFT JOIN {asn} a ON {_v4_int('m.client_addr')} BETWEEN a.lo AND a.hi" if asn else ""
    )
    asn_col = "a.asn" if asn else "NULL::VARCHAR"
    return f"""
WITH m AS MATERIALIZED (
    -- messages queued after a successful AUTH (a login alone queues nothing)
    SELECT ts, client_addr, auth_id, coalesce(recipients, 1)::BIGINT AS r
    FROM {ev} WHERE success AND auth_id IS NOT NULL
      AND (recipients IS NOT NULL OR sender IS NOT NULL)
),
q AS (SELECT ts, messages FROM {queue}),
-- the trigger: queue samples where a sampler runs, else recipients per bucket
qs AS (
    SELECT ts, messages, median(messages) OVER w AS usual, count(*) OVER w AS history
    FROM q WINDOW w AS (ORDER BY ts RANGE BETWEEN {_iv(p.baseline_days * 86400)} PRECEDING
                        AND {_iv(0.001)} PRECEDING)
),
q_spikes AS (
    SELECT ts - {_iv(p.spike_pad_s)} AS s_from, ts AS s_to, ts AS t, 'queue-samples' AS via,
           messages AS size, usual
    FROM qs WHERE messages >= {p.queue_min_messages} AND history >= {p.spike_history_min}
      AND messages >= {p.queue_factor} * usual
),
b AS (
    SELECT time_bucket(INTERVAL '{bucket} seconds', ts) AS b, sum(r) AS r FROM m GROUP BY 1
),
-- every bucket since the server's log begins (quiet ones are part of the usual too)
grid AS (
    SELECT unnest(generate_series(
        (SELECT time_bucket(INTERVAL '{bucket} seconds', min(ts)) FROM {ev}),
        max(b), INTERVAL '{bucket} seconds')) AS b FROM b
),
bs AS (
    SELECT g.b, coalesce(b.r, 0) AS r, median(coalesce(b.r, 0)) OVER w AS usual,
           count(*) OVER w AS history
    FROM grid g LEFT JOIN b USING (b)
    WINDOW w AS (ORDER BY g.b ROWS BETWEEN {base_buckets} PRECEDING AND 1 PRECEDING)
),
r_spikes AS (
    SELECT b AS s_from, b + INTERVAL '{bucket} seconds' AS s_to, b AS t,
           'recipient-counts' AS via, r AS size, usual
    FROM bs WHERE r >= {p.spike_min_recipients} AND history >= {p.spike_history_min}
      AND r >= {p.spike_factor} * usual
      AND (SELECT count(*) FROM q) = 0
),
spikes0 AS (
    SELECT *, CASE WHEN t - lag(t) OVER (ORDER BY t) <= CASE via
                   WHEN 'queue-samples' THEN {_iv(p.spike_pad_s)}
                   ELSE INTERVAL '{bucket} seconds' END THEN 0 ELSE 1 END AS brk
    FROM (SELECT * FROM q_spikes UNION ALL SELECT * FROM r_spikes)
),
-- consecutive spikes are one: the account's usual is taken from before the first of them
spikes AS MATERIALIZED (
    SELECT *, min(s_from) OVER (PARTITION BY run) AS run_from FROM (
        SELECT *, sum(brk) OVER (ORDER BY t ROWS UNBOUNDED PRECEDING) AS run FROM spikes0)
),
cand AS (
    SELECT DISTINCT m.auth_id, s.t AS spike, s.via, s.size, s.usual, s.s_from, s.s_to,
           s.run_from
    FROM m JOIN spikes s ON m.ts >= s.s_from AND m.ts < s.s_to
    WHERE s.t >= {spike_from}
),
-- each candidate's busiest hour around its spike
rate AS (
    SELECT c.auth_id, c.spike, c.via, c.size, c.usual, c.run_from, m.ts,
           sum(m.r) OVER (PARTITION BY c.auth_id, c.spike ORDER BY m.ts RANGE BETWEEN
                          {_iv(3599.999)} PRECEDING AND CURRENT ROW) AS per_hour
    FROM cand c JOIN m ON m.auth_id = c.auth_id
      AND m.ts >= c.s_from - INTERVAL 1 HOUR AND m.ts < c.s_to + INTERVAL 1 HOUR
),
peak AS (
    SELECT auth_id, spike, any_value(via) AS via, any_value(size) AS size,
           any_value(usual) AS usual, any_value(run_from) AS run_from,
           arg_max(ts, per_hour) AS peak, max(per_hour) AS per_hour
    FROM rate GROUP BY auth_id, spike
),
-- one row per account: its strongest spike
best AS (
    SELECT * FROM peak QUALIFY row_number() OVER (PARTITION BY auth_id ORDER BY per_hour DESC,
                                                  spike) = 1
),
hour_rows AS (
    SELECT p.auth_id, m.ts, m.client_addr, m.r, {_network("m.client_addr")} AS net,
           {asn_col} AS asn
    FROM best p JOIN m ON m.auth_id = p.auth_id
      AND m.ts > p.peak - INTERVAL 1 HOUR AND m.ts <= p.peak
    {asn_join}
),
hour_stats AS (
    SELECT auth_id, min(ts) AS first, max(ts) AS last, count(*) AS messages,
           count(DISTINCT client_addr) AS sources, count(DISTINCT net) AS networks,
           count(DISTINCT asn) AS asns, mode(client_addr) AS top_source,
           list(DISTINCT net) AS nets
    FROM hour_rows GROUP BY auth_id
),
-- the account's usual: before the run of spikes (less the pad), so the attack's own start is
-- never part of it
history AS (
    SELECT b.auth_id, m.ts, m.r, {_network("m.client_addr")} AS net
    FROM best b JOIN m ON m.auth_id = b.auth_id
      AND m.ts >= b.run_from - {_iv(p.baseline_days * 86400)}
      AND m.ts < b.run_from - {_iv(p.spike_pad_s)}
),
baseline AS (
    SELECT auth_id, max(r) AS busiest_hour, list(DISTINCT net) AS nets FROM (
        SELECT auth_id, date_trunc('hour', ts) AS h, sum(r) AS r, any_value(net) AS net
        FROM history GROUP BY ALL
    ) GROUP BY auth_id
),
known_nets AS (SELECT DISTINCT auth_id, net FROM history),
new_nets AS (
    SELECT h.auth_id, count(DISTINCT h.net) AS new_networks
    FROM hour_rows h ANTI JOIN known_nets k ON h.auth_id = k.auth_id AND h.net = k.net
    GROUP BY h.auth_id
),
fails AS (
    SELECT s.auth_id, count(*) AS failures
    FROM hour_stats s JOIN {ev} e ON e.auth_id = s.auth_id AND NOT e.success
      AND e.ts >= s.first - {_iv(p.failure_window_s)} AND e.ts <= s.first
    GROUP BY s.auth_id
)
SELECT b.auth_id, b.spike, b.via, b.size::BIGINT AS size, b.usual::DOUBLE AS usual, b.peak,
       b.per_hour::BIGINT AS per_hour,
       s.first, s.last, s.messages, s.sources, s.networks, s.asns, s.top_source,
       coalesce(bl.busiest_hour, 0)::BIGINT AS baseline_hour, coalesce(n.new_networks, 0) AS new_networks,
       coalesce(f.failures, 0) AS failures_before
FROM best b JOIN hour_stats s USING (auth_id)
LEFT JOIN baseline bl USING (auth_id) LEFT JOIN new_nets n USING (auth_id)
LEFT JOIN fails f USING (auth_id)
"""


def _fid(auth_id: str, first: datetime) -> str:
    key = f"{MEASURE}|{KIND}|{auth_id}|{first.replace(minute=0, second=0, microsecond=0)}"
    return "smtp-acct-" + hashlib.sha256(key.encode()).hexdigest()[:24]


class CompromisedDetector:
    """``mamori detect smtp`` (accounts): AUTH IDs whose credentials send spam (M11)."""

    name = "smtp-compromised"
    measure = MEASURE
    Params = CompromisedParams

    def __init__(self, params: CompromisedParams | None = None, *, write: bool = True) -> None:
        self.params: CompromisedParams = params or CompromisedParams()
        self.write = write

    def _open(
        self,
        gov: Governance,
        box: Sandbox,
        start: datetime | None,
        end: datetime | None,
        actor: str,
    ) -> tuple[str, str, str | None]:
        p = self.params
        ev = gov.open(
            MEASURE,
            AUTH_EVENTS.name,
            ["ts", "client_addr", "auth_id", "sender", "success", "recipients"],
            actor,
            start=start,
            end=end,
            sandbox=box,
        )
        queue = gov.open(
            MEASURE, MAIL_QUEUE.name, ["ts", "messages"], actor, start=start, end=end, sandbox=box
        )
        asn = box.register("asn_ranges", load_asn_table(p.asn_table)) if p.asn_table else None
        return ev.name, queue.name, asn

    def run(self, gov: Governance, window: Window, *, actor: str) -> DetectorRun:
        p = self.params
        now = datetime.now(UTC)
        detected = now.replace(microsecond=now.microsecond // 1000 * 1000)
        look = (
            timedelta(days=p.baseline_days) + timedelta(seconds=p.spike_pad_s) + timedelta(hours=2)
        )
        start = window.since - look if window.since else None
        spike_from = (
            f"TIMESTAMPTZ '{(window.since or datetime(1970, 1, 1, tzinfo=UTC)).isoformat()}'"
        )
        box = gov.sandbox(p.memory_limit_mb, label="M11-smtp-compromised")
        try:
            ev, queue, asn = self._open(gov, box, start, window.until, actor)
            rows = box.sql(_sql(ev, queue, asn, p, spike_from)).to_arrow_table().to_pylist()
        finally:
            box.close()
        until = window.until or datetime.max.replace(tzinfo=UTC)
        found, volume_only, below = [], 0, 0
        for r in rows:
            if r["spike"] >= until:
                continue
            usual = max(int(r["baseline_hour"]), p.baseline_floor)
            if (
                r["per_hour"] < p.min_recipients_per_hour
                or r["per_hour"] < p.baseline_factor * usual
            ):
                below += 1
                continue
            signs = {
                "new_network": r["new_networks"] >= 1,
                "sources": r["sources"] >= p.min_sources,
                "networks": r["networks"] >= p.min_networks,
                "asns": r["asns"] >= p.min_asns,
                "failures_before_success": r["failures_before"] >= p.failures_before_success,
            }
            if p.require_evidence and not any(signs.values()):
                volume_only += 1
                continue
            found.append({**r, "signs": sorted(k for k, v in signs.items() if v)})
        findings = self._table(found, detected)
        if self.write and findings.num_rows:
            gov.write(MEASURE, FINDINGS.name, findings, actor, detail={"method": "smtp-auth"})
        return DetectorRun(
            findings=findings,
            summary={
                "window": window.as_json(),
                "findings": findings.num_rows,
                "candidates": len(rows),
                "below_volume": below,
                "held_back_volume_only": volume_only,
                "triggers": sorted({r["via"] for r in rows}),
            },
        )

    def _table(self, rows: list[dict[str, Any]], detected: datetime) -> pa.Table:
        p = self.params
        out = []
        for r in rows:
            usual = max(int(r["baseline_hour"]), p.baseline_floor)
            ratio = r["per_hour"] / usual
            score = min(1.0, 0.4 + 0.1 * min(ratio / p.baseline_factor, 3) + 0.1 * len(r["signs"]))
            out.append(
                {
                    "detected": detected,
                    "finding_id": _fid(r["auth_id"], r["first"]),
                    "kind": KIND,
                    "method": r["via"],
                    "ip": r["top_source"],
                    "port": None,
                    "protocol": "tcp",
                    "score": round(score, 4),
                    "first_seen": r["first"],
                    "last_seen": r["last"],
                    "measure": MEASURE,
                    "evidence": json.dumps(
                        {
                            "trigger": r["via"],
                            "spike_at": r["spike"].isoformat(),
                            "spike_size": int(r["size"]),
                            "spike_usual": None if r["usual"] is None else float(r["usual"]),
                            "recipients_per_hour": int(r["per_hour"]),
                            "baseline_busiest_hour": int(r["baseline_hour"]),
                            "messages_in_hour": int(r["messages"]),
                            "sources": int(r["sources"]),
                            "networks": int(r["networks"]),
                            "new_networks": int(r["new_networks"]),
                            "asns": int(r["asns"]),
                            "failures_before_success": int(r["failures_before"]),
                            "signs": r["signs"],
                        },
                        sort_keys=True,
                    ),
                    "auth_id": r["auth_id"],
                }
            )
        out.sort(key=lambda f: (f["first_seen"], f["auth_id"]))
        return pa.Table.from_pylist(out, schema=FINDINGS.arrow)
