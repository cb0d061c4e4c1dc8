"""MISP events as JSON (an event export, or a restSearch answer), read offline.

``{"Event": {"info", "date", "Tag": [{"name"}], "Attribute": [...], "Object": [{"name",
"Attribute": [...]}]}}``, a list of those, or ``{"response": [...]}``. Each attribute has
``type``, ``category``, ``value``, ``to_ids``, ``timestamp`` (epoch seconds), optional
``first_seen``/``last_seen`` and ``Tag``. Used: ``ip-dst``, ``ip-src`` (only in an event about
C&C servers), ``ip-dst|port``, ``domain``, ``hostname``, ``domain|ip``, ``url``; plus an
``ip-port`` object's ``ip``/``dst-port`` attributes. Attributes with ``to_ids`` false are context,
not detection material, and are skipped. The category comes from the attribute's and event's tags
(``kill-chain:Command and Control``, ``… c2``, phishing) and MISP category (``Payload delivery``
→ first-stage); the family from ``misp-galaxy:…="Name"`` tags.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from mamori.ingest.reputation.common import (
    Rows,
    mangled,
    norm_domain,
    norm_ip,
    parse_time,
    split_ip_port,
)

__all__ = ["parse_misp"]

_GALAXY = re.compile(r'^misp-galaxy:[a-z-]+="([^"]+)"')


def _false(value: Any) -> bool:
    """MISP writes booleans as true/false, and some exports as "0"/"1" strings."""
    return str(value).strip().lower() in ("false", "0", "")


def _tags(obj: dict[str, Any]) -> list[str]:
    return [str(t.get("name", "")) for t in obj.get("Tag", []) or [] if isinstance(t, dict)]


def _category(tags: list[str], misp_category: str) -> str | None:
    text = " ".join(tags).lower()
    if "phish" in text:
        return "phishing"
    if "command and control" in text or "command-and-control" in text or "c2" in text:
        return "c2"
    if "c&c" in text or "botnet" in text:
        return "c2"
    if misp_category == "Payload delivery":
        return "first-stage"
    return None


def _family(tags: list[str]) -> str | None:
    for t in tags:
        m = _GALAXY.match(t)
        if m:
            return m.group(1)
    return None


def _events(data: Any, rows: Rows) -> list[dict[str, Any]]:
    if isinstance(data, dict) and "response" in data:
        data = data["response"]
    items = data if isinstance(data, list) else [data]
    out = []
    for no, it in enumerate(items, 1):
        deep = rows.too_deep(it) if len(items) > 1 else None
        if deep is not None:  # one event of several: refuse it, keep the others
            rows.bad(no, f"event {no}: {deep}")
            continue
        if isinstance(it, dict) and isinstance(it.get("Event"), dict):
            out.append(it["Event"])
        elif isinstance(it, dict) and "Attribute" in it:
            out.append(it)
        else:
            raise ValueError("not a MISP event (no 'Event' object)")
    return out


def parse_misp(path: Path, rows: Rows, fmt: str = "misp") -> None:
    data, clean = rows.read_json(path)
    events = _events(data, rows)
    no = 0
    for e_no, ev in enumerate(events, 1):
        head = {k: v for k, v in ev.items() if k not in ("Attribute", "Object")}
        deep = rows.too_deep(head)
        if deep is not None:  # its tags and info decide every attribute: refuse the event
            rows.bad(no + 1, f"event {e_no}: {deep}")
            continue
        etags = _tags(ev)
        ecat = _category([*etags, str(ev.get("info", ""))], "")
        efam = _family(etags)
        attrs: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
            (a, None) for a in ev.get("Attribute", []) or []
        ]
        for obj in ev.get("Object", []) or []:
            if isinstance(obj, dict):
                attrs += [(a, obj) for a in obj.get("Attribute", []) or []]
        # an ip-port object: its ip and port attributes make one ip-port entry
        ports: dict[int, int] = {}
        for obj in ev.get("Object", []) or []:
            if isinstance(obj, dict) and obj.get("name") == "ip-port":
                for a in obj.get("Attribute", []) or []:
                    if isinstance(a, dict) and a.get("object_relation") == "dst-port":
                        with contextlib.suppress(ValueError):
                            ports[id(obj)] = int(str(a.get("value")))
        for a, obj in attrs:
            no += 1
            deep = rows.too_deep(a)
            if deep is not None:
                rows.bad(no, f"attribute {no}: {deep}")
                continue
            if not clean and mangled(a):
                rows.bad(no, f"attribute {no}: not UTF-8 text")
                continue
            try:
                if not isinstance(a, dict):
                    raise ValueError("attribute is not an object")
                deleted = not _false(a.get("deleted", False))
                if deleted or _false(a.get("to_ids", True)):
                    rows.skip()
                    continue
                atype = str(a["type"])
                value = str(a["value"])
                atags = _tags(a)
                cat = _category(atags, str(a.get("category", ""))) or ecat
                kw: dict[str, Any] = {
                    "category": cat,
                    "malware": _family(atags) or efam,
                    "first_seen": parse_time(a.get("first_seen") or a.get("timestamp")),
                    "last_seen": parse_time(a.get("last_seen")),
                }
                if atype in ("ip-dst", "ip-src"):
                    if atype == "ip-src" and cat != "c2":
                        rows.skip()  # a source address is usually a victim or scanner
                        continue
                    port = ports.get(id(obj)) if obj is not None else None
                    if port:
                        rows.add("ip-port", ip=norm_ip(value), port=port, **kw)
                    else:
                        rows.add("ip", ip=norm_ip(value), **kw)
                elif atype in ("ip-dst|port", "ip-src|port"):
                    ip, port = split_ip_port(value.replace("|", ":"))
                    rows.add("ip-port", ip=ip, port=port, **kw)
                elif atype in ("domain", "hostname"):
                    rows.add("domain", domain=norm_domain(value), **kw)
                elif atype == "domain|ip":
                    d, _, ip = value.partition("|")
                    rows.add("domain", domain=norm_domain(d), **kw)
                    if ip:
                        rows.add("ip", ip=norm_ip(ip), **kw)
                elif atype == "url":
                    rows.add_url(value, **kw)
                else:
                    rows.skip()
            except (KeyError, ValueError, TypeError) as exc:
                rows.bad(no, f"attribute {no}: {type(exc).__name__}: {exc}")
