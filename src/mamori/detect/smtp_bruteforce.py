"""SMTP AUTH brute force (measure M12): which addresses are guessing passwords.

Read through governance under M12 (address, time, AUTH ID, success, service, attempts — M12 has
no sender and no recipient counts), and one SQL pass in the detector's sandbox finds four kinds:

``burst``
    at least ``max_failures`` failures from one address within ``find_time_s`` (fail2ban's
    ``maxretry``/``findtime``, 5 in 10 minutes, to start from);
``enumeration``
    at least ``enum_min_names`` different AUTH IDs failing from one address within
    ``enum_window_s`` (trying user names, not passwords);
``distributed``
    one AUTH ID failing from at least ``dist_min_sources`` addresses within ``dist_window_s``
    (with ``dist_min_failures`` failures in all): each of those addresses, except any that also
    logged in as that ID (its owner mistyping);
``slow``
    few failures an hour from one address over days: ``slow_min_failures`` failures spread over
    ``slow_min_hours`` distinct hours within ``slow_window_hours``.

Failures from one address are grouped into attacks (a quiet spell of ``episode_gap_s`` starts a
new one); an attack is a finding (kind ``smtp-brute-force``, the method the rule that fired
first) when a rule fired inside the window asked about. Two patterns of an account's owner are
held back, and counted in the summary: a rule's hit is its users' own, not an attack, when every
AUTH ID whose failures it counted logs in from that address, each after at most
``typo_max_failures`` failures — mistyped passwords, a phone with an old password, several users
behind one NAT address.

Findings name the address and the attack's span; the evidence holds counts (failures, AUTH IDs
tried, the median interval) and the rules' times — never an AUTH ID.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pydantic import Field

from mamori.detect.base import DetectorParams, DetectorRun, Window
from mamori.governance import Governance
from mamori.schemas import AUTH_EVENTS, FINDINGS

__all__ = ["KIND", "BruteForceDetector", "BruteForceParams"]

MEASURE = "M12"
KIND = "smtp-brute-force"
RULES = ("burst", "enumeration", "distributed", "slow")


class BruteForceParams(DetectorParams):
    """``[detect.smtp-brute-force]``: SMTP AUTH brute force (M12)."""

    max_failures: int = Field(
        default=5, ge=1, description="failures from one address within find_time_s (maxretry)"
    )
    find_time_s: float = Field(default=600.0, gt=0, description="fail2ban's findtime")
    episode_gap_s: float = Field(
        default=3600.0, gt=0, description="an address quiet this long starts a new attack"
    )
    typo_max_failures: int = Field(
        default=10,
        ge=0,
        description="a hit whose every AUTH ID logs in from the same address, each after at most "
        "this many failures, is its users mistyping (0: never held back)",
    )
    enum_min_names: int = Field(
        default=5, ge=2, description="AUTH IDs failing from one address within enum_window_s"
    )
    enum_window_s: float = Field(default=3600.0, gt=0)
    dist_min_sources: int = Field(
        default=5, ge=2, description="addresses failing on one AUTH ID within dist_window_s"
    )
    dist_min_failures: int = Field(
        default=10, ge=1, description="…with at least this many failures on it in that time"
    )
    dist_window_s: float = Field(default=3600.0, gt=0)
    slow_min_failures: int = Field(
        default=10, ge=1, description="slow: failures from one address within slow_window_hours"
    )
    slow_min_hours: int = Field(
        default=6, ge=1, description="slow: …spread over at least this many distinct hours"
    )
    slow_window_hours: float = Field(
        default=72.0, gt=0, le=24 * 30, description="slow: how far back (auth_events' retention)"
    )
    rules: tuple[str, ...] = Field(
        default=RULES,
        min_length=1,
        description="rules to run: burst, enumeration, distributed, slow",
    )
    services: tuple[str, ...] = Field(
        default=("smtp", "submission", "imap", "pop3", "managesieve", "auth"),
        min_length=1,
        description="services whose failures count (drop 'auth' when Dovecot's auth_verbose "
        "lines and Postfix's lines are both loaded: each SMTP failure is logged twice)",
    )
    memory_limit_mb: int | None = Field(default=None, ge=64)

    def model_post_init(self, _: Any) -> None:
        unknown = sorted(set(self.rules) - set(RULES))
        if unknown:
            raise ValueError(f"unknown rules {unknown}; known: {', '.join(RULES)}")


def _fid(ip: str, first: datetime, slow: bool) -> str:
    key = f"{MEASURE}|{KIND}|{'slow' if slow else 'fast'}|{ip}|{first.isoformat()}"
    return "smtp-bf-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _iv(seconds: float) -> str:
    """A SQL interval literal (whole milliseconds)."""
    return f"INTERVAL '{round(seconds * 1000)} milliseconds'"


def _q(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _sql(ev: str, p: BruteForceParams, slow_from: str) -> str:
    def on(rule: str) -> str:
        return "TRUE" if rule in p.rules else "FALSE"

    return f"""
