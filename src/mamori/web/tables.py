"""Tables for real work: server-side paging, sorting, column filters, free-text and prefix/CIDR
search, a time range and CSV export, the same way on every list of the console.

A page declares its table once (:class:`TableSpec`: columns, which ones filter how, the default
order); :meth:`TableQuery.parse` reads the query string (never trusting it: unknown columns,
bad numbers and bad dates fall back to defaults or are reported), and :func:`page` applies it to
an Arrow table with compute kernels — user input is compared with values, never pasted into SQL —
and returns only the rows of the page as Python objects. ``_table.html`` draws the controls.

Query parameters: ``page``, ``per``, ``sort`` (a column; ``-col`` for descending), ``q``
(free text over the searchable columns), ``net`` (an address, a CIDR prefix like
``10.16.0.0/24`` or the start of an address like ``10.16.``), ``since``/``until`` (dates or
date-times in the ISP's time zone), ``f.<column>`` (a column filter), ``format=csv``.
"""

from __future__ import annotations

import io
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = [
    "Col",
    "TablePage",
    "TableQuery",
    "TableSpec",
    "csv_bytes",
    "matching",
    "page",
]

PER_PAGE = (25, 50, 100, 200)
MAX_CSV_ROWS = 1_000_000

Filter = Literal["choice", "text"] | None


@dataclass(frozen=True)
class Col:
    key: str
    label: str
    sortable: bool = True
    filter: Filter = None


@dataclass(frozen=True)
class TableSpec:
    """One table of the console: its columns, how it is searched and its default order."""

    name: str
    columns: tuple[Col, ...]
    sort: str
    descending: bool = True
    search: tuple[str, ...] = ()  # columns the free text is looked for in
    time: str | None = None  # the column the time range applies to
    net: str | None = None  # the address column the prefix/CIDR filter applies to
    per_page: int = 50
    csv_columns: tuple[str, ...] | None = None  # default: the declared columns

    def col(self, key: str) -> Col | None:
        return next((c for c in self.columns if c.key == key), None)


@dataclass
class TableQuery:
    spec: TableSpec
    page: int = 1
    per: int = 50
    sort: str = ""
    descending: bool = True
    q: str = ""
    net: str = ""
    since: str = ""
    until: str = ""
    filters: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    zone: str = "UTC"

    @classmethod
    def parse(cls, spec: TableSpec, params: Mapping[str, str], zone: str = "UTC") -> TableQuery:
        query = cls(spec, per=spec.per_page, sort=spec.sort, descending=spec.descending, zone=zone)
        try:
            query.page = max(1, int(params.get("page", "1")))
        except ValueError:
            query.page = 1
        try:
            per = int(params.get("per", str(spec.per_page)))
            query.per = per if per in PER_PAGE else spec.per_page
        except ValueError:
            pass
        sort = params.get("sort", "")
        key = sort.lstrip("-")
        col = spec.col(key)
        if col is not None and col.sortable:
            query.sort, query.descending = key, sort.startswith("-")
        query.q = params.get("q", "").strip()[:128]
        if spec.net:
            query.net = params.get("net", "").strip()[:64]
        if spec.time:
            query.since = params.get("since", "").strip()[:32]
            query.until = params.get("until", "").strip()[:32]
        for c in spec.columns:
            v = params.get(f"f.{c.key}", "").strip()[:128]
            if c.filter and v:
                query.filters[c.key] = v
        return query

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string's parameters (``changes`` applied), defaults left out."""
        d: dict[str, str] = {}
        sort = changes.pop("sort", None)
        page = changes.pop("page", self.page)
        if sort is not None:
            d["sort"] = sort
        elif self.sort != self.spec.sort or self.descending != self.spec.descending:
            d["sort"] = ("-" if self.descending else "") + self.sort
        for k in ("q", "net", "since", "until"):
            v = changes.pop(k, getattr(self, k))
            if v:
                d[k] = v
        for k, v in self.filters.items():
            d[f"f.{k}"] = v
        if self.per != self.spec.per_page:
            d["per"] = str(self.per)
        if page != 1:
            d["page"] = str(page)
        d.update({k: str(v) for k, v in changes.items() if v is not None})
        return d

    def link(self, **changes: Any) -> str:
        """``?…`` for a link to this table with ``changes`` (e.g. ``page=2``)."""
        p = self.params(**changes)
        return "?" + urlencode(p) if p else "?"

    def sort_link(self, key: str) -> str:
        desc = not self.descending if key == self.sort else True
        return self.link(sort=("-" if desc else "") + key, page=1)

    def csv_link(self) -> str:
        return self.link(format="csv", page=1)

    def _time(self, text: str, end: bool) -> datetime | None:
        if not text:
            return None
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            self.errors.append(f"not a date: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)")
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=ZoneInfo(self.zone))
        if end and len(text) == 10:  # a date: up to the end of that day
            t = t.replace(hour=23, minute=59, second=59, microsecond=999999)
        return t

    @property
    def range(self) -> tuple[datetime | None, datetime | None]:
        return self._time(self.since, False), self._time(self.until, True)


