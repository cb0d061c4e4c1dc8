"""Windows of days to weeks: per-day aggregates of the oriented flows (dataset ``flow_days``).

Evidence for C&C discovery accumulates over days — a bot's contact with a listed seed and with
its next, unlisted server need not fall on the same day — but re-reading and re-orienting every
sampled record of a month on each run does not fit. So each complete UTC day is summarised once,
under M2, into one row per (day, internal host, endpoint, port, protocol, direction, exchange or
probe, server side) with its records, packets, bytes, rate-scaled records, sampling rates and
first/last times; a run over a long window reads those rows for its older days and the raw
records only for the recent part (``raw_days``) and the partial days at its edges.

What an aggregate row keeps is what the correlation and learned methods count: distinct hosts
per endpoint, hosts' fan-out, exchange versus probe, directions, volumes. What it loses is the
records' own times, so periodicity (the beacon pairs) is judged on the raw part only
(:meth:`FlowView.timing`), and ``count(*)`` over the view counts an aggregate row once.

The aggregates are communications data: declared in :mod:`mamori.schemas` (``flow_days``),
read and written only by M2 through governance grants, kept ``retention.flow_days`` days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
from pydantic import Field

from mamori.detect.base import DetectorParams
from mamori.detect.flowview import FlowView, internal_nets, open_oriented
from mamori.governance import Governance, Sandbox

__all__ = ["FlowDaysParams", "aggregate_days", "open_window"]

DAY = timedelta(days=1)


class FlowDaysParams(DetectorParams):
    """``[detect.c2.days]``: when a window is read as per-day aggregates."""

    #: windows at least this long read their older complete days as aggregates
    min_window_days: float = Field(default=2.0, gt=0)
    #: the most recent complete days stay raw (beacon timing, freshest evidence)
    raw_days: int = Field(default=1, ge=0)
    #: build the aggregates of complete days that have none yet before reading them
    build_missing: bool = True


def _floor_day(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


def _ceil_day(t: datetime) -> datetime:
    f = _floor_day(t)
    return f if f == t else f + DAY


_AGG_SQL = """
    SELECT CAST(to_timestamp({day}) AS TIMESTAMPTZ) AS day, host, ext,
           CAST(eport AS USMALLINT) AS eport, CAST(proto AS UTINYINT) AS proto,
           outbound, est, server_side,
           CAST(count(*) AS UINTEGER) AS records,
           CAST(sum(packets) AS UBIGINT) AS packets, CAST(sum(bytes) AS UBIGINT) AS bytes,
           CAST(sum(coalesce(rate, 0)) AS DOUBLE) AS est_records,
           CAST(min(rate) AS UINTEGER) AS rate_min, CAST(max(rate) AS UINTEGER) AS rate_max,
           CAST(to_timestamp(min(ts)) AS TIMESTAMPTZ) AS first_seen,
           CAST(to_timestamp(max(te)) AS TIMESTAMPTZ) AS last_seen
    FROM {view}
    GROUP BY ALL