WITH f AS (
    SELECT ts, client_addr AS ip, auth_id AS name, coalesce(attempts, 1)::BIGINT AS n
    FROM {ev} WHERE NOT success AND coalesce(service, 'smtp') IN ({_q(p.services)})
),
ok AS (SELECT DISTINCT client_addr AS ip, auth_id AS name, ts FROM {ev} WHERE success),
-- AUTH IDs that log in from an address: its users (behind a NAT address, several)
users AS (SELECT DISTINCT ip, name FROM ok WHERE name IS NOT NULL),
gaps AS (
    SELECT *, CASE WHEN ts - lag(ts) OVER w IS NULL OR ts - lag(ts) OVER w
                   > {_iv(p.episode_gap_s)} THEN 1 ELSE 0 END AS brk,
           epoch(ts) - epoch(lag(ts) OVER w) AS gap_s
    FROM f WINDOW w AS (PARTITION BY ip ORDER BY ts)
),
fe AS MATERIALIZED (
    SELECT *, sum(brk) OVER (PARTITION BY ip ORDER BY ts ROWS UNBOUNDED PRECEDING) AS ep
    FROM gaps
),
episodes AS MATERIALIZED (
    SELECT ip, ep, min(ts) AS first, max(ts) AS last, sum(n) AS failures,
           count(DISTINCT name) AS names, any_value(name) AS one_name, count(*) AS lines,
           median(gap_s) FILTER (WHERE brk = 0) AS median_interval_s
    FROM fe GROUP BY ip, ep
),
-- each rule's hits: the failure (at) that puts the address's attack in, and when it fired (t)
burst_raw AS (
    SELECT ip, ts AS t FROM (
        SELECT ip, ts, sum(n) OVER (PARTITION BY ip ORDER BY ts RANGE BETWEEN
               {_iv(p.find_time_s)} PRECEDING AND CURRENT ROW) AS win
        FROM fe) WHERE win >= {p.max_failures} AND {on("burst")}
),
first_names AS (
    SELECT ip, ep, name, min(ts) AS t FROM fe WHERE name IS NOT NULL GROUP BY ip, ep, name
),
enum_raw AS (
    SELECT ip, t FROM (
        SELECT ip, t, count(*) OVER (PARTITION BY ip, ep ORDER BY t RANGE BETWEEN
               {_iv(p.enum_window_s)} PRECEDING AND CURRENT ROW) AS k
        FROM first_names) WHERE k >= {p.enum_min_names} AND {on("enumeration")}
),
-- the failures a hit counted, per AUTH ID: all by users of the address, each a few times only
-- (a mistyped password, an old one on a phone, several users behind one NAT address), and the
-- hit is the users', not an attack
hit_names AS (
    SELECT h.ip, h.t, 'burst' AS rule, f.name, sum(f.n) AS n
    FROM burst_raw h JOIN fe f ON f.ip = h.ip AND f.ts <= h.t
     AND f.ts >= h.t - {_iv(p.find_time_s)}
    GROUP BY h.ip, h.t, f.name
    UNION ALL
    SELECT h.ip, h.t, 'enumeration' AS rule, f.name, sum(f.n) AS n
    FROM enum_raw h JOIN fe f ON f.ip = h.ip AND f.ts <= h.t
     AND f.ts >= h.t - {_iv(p.enum_window_s)}
    GROUP BY h.ip, h.t, f.name
),
hits_owned AS (
    SELECT hn.ip, hn.t, hn.rule,
           bool_and(hn.name IS NOT NULL AND hn.n <= {p.typo_max_failures}
                    AND u.name IS NOT NULL) AS owned
    FROM hit_names hn LEFT JOIN users u ON u.ip = hn.ip AND u.name = hn.name
    GROUP BY hn.ip, hn.t, hn.rule
),
burst AS (
    SELECT ip, t AS at, t, rule FROM hits_owned WHERE rule = 'burst' AND NOT owned
),
enumeration AS (
    SELECT ip, t AS at, t, rule FROM hits_owned WHERE rule = 'enumeration' AND NOT owned
),
per_name AS (
    SELECT name, ip, min(ts) AS t, sum(n) AS n FROM f WHERE name IS NOT NULL
    -- the name's owner, mistyping from where it also logs in, is not an attacker
    AND NOT EXISTS (SELECT 1 FROM ok WHERE ok.ip = f.ip AND ok.name = f.name)
    GROUP BY name, ip
),
per_name_win AS (
    SELECT *, count(*) OVER w AS sources, sum(n) OVER w AS fails FROM per_name
    WINDOW w AS (PARTITION BY name ORDER BY t RANGE BETWEEN
                 {_iv(p.dist_window_s)} PRECEDING AND CURRENT ROW)
),
distributed AS (
    SELECT ip, t AS at, greatest(t, crossed) AS t, 'distributed' AS rule FROM (
        SELECT ip, t, min(t) FILTER (WHERE sources >= {p.dist_min_sources}
                                      AND fails >= {p.dist_min_failures}) OVER (
               PARTITION BY name ORDER BY t RANGE BETWEEN CURRENT ROW AND
               {_iv(p.dist_window_s)} FOLLOWING) AS crossed
        FROM per_name_win)
    WHERE crossed IS NOT NULL AND {on("distributed")}
),
rule_times AS (
    SELECT e.ip, e.ep, h.rule, min(h.t) AS t FROM (
        SELECT * FROM burst UNION ALL SELECT * FROM enumeration UNION ALL SELECT * FROM distributed
    ) h JOIN episodes e ON h.ip = e.ip AND h.at BETWEEN e.first AND e.last
    GROUP BY e.ip, e.ep, h.rule
),
-- attacks whose every hit was its users' (counted in the summary)
typo AS (
    SELECT DISTINCT e.ip, e.ep FROM hits_owned h JOIN episodes e
      ON h.ip = e.ip AND h.t BETWEEN e.first AND e.last
    WHERE h.owned AND NOT EXISTS (
        SELECT 1 FROM rule_times r WHERE r.ip = e.ip AND r.ep = e.ep)
),
fast AS (
    SELECT e.ip, e.first, e.last, e.failures, e.names, e.lines, e.median_interval_s,
           arg_min(r.rule, r.t) AS method, min(r.t) AS trigger,
           list({{'rule': r.rule, 't': r.t}} ORDER BY r.t) AS rules, FALSE AS slow,
           FALSE AS held
    FROM rule_times r JOIN episodes e USING (ip, ep)
    GROUP BY e.ip, e.ep, e.first, e.last, e.failures, e.names, e.lines, e.median_interval_s
),
held_fast AS (
    SELECT e.ip, e.first, e.last, e.failures, e.names, e.lines, e.median_interval_s,
           'burst' AS method, e.last AS trigger, [] AS rules, FALSE AS slow, TRUE AS held
    FROM typo JOIN episodes e USING (ip, ep)
),
sl0 AS (
    SELECT ip, ts, name, n,
           CASE WHEN date_trunc('hour', ts) IS DISTINCT FROM date_trunc('hour', lag(ts) OVER (
                PARTITION BY ip ORDER BY ts)) THEN 1 ELSE 0 END AS new_hour
    FROM f WHERE ts >= {slow_from} AND {on("slow")}
),
sl AS (
    SELECT *, sum(n) OVER w AS cum, sum(new_hour) OVER w AS hours FROM sl0
    WINDOW w AS (PARTITION BY ip ORDER BY ts ROWS UNBOUNDED PRECEDING)
),
slow_agg AS (
    SELECT ip, min(ts) AS first, max(ts) AS last, sum(n) AS failures,
           count(DISTINCT name) AS names, count(*) AS lines, any_value(name) AS one_name,
           min(ts) FILTER (WHERE cum >= {p.slow_min_failures} AND hours >= {p.slow_min_hours})
               AS trigger
    FROM sl GROUP BY ip HAVING trigger IS NOT NULL
),
slow_owned AS (
    SELECT sl.ip, bool_and(sl.name IS NOT NULL AND u.name IS NOT NULL) AS owned
    FROM sl LEFT JOIN users u ON u.ip = sl.ip AND u.name = sl.name GROUP BY sl.ip
),
slow AS (
    -- only AUTH IDs that log in from this address: devices with an old password
    SELECT s.*, 'slow' AS method, TRUE AS slow, o.owned AS held
    FROM slow_agg s JOIN slow_owned o USING (ip) WHERE s.ip NOT IN (SELECT ip FROM fast)
)
SELECT ip, first, last, failures::BIGINT AS failures, names, lines, median_interval_s, method,
       trigger, rules, slow, held FROM fast
