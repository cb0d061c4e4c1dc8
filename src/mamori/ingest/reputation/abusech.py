"""abuse.ch feeds: Feodo Tracker (CSV, JSON), URLhaus (CSV), ThreatFox (CSV, JSON).

Layouts, as abuse.ch publishes them:

* Feodo Tracker ``ipblocklist.csv``: ``#`` banner, then a header line
  ``"first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"``, then one quoted
  row per C&C server. ``ipblocklist.json``: a list of objects with ``ip_address``, ``port``,
  ``status``, ``hostname``, ``as_number``, ``as_name``, ``country``, ``first_seen``,
  ``last_online``, ``malware``.
* URLhaus ``csv_recent`` / ``csv_online``: banner, commented header
  ``# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter``, rows.
* ThreatFox CSV export: banner, commented header ``# "first_seen_utc","ioc_id","ioc_value",
  "ioc_type","threat_type","fk_malware","malware_alias","malware_printable","last_seen_utc",
  "confidence_level","reference","tags","anonymous","reporter"``, rows quoted and separated by
  ``", "``. JSON export: ``{"<ioc_id>": [{"ioc_value": …, "ioc_type": …, …}], …}``; the API's
  answer ``{"query_status": "ok", "data": [{"ioc": …, "first_seen": "… UTC", …}]}`` too.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mamori.ingest.reputation.common import (
    Rows,
    mangled,
    norm_domain,
    norm_ip,
    norm_port,
    parse_time,
    split_ip_port,
    text_lines,
)

__all__ = [
    "FEODO_COLUMNS",
    "THREATFOX_COLUMNS",
    "URLHAUS_COLUMNS",
    "parse_feodo",
    "parse_threatfox",
    "parse_urlhaus",
]

FEODO_COLUMNS = ("first_seen_utc", "dst_ip", "dst_port", "c2_status", "last_online", "malware")
URLHAUS_COLUMNS = (
    "id",
    "dateadded",
    "url",
    "url_status",
    "last_online",
    "threat",
    "tags",
    "urlhaus_link",
    "reporter",
)
THREATFOX_COLUMNS = (
    "first_seen_utc",
    "ioc_id",
    "ioc_value",
    "ioc_type",
    "threat_type",
    "fk_malware",
    "malware_alias",
    "malware_printable",
    "last_seen_utc",
    "confidence_level",
    "reference",
    "tags",
    "anonymous",
    "reporter",
)

# ThreatFox threat types → our categories; hashes and other IOC types are skipped.
_TF_CATEGORY = {
    "botnet_cc": "c2",
    "payload_delivery": "first-stage",
    "cc_skimming": "malware-site",
}


def _csv_records(
    path: Path, columns: Sequence[str], rows: Rows
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data line; a header (commented or not) that names the
    columns replaces ``columns``; rows with the wrong number of fields are reported bad.
    Feed records never span lines, so one reader runs over the data lines and their numbers are
    kept alongside."""
    header = list(columns)
    key = columns[0]
    numbers: list[int] = [0]

    def data_lines() -> Iterator[str]:
        nonlocal header
        for no, raw in text_lines(path, rows):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                body = line.lstrip("#").strip()
                if body.lstrip('"').startswith(key):
                    with contextlib.suppress(csv.Error, StopIteration):
                        header = [
                            f.strip() for f in next(csv.reader([body], skipinitialspace=True))
                        ]
                continue
            numbers[0] = no
            yield line

    reader = csv.reader(data_lines(), skipinitialspace=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            rows.bad(numbers[0], f"unreadable CSV: {exc}")
            continue
        no = numbers[0]
        if fields and fields[0].strip() == key:
            header = [f.strip() for f in fields]
            continue
        if len(fields) != len(header):
            rows.bad(no, f"{len(fields)} fields, expected {len(header)}")
            continue
        yield no, dict(zip(header, fields, strict=True))


def parse_feodo(path: Path, rows: Rows, fmt: str = "csv") -> None:
    if fmt == "json":
        data, clean = rows.read_json(path)
        if not isinstance(data, list):
            raise ValueError("Feodo Tracker JSON is a list of objects")
        for no, e in enumerate(data, 1):
            if (deep := rows.too_deep(e)) is not None:
                rows.bad(no, f"entry {no}: {deep}")
                continue
            if not clean and mangled(e):
                rows.bad(no, f"entry {no}: not UTF-8 text")
                continue
            try:
                if not isinstance(e, dict):
                    raise ValueError("entry is not an object")
                _feodo_one(
                    rows,
                    e["ip_address"],
                    e.get("port"),
                    e.get("first_seen"),
                    e.get("last_online"),
                    e.get("malware"),
                )
            except (KeyError, ValueError, TypeError) as exc:
                rows.bad(no, f"entry {no}: {type(exc).__name__}: {exc}")
        return
    for no, r in _csv_records(path, FEODO_COLUMNS, rows):
        try:
            _feodo_one(
                rows,
                r["dst_ip"],
                r.get("dst_port"),
                r.get("first_seen_utc"),
                r.get("last_online"),
                r.get("malware"),
            )
        except (KeyError, ValueError) as exc:
            rows.bad(no, f"{type(exc).__name__}: {exc}")


def _feodo_one(rows: Rows, ip: Any, port: Any, first: Any, last: Any, malware: Any) -> None:
    p = norm_port(port)
    rows.add(
        "ip-port" if p else "ip",
        ip=norm_ip(str(ip)),
        port=p or None,
        protocol="tcp",
        category="c2",
        malware=str(malware) if malware else None,
        first_seen=parse_time(first),
        last_seen=parse_time(last),
    )


def parse_urlhaus(path: Path, rows: Rows, fmt: str = "csv") -> None:
    for no, r in _csv_records(path, URLHAUS_COLUMNS, rows):
        try:
            threat = r.get("threat", "")
            rows.add_url(
                r["url"],
                category="first-stage" if threat in ("malware_download", "") else "malware-site",
                malware=r.get("tags") or None,
                first_seen=parse_time(r.get("dateadded")),
                last_seen=parse_time(r.get("last_online")),
            )
        except (KeyError, ValueError) as exc:
            rows.bad(no, f"{type(exc).__name__}: {exc}")


def _tf_one(rows: Rows, e: dict[str, Any]) -> None:
    ioc_type = str(e.get("ioc_type", "")).strip()
    value = str(e.get("ioc_value", e.get("ioc", ""))).strip()
    threat = str(e.get("threat_type", "")).strip()
    if ioc_type not in ("ip:port", "domain", "url") or threat not in _TF_CATEGORY:
        rows.skip()
        return
    if not value:
        raise ValueError("empty ioc_value")
    level = e.get("confidence_level")
    kw: dict[str, Any] = {
        "category": _TF_CATEGORY[threat],
        "malware": e.get("malware_printable") or e.get("malware") or e.get("fk_malware") or None,
        "confidence": float(str(level)) / 100.0 if str(level or "").strip() else None,
        "first_seen": parse_time(e.get("first_seen_utc", e.get("first_seen"))),
        "last_seen": parse_time(e.get("last_seen_utc", e.get("last_seen"))),
    }
    if ioc_type == "ip:port":
        ip, port = split_ip_port(value)
        rows.add("ip-port", ip=ip, port=port, **kw)
    elif ioc_type == "domain":
        rows.add("domain", domain=norm_domain(value), **kw)
    else:
        rows.add_url(value, **kw)


def parse_threatfox(path: Path, rows: Rows, fmt: str = "csv") -> None:
    if fmt == "json":
        data, clean = rows.read_json(path)
        if isinstance(data, dict) and "data" in data:  # the API's answer
            entries = data["data"] if isinstance(data["data"], list) else []
        elif isinstance(data, dict):  # the export: id → [entry]
            entries = [e for v in data.values() for e in (v if isinstance(v, list) else [v])]
        elif isinstance(data, list):
            entries = data
        else:
            raise ValueError("ThreatFox JSON is an object of id → entries, or an API answer")
        for no, e in enumerate(entries, 1):
            if (deep := rows.too_deep(e)) is not None:
                rows.bad(no, f"entry {no}: {deep}")
                continue
            if not clean and mangled(e):
                rows.bad(no, f"entry {no}: not UTF-8 text")
                continue
            try:
                if not isinstance(e, dict):
                    raise ValueError("entry is not an object")
                _tf_one(rows, e)
            except (KeyError, ValueError, TypeError) as exc:
                rows.bad(no, f"entry {no}: {type(exc).__name__}: {exc}")
        return
    for no, r in _csv_records(path, THREATFOX_COLUMNS, rows):
        try:
            _tf_one(rows, r)
        except (KeyError, ValueError) as exc:
            rows.bad(no, f"{type(exc).__name__}: {exc}")