"""


def _done_days(gov: Governance, actor: str, box: Sandbox, d0: datetime, d1: datetime) -> set[int]:
    grant = gov.open(
        "M2",
        "flow_days",
        ["day"],
        actor,
        justification="which days are already aggregated",
        start=d0,
        end=d1,
        sandbox=box,
    )
    rows = box.sql(f"SELECT DISTINCT CAST(epoch(day) AS BIGINT) FROM {grant.name}").fetchall()
    box.execute(f"DROP TABLE IF EXISTS {grant.name}")
    return {int(r[0]) for r in rows}


def aggregate_days(
    gov: Governance,
    actor: str,
    *,
    since: datetime,
    until: datetime,
    memory_limit_mb: int | None = None,
    now: datetime | None = None,
) -> list[datetime]:
    """Aggregate every complete UTC day of [since, until) that has no aggregate yet (and ended
    before ``now``: a day still receiving records is not complete). Returns the days written."""
    d0, d1 = _ceil_day(since), _floor_day(min(until, now or datetime.now(UTC)))
    if d1 <= d0:
        return []
    written: list[datetime] = []
    box = gov.sandbox(memory_limit_mb, label="M2-flow-days")
    try:
        done = _done_days(gov, actor, box, d0, d1)
        day = d0
        while day < d1:
            if int(day.timestamp()) not in done:
                view = open_oriented(
                    gov, actor, since=day, until=day + DAY, purpose="per-day aggregates for "
                    "C&C discovery", sandbox=box,
                )  # fmt: skip
                try:
                    sql = _AGG_SQL.format(day=int(day.timestamp()), view=view.name)
                    table: pa.Table = view.sql(sql).to_arrow_table()
                finally:
                    view.close()
                if table.num_rows:
                    gov.write(
                        "M2",
                        "flow_days",
                        table,
                        actor,
                        justification="per-day aggregates for C&C discovery",
                        detail={"day": day.date().isoformat()},
                    )
                    written.append(day)
            day += DAY
    finally:
        box.close()
    return written


_VIEW_SQL = """
    SELECT host, ext, CAST(eport AS INTEGER) AS eport, CAST(NULL AS INTEGER) AS hport,
           CAST(proto AS SMALLINT) AS proto, outbound,
           epoch(first_seen) AS ts, epoch(last_seen) AS te,
           CAST(packets AS DOUBLE) AS packets, CAST(bytes AS DOUBLE) AS bytes,
           CASE WHEN records > 0 AND est_records > 0 THEN est_records / records END AS rate,
           est, server_side
    FROM {grant}
    WHERE day >= TIMESTAMPTZ '{d0}' AND day < TIMESTAMPTZ '{d1}'
"""


def open_window(
    gov: Governance,
    actor: str,
    *,
    since: datetime | None,
    until: datetime | None,
    sandbox: Sandbox,
    params: FlowDaysParams | None = None,
) -> FlowView:
    """The oriented flows of [since, until), with older complete days as per-day aggregates
    when the window is long enough (see module doc); else :func:`open_oriented`."""
    p = params or FlowDaysParams()
    if since is None or until is None or until - since < timedelta(days=p.min_window_days):
        return open_oriented(gov, actor, since=since, until=until, sandbox=sandbox)
    d0 = _ceil_day(since)
    d1 = _floor_day(until) - p.raw_days * DAY
    if d1 <= d0:
        return open_oriented(gov, actor, since=since, until=until, sandbox=sandbox)
    if p.build_missing:
        aggregate_days(gov, actor, since=d0, until=d1)
    grant = gov.open(
        "M2",
        "flow_days",
        None,
        actor,
        justification="C&C discovery over a window of days",
        start=d0,
        end=d1,
        sandbox=sandbox,
    )
    n_days = sandbox.sql(
        f"SELECT count(DISTINCT day) FROM {grant.name} WHERE day >= TIMESTAMPTZ "
        f"'{d0.isoformat()}' AND day < TIMESTAMPTZ '{d1.isoformat()}'"
    ).fetchall()[0][0]
    name = f"{grant.name}_window"
    sandbox.execute(
        f"CREATE TABLE {name} AS "
        + _VIEW_SQL.format(grant=grant.name, d0=d0.isoformat(), d1=d1.isoformat())
    )
    sandbox.execute(f"DROP TABLE {grant.name}")
    tables = [name]
    raw_name = f"{name}_raw"
    unknown = 0
    audit_seq = grant.audit_seq
    raw_parts = [(since, d0), (d1, until)]
    first = True
    for a, b in raw_parts:
        if b <= a:
            continue
        part = open_oriented(gov, actor, since=a, until=b, sandbox=sandbox)
        unknown += part.unknown_rate
        audit_seq = max(audit_seq, part.audit_seq)
        if first:
            sandbox.execute(f"CREATE TABLE {raw_name} AS SELECT * FROM {part.name}")
            first = False
        else:
            sandbox.execute(f"INSERT INTO {raw_name} SELECT * FROM {part.name}")
        part.close()
    if first:  # no raw part: an empty table of the same shape
        sandbox.execute(f"CREATE TABLE {raw_name} AS SELECT * FROM {name} LIMIT 0")
    sandbox.execute(f"INSERT INTO {name} SELECT * FROM {raw_name}")
    tables.append(raw_name)
    nets, source = internal_nets(gov)
    return FlowView(
        name=name,
        sandbox=sandbox,
        nets=nets,
        plan_source=source,
        audit_seq=audit_seq,
        tables=tables,
        unknown_rate=unknown,
        raw_name=raw_name,
        aggregated_days=int(n_days),
    )
