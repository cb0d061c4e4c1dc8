"""The C&C list as a MISP event (MISP core format JSON), and MISP events back into list rows.

Written directly, column-wise, rather than through PyMISP's model (``bench/share_export.py``
measures the difference); the tests load every event we write into PyMISP's ``MISPEvent``, which
checks types and categories against MISP's own describeTypes. One event::

    {"Event": {"uuid", "info", "date", "timestamp", "published": false, "analysis": "2",
               "threat_level_id": "2", "distribution": "0"|"1", "Orgc": {"name", "uuid"},
               "Tag": [{"name": "tlp:amber+strict"}, …],
               "Attribute": [{"uuid", "type": "ip-dst|port" | "ip-dst",
                              "category": "Network activity", "to_ids": true,
                              "value": "203.0.113.5|443", "first_seen", "last_seen", "comment",
                              "Tag": [{"name": "mamori:protocol=\"tcp\""},
                                      {"name": "mamori:confidence=\"0.87\""}]}]}}

MISP has no numeric confidence or protocol field on an attribute, so both travel as tags of a
``mamori`` machine-tag namespace; the TLP level uses MISP's own ``tlp`` taxonomy.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mamori.bounds import deep_line, deep_message
from mamori.config import InputLimitsConfig
from mamori.share.c2list import LIST_SCHEMA
from mamori.share.stix import TLP_LEVELS, ParseReport, _time, _uid, _uids

__all__ = ["event_to_list", "list_to_event"]

_TAG = re.compile(r'^mamori:(protocol|confidence)="([^"]*)"$')


def list_to_event(
    table: pa.Table, isp_name: str, tlp: str = "amber+strict", *, now: datetime | None = None
) -> dict[str, Any]:
    """One MISP event holding the C&C list ``table`` (columns of :data:`LIST_SCHEMA`)."""
    level = tlp.lower().removeprefix("tlp:")
    if level not in TLP_LEVELS:
        raise ValueError(f"unknown TLP level {tlp!r}; one of {', '.join(TLP_LEVELS)}")
    now = now or datetime.now(UTC)
    stamp = str(int(now.timestamp()))
    attrs: list[dict[str, Any]] = []
    t = table.select(list(LIST_SCHEMA.names))
    firsts, lasts = (
        pc.strftime(t[c], format="%Y-%m-%dT%H:%M:%SZ", locale="C").to_pylist()
        for c in ("first_seen", "last_seen")
    )
    cols = t.select(["ip", "port", "protocol", "confidence", "method"]).to_pydict()
    for ip, port, proto, conf, method, first, last in zip(
        *cols.values(), firsts, lasts, strict=True
    ):
        tags = []
        if proto:
            tags.append({"name": f'mamori:protocol="{proto}"'})
        if conf is not None:
            tags.append({"name": f'mamori:confidence="{round(conf, 2)}"'})
        attrs.append(
            {
                "uuid": _uids(f"misp:{ip}|{port}|{proto}")[0],
                "type": "ip-dst|port" if port is not None else "ip-dst",
                "category": "Network activity",
                "to_ids": True,
                "value": f"{ip}|{port}" if port is not None else ip,
                "first_seen": first,
                "last_seen": last,
                "timestamp": stamp,
                "comment": f"C&C endpoint found by {method}" if method else "C&C endpoint",
                "Tag": tags,
            }
        )
    return {
        "Event": {
            "uuid": str(uuid.uuid4()),
            "info": f"{isp_name}: C&C servers seen from its network (aggregated endpoints)",
            "date": now.date().isoformat(),
            "timestamp": stamp,
            "published": False,
            "analysis": "2",
            "threat_level_id": "2",
            # 0: this organisation only (red, amber+strict); 1: this community
            "distribution": "0" if level in ("red", "amber+strict") else "1",
            "Orgc": {"name": isp_name, "uuid": str(_uid("org:" + isp_name))},
            "Tag": [{"name": f"tlp:{level}"}, {"name": 'kill-chain:"Command and Control"'}],
            "Attribute": attrs,
        }
    }


def _events(doc: Any) -> list[Mapping[str, Any]]:
    """Events in a MISP export: one ``{"Event": …}``, a list of them, or ``{"response": […]}``."""
    if isinstance(doc, Mapping) and "response" in doc:
        doc = doc["response"]
    items = doc if isinstance(doc, list) else [doc]
    return [
        e["Event"] for e in items if isinstance(e, Mapping) and isinstance(e.get("Event"), dict)
    ]


def event_to_list(
    doc: Any, report: ParseReport, limits: InputLimitsConfig | None = None, *, deep: bool = False
) -> pa.Table:
    """C&C list rows from the ``ip-dst`` / ``ip-dst|port`` attributes of MISP event(s).
    ``deep``: the JSON had nesting cut (:func:`mamori.bounds.load_json`); the attributes that
    held it are reported and skipped."""
    depth = (limits or InputLimitsConfig()).max_json_depth
    rows: dict[str, list[Any]] = {n: [] for n in LIST_SCHEMA.names}
    events = _events(doc)
    if not events:
        report.skip("document", "no MISP Event found")
    for e_no, ev in enumerate(events):
        attrs = ev.get("Attribute") or []
        for a_no, a in enumerate(attrs if isinstance(attrs, list) else []):
            where = f"event {e_no} attribute {a_no}"
            line = deep_line(a) if deep else None
            if line is not None:
                report.skip(where, deep_message(line, depth))
                continue
            if not isinstance(a, Mapping):
                report.skip(where, "not a JSON object")
                continue
            kind, value = a.get("type"), a.get("value")
            if kind not in ("ip-dst", "ip-dst|port") or not isinstance(value, str):
                continue
            ip, _, port_text = value.partition("|")
            port: int | None = None
            if kind == "ip-dst|port":
                if not port_text.isdigit() or int(port_text) > 65535:
                    report.skip(where, f"bad port in {value!r}")
                    continue
                port = int(port_text)
            extra: dict[str, str] = {}
            for tag in a.get("Tag") or []:
                m = _TAG.match(str(tag.get("name", ""))) if isinstance(tag, Mapping) else None
                if m:
                    extra[m.group(1)] = m.group(2)
            try:
                conf = float(extra["confidence"]) if "confidence" in extra else None
            except ValueError:
                report.skip(where, f"bad confidence {extra['confidence']!r}")
                continue
            first, last = _time(a.get("first_seen")), _time(a.get("last_seen"))
            rows["ip"].append(ip)
            rows["port"].append(port)
            rows["protocol"].append(extra.get("protocol"))
            rows["first_seen"].append(first)
            rows["last_seen"].append(last or first)
            rows["confidence"].append(conf)
            rows["method"].append(None)
            report.rows += 1
    return pa.table(rows, schema=LIST_SCHEMA)