@dataclass
class TablePage:
    query: TableQuery
    rows: list[dict[str, Any]]
    total: int  # rows before filtering
    matched: int  # rows after filtering
    choices: dict[str, list[str]]

    @property
    def spec(self) -> TableSpec:
        return self.query.spec

    @property
    def pages(self) -> int:
        return max(1, -(-self.matched // self.query.per))

    @property
    def first(self) -> int:
        return 0 if not self.matched else (self.query.page - 1) * self.query.per + 1

    @property
    def last(self) -> int:
        return min(self.matched, self.query.page * self.query.per)

    def page_links(self) -> list[tuple[int | None, str]]:
        """(page number or None for a gap, link) around the current page."""
        n, cur = self.pages, self.query.page
        keep = sorted(
            {1, 2, n - 1, n, cur - 2, cur - 1, cur, cur + 1, cur + 2} & set(range(1, n + 1))
        )
        out: list[tuple[int | None, str]] = []
        prev = 0
        for p in keep:
            if p - prev > 1:
                out.append((None, ""))
            out.append((p, self.query.link(page=p)))
            prev = p
        return out


def _as_text(col: pa.ChunkedArray | pa.Array) -> Any:
    return (
        col
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
        else pc.cast(col, pa.string())
    )


def _net_mask(column: pa.ChunkedArray, text: str) -> tuple[Any, str | None]:
    """Rows whose address is in ``text``: an address, a CIDR prefix, or the start of one."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        if all(ch in "0123456789abcdefABCDEF.:" for ch in text):
            # the start of an address, as typed ("10.16.", "2001:db8:")
            return pc.fill_null(pc.starts_with(_as_text(column), text.lower()), False), None
        return None, f"not an address or prefix: {text!r}"
    if network.version == 4:
        return _in_v4(column, network), None
    # IPv6: compare each distinct address once (far fewer than rows), then select by value
    uniques = pc.unique(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    inside = []
    for v in uniques.to_pylist():
        if v is None or ":" not in str(v):
            continue
        try:
            if ipaddress.ip_address(str(v).split("/")[0]) in network:
                inside.append(v)
        except ValueError:
            continue
    return pc.is_in(column, value_set=pa.array(inside, uniques.type)), None


_V4 = r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$"


def _in_v4(column: pa.ChunkedArray | pa.Array, network: ipaddress.IPv4Network) -> Any:
    """Rows whose dotted-quad address lies in ``network`` — in NumPy, not address by address."""
    text = _as_text(column)
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    ok = pc.fill_null(pc.match_substring_regex(text, _V4), False)
    quads = pc.if_else(ok, text, "0.0.0.0")  # noqa: S104 - a filler for non-addresses, masked by ok
    parts = pc.list_flatten(pc.split_pattern(quads, ".")).cast(pa.uint32())
    octets = parts.to_numpy(zero_copy_only=False).reshape(-1, 4).astype(np.uint64)
    value = (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]
    mask = int(network.netmask)
    hit = (value & mask) == int(network.network_address)
    return pc.and_(ok, pa.array(hit))


def matching(table: pa.Table, query: TableQuery) -> pa.Table:
    """``table`` with the query's filters applied (all of them)."""
    spec = query.spec
    masks: list[Any] = []
    for key, value in query.filters.items():
        col = spec.col(key)
        if col is None or key not in table.column_names:
            continue
        column = table.column(key)
        if col.filter == "choice":
            masks.append(pc.equal(_as_text(column), value))
        else:
            masks.append(pc.match_substring(_as_text(column), value, ignore_case=True))
    if query.q and spec.search:
        found = None
        for key in spec.search:
            if key not in table.column_names:
                continue
            hit = pc.fill_null(
                pc.match_substring(_as_text(table.column(key)), query.q, ignore_case=True), False
            )
            found = hit if found is None else pc.or_(found, hit)
        if found is not None:
            masks.append(found)
    if query.net and spec.net and spec.net in table.column_names:
        mask, error = _net_mask(table.column(spec.net), query.net)
        if error:
            query.errors.append(error)
        elif mask is not None:
            masks.append(mask)
    if spec.time and spec.time in table.column_names:
        since, until = query.range
        column = table.column(spec.time)
        if since is not None:
            masks.append(pc.greater_equal(column, pa.scalar(since, column.type)))
        if until is not None:
            masks.append(pc.less_equal(column, pa.scalar(until, column.type)))
    if not masks:
        return table
    mask = masks[0]
    for m in masks[1:]:
        mask = pc.and_kleene(mask, m)
    return table.filter(pc.fill_null(mask, False))


def _choices(table: pa.Table, spec: TableSpec) -> dict[str, list[str]]:
    out = {}
    for c in spec.columns:
        if c.filter == "choice" and c.key in table.column_names:
            values = pc.unique(_as_text(table.column(c.key))).to_pylist()
            out[c.key] = sorted(str(v) for v in values if v is not None)
    return out


def page(table: pa.Table, query: TableQuery) -> TablePage:
    """The rows of the query's page, and what the controls need."""
    spec = query.spec
    choices = _choices(table, spec)
    total = table.num_rows
    t = matching(table, query)
    if query.sort in t.column_names and t.num_rows:
        t = t.sort_by([(query.sort, "descending" if query.descending else "ascending")])
    pages = max(1, -(-t.num_rows // query.per))
    query.page = min(query.page, pages)
    rows = t.slice((query.page - 1) * query.per, query.per).to_pylist()
    return TablePage(query, rows, total, t.num_rows, choices)


def csv_bytes(table: pa.Table, query: TableQuery) -> bytes:
    """Every row that matches the query (in its order), as CSV with a header."""
    spec = query.spec
    t = matching(table, query)
    if query.sort in t.column_names and t.num_rows:
        t = t.sort_by([(query.sort, "descending" if query.descending else "ascending")])
    cols = [
        c for c in (spec.csv_columns or tuple(c.key for c in spec.columns)) if c in t.column_names
    ]
    t = t.select(cols).slice(0, MAX_CSV_ROWS)
    buf = io.BytesIO()
    buf.write((",".join(cols) + "\n").encode())  # column names need no quoting
    pacsv.write_csv(t, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def sorted_keys(spec: TableSpec) -> Sequence[str]:
    return [c.key for c in spec.columns if c.sortable]
