"""STIX 2.1 bundles: indicators (with the ``stix2`` library), their patterns read with
``stix2patterns``, and what relationships say about them.

Usable patterns: ``[ipv4-addr:value = '…']`` (and ipv6), ``[domain-name:value = '…']``,
``[url:value = '…']``, ``[network-traffic:dst_ref.type = 'ipv4-addr' AND
network-traffic:dst_ref.value = '…' AND network-traffic:dst_port = N]``. The category comes from,
in order: an ``indicates`` relationship to an Infrastructure (``command-and-control``,
``botnet`` → c2; ``hosting-malware`` → malware-site; ``phishing``) or to a Malware (its name
becomes the family), then the indicator's ``indicator_types``, ``labels`` and ``name``. Each
object is parsed on its own, so one broken object is reported (with its position in the bundle)
and the others are kept — so is an object nested deeper than ``input_limits.max_json_depth``
(cut before parsing) or with a pattern past the pattern bounds (checked before the pattern
grammar, which recurses once per operator, sees it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import stix2
from stix2.exceptions import STIXError
from stix2patterns.pattern import Pattern

from mamori.bounds import check_pattern
from mamori.ingest.reputation.common import Rows, mangled, norm_domain, norm_ip, parse_time

__all__ = ["parse_stix"]

_TERMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("phishing", ("phishing",)),
    ("malware-site", ("hosting-malware", "malware-site", "compromised")),
    (
        "first-stage",
        ("loader", "infection", "payload", "first-stage", "delivery", "dropper", "download"),
    ),
    ("c2", ("command-and-control", "c2", "cc", "c&c", "cnc", "botnet")),
)
_VOCAB = {t for _, terms in _TERMS for t in terms} | {
    "malicious-activity",
    "anomalous-activity",
    "attribution",
    "unknown",
    "benign",
    "server",
}
_WORD = re.compile(r"[a-z0-9&_-]+")


def _category(words: list[str]) -> str | None:
    toks = {w for text in words for w in _WORD.findall(text.lower())}
    toks |= {text.lower() for text in words}
    for cat, terms in _TERMS:
        if toks & set(terms):
            return cat
    return None


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1].replace("\\'", "'").replace("\\\\", "\\")
    return v


def _pattern_entries(pattern: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind, fields) the pattern names with '=' comparisons; kind is ip | ip-port | domain |
    url. Raises ValueError on a pattern that does not parse."""
    try:
        comps = Pattern(pattern).inspect().comparisons
    except Exception as exc:  # stix2patterns raises its own ParseException types
        raise ValueError(f"bad STIX pattern: {exc}") from None
    out: list[tuple[str, dict[str, Any]]] = []
    for obj in ("ipv4-addr", "ipv6-addr"):
        for path, op, val in comps.get(obj, []):
            if path == ["value"] and op == "=":
                out.append(("ip", {"ip": norm_ip(_unquote(val))}))
    for path, op, val in comps.get("domain-name", []):
        if path == ["value"] and op == "=":
            out.append(("domain", {"domain": norm_domain(_unquote(val))}))
    for path, op, val in comps.get("url", []):
        if path == ["value"] and op == "=":
            out.append(("url", {"url": _unquote(val)}))
    nt = comps.get("network-traffic", [])
    ips = [norm_ip(_unquote(v)) for p, op, v in nt if p == ["dst_ref", "value"] and op == "="]
    ports = [int(_unquote(v)) for p, op, v in nt if p == ["dst_port"] and op == "="]
    protos = [_unquote(v).lower() for p, op, v in nt if p[:1] == ["protocols"] and op == "="]
    if len(ports) > 1:
        raise ValueError("network-traffic pattern with several dst_port values")
    for ip in ips:
        if ports:
            if not 0 <= ports[0] <= 65535:
                raise ValueError(f"port {ports[0]} out of range")
            fields: dict[str, Any] = {"ip": ip, "port": ports[0]}
            if protos and protos[0] in ("tcp", "udp"):
                fields["protocol"] = protos[0]
            out.append(("ip-port", fields))
        else:
            out.append(("ip", {"ip": ip}))
    return out


def parse_stix(path: Path, rows: Rows, fmt: str = "stix") -> None:
    data, clean = rows.read_json(path)
    if isinstance(data, dict) and data.get("type") == "bundle":
        objects = data.get("objects") or []
    elif isinstance(data, list):
        objects = data
    elif isinstance(data, dict) and "type" in data:
        objects = [data]
    else:
        raise ValueError("not a STIX 2.1 bundle (no 'type': 'bundle')")
    parsed: dict[str, Any] = {}
    position: dict[str, int] = {}
    for no, raw in enumerate(objects, 1):
        deep = rows.too_deep(raw)
        if deep is not None:
            rows.bad(no, f"object {no}: {deep}")
            continue
        if not clean and mangled(raw):
            rows.bad(no, f"object {no}: not UTF-8 text")
            continue
        try:
            if not isinstance(raw, dict):
                raise ValueError("object is not a JSON object")
            if isinstance(raw.get("pattern"), str):  # before stix2 parses it
                check_pattern(raw["pattern"], rows.limits)
            obj = stix2.parse(raw, allow_custom=True, version="2.1")
        except (STIXError, ValueError, TypeError, KeyError) as exc:
            rows.bad(no, f"object {no}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        parsed[obj["id"]] = obj
        position[obj["id"]] = no
    # what each indicator indicates
    related: dict[str, list[Any]] = {}
    for obj in parsed.values():
        if obj["type"] == "relationship" and obj["relationship_type"] == "indicates":
            target = parsed.get(obj["target_ref"])
            if target is not None:
                related.setdefault(obj["source_ref"], []).append(target)
    for oid, obj in parsed.items():
        if obj["type"] != "indicator":
            continue
        no = position[oid]
        if obj.get("pattern_type", "stix") != "stix":
            rows.skip()
            continue
        if obj.get("revoked"):
            rows.skip()
            continue
        try:
            entries = _pattern_entries(obj["pattern"])
        except ValueError as exc:
            rows.bad(no, f"object {no} ({oid}): {exc}")
            continue
        if not entries:
            rows.skip()
            continue
        cat: str | None = None
        malware: str | None = None
        for target in related.get(oid, []):
            if target["type"] == "infrastructure":
                cat = cat or _category(list(target.get("infrastructure_types", [])))
            elif target["type"] == "malware":
                malware = malware or target.get("name")
                cat = cat or _category(list(target.get("malware_types", [])))
        labels = list(obj.get("labels", []))
        words = [*obj.get("indicator_types", []), *labels, obj.get("name") or ""]
        cat = cat or _category(words)
        if malware is None:
            fams = [x for x in labels if x.lower() not in _VOCAB]
            malware = fams[0] if fams else None
        conf = obj.get("confidence")
        valid_until = obj.get("valid_until")
        kw: dict[str, Any] = {
            "category": cat,
            "malware": malware,
            "confidence": conf / 100.0 if conf is not None else None,
            "first_seen": parse_time(str(obj["valid_from"])),
            "last_seen": parse_time(str(obj["modified"])) if obj.get("modified") else None,
            "expires": parse_time(str(valid_until)) if valid_until else None,
        }
        for kind, fields in entries:
            try:
                if kind == "url":
                    rows.add_url(fields["url"], **kw)
                else:
                    rows.add(kind, **fields, **kw)
            except ValueError as exc:
                rows.bad(no, f"object {no} ({oid}): {exc}")