UNION ALL BY NAME
SELECT ip, first, last, failures::BIGINT AS failures, names, lines, median_interval_s, method,
       trigger, rules, slow, held FROM held_fast
UNION ALL BY NAME
SELECT ip, first, last, failures::BIGINT AS failures, names, lines,
       NULL::DOUBLE AS median_interval_s, method,
       trigger, [{{'rule': 'slow', 't': trigger}}] AS rules, slow, held FROM slow
"""


class BruteForceDetector:
    """``mamori detect smtp`` (brute force): addresses guessing SMTP/IMAP passwords (M12)."""

    name = "smtp-brute-force"
    measure = MEASURE
    Params = BruteForceParams

    def __init__(self, params: BruteForceParams | None = None, *, write: bool = True) -> None:
        self.params: BruteForceParams = params or BruteForceParams()
        self.write = write

    def lookback(self) -> timedelta:
        """How far before a window's start the rules need to see."""
        p = self.params
        fast = max(p.find_time_s, p.enum_window_s, p.dist_window_s, p.episode_gap_s)
        slow = p.slow_window_hours * 3600 if "slow" in p.rules else 0.0
        return timedelta(seconds=max(fast, slow))

    def run(self, gov: Governance, window: Window, *, actor: str) -> DetectorRun:
        p = self.params
        now = datetime.now(UTC)
        detected = now.replace(microsecond=now.microsecond // 1000 * 1000)
        start = window.since - self.lookback() if window.since else None
        end = window.until or now
        slow_from = f"TIMESTAMPTZ '{(end - timedelta(hours=p.slow_window_hours)).isoformat()}'"
        box = gov.sandbox(p.memory_limit_mb, label="M12-smtp-brute-force")
        try:
            ev = gov.open(
                MEASURE,
                AUTH_EVENTS.name,
                ["ts", "client_addr", "auth_id", "success", "service", "attempts"],
                actor,
                start=start,
                end=window.until,
                sandbox=box,
            )
            rows = box.sql(_sql(ev.name, p, slow_from)).to_arrow_table().to_pylist()
        finally:
            box.close()
        since = window.since or datetime.min.replace(tzinfo=UTC)
        until = window.until or datetime.max.replace(tzinfo=UTC)
        found, held = [], 0
        for r in rows:
            if not since <= r["trigger"] < until:
                continue  # fired before the window (an earlier run's) or after it
            if r["held"]:
                held += 1
                continue
            found.append(r)
        findings = self._table(found, detected)
        if self.write and findings.num_rows:
            gov.write(MEASURE, FINDINGS.name, findings, actor, detail={"method": "smtp-auth"})
        methods: dict[str, int] = {}
        for r in found:
            methods[r["method"]] = methods.get(r["method"], 0) + 1
        summary = {
            "window": window.as_json(),
            "findings": findings.num_rows,
            "by_method": methods,
            "held_back_as_owner": held,
            "rules": list(p.rules),
        }
        return DetectorRun(findings=findings, summary=summary)

    def _table(self, rows: list[dict[str, Any]], detected: datetime) -> pa.Table:
        p = self.params
        out = []
        for r in rows:
            # repeated failures make a mistake less likely; several rules more so
            rules = {x["rule"]: x["t"] for x in r["rules"]}
            strength = r["failures"] / max(p.max_failures, 1)
            score = min(1.0, 0.5 + 0.1 * min(strength, 3) + 0.1 * (len(rules) - 1))
            out.append(
                {
                    "detected": detected,
                    "finding_id": _fid(r["ip"], r["first"], r["slow"]),
                    "kind": KIND,
                    "method": r["method"],
                    "ip": r["ip"],
                    "port": None,
                    "protocol": "tcp",
                    "score": round(score, 4),
                    "first_seen": r["first"],
                    "last_seen": r["last"],
                    "measure": MEASURE,
                    "evidence": json.dumps(
                        {
                            "failures": int(r["failures"]),
                            "auth_ids_tried": int(r["names"]),
                            "lines": int(r["lines"]),
                            "median_interval_s": (
                                None
                                if r["median_interval_s"] is None
                                else round(float(r["median_interval_s"]), 1)
                            ),
                            "rules": {k: v.isoformat() for k, v in sorted(rules.items())},
                            "trigger": r["trigger"].isoformat(),
                            "duration_s": round((r["last"] - r["first"]).total_seconds(), 1),
                        },
                        sort_keys=True,
                    ),
                    "auth_id": None,
                }
            )
        out.sort(key=lambda f: (f["first_seen"], f["ip"]))
        return pa.Table.from_pylist(out, schema=FINDINGS.arrow)
