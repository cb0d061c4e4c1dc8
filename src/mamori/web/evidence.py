"""A finding's evidence (JSON from its detector) as a summary people can read.

Detectors write evidence as JSON objects; the C&C detector nests one object per method that
found the endpoint. The summary is one section per method, each a list of (label, value) with
the detector's keys turned into words, numbers rounded, lists shortened, and the keys a person
looks at first put first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Section", "summarise"]

LABELS = {
    "method": "method",
    "seed": "seed (known C&C the hosts also contacted)",
    "suspect_hosts": "hosts that contacted the seed",
    "population_hosts": "hosts seen in all",
    "supporting_hosts": "of them, also contacting this endpoint",
    "endpoint_hosts": "hosts contacting this endpoint",
    "purity": "share of this endpoint's hosts that are suspects",
    "expected_hosts": "expected by chance",
    "lift": "times more than chance",
    "sampled_flows": "flow records (sampled)",
    "estimated_flows": "flows (estimated, scaled by sampling)",
    "sampling_rates": "sampling rates (1 in N)",
    "p_value": "p-value",
    "q_value": "q-value (after multiple testing)",
    "pairs_tested": "endpoint pairs tested",
    "size_cv": "variation of flow sizes",
    "periodicity": "periodicity score",
    "known": "already on a list",
    "indicators": "indicators matched",
    "indicator_count": "indicators matched (count)",
    "flows_to_indicator": "flows to the indicator",
    "flows_from_indicator": "flows from the indicator",
    "flows_estimated": "flows (estimated)",
    "queries": "resolver queries",
    "malware": "malware families",
    "sources": "lists it is on",
    "max_confidence": "highest confidence of a list",
    "converging_hosts": "hosts converging on it",
    "beacon_period_s": "beacon period (seconds)",
    "matches": "matches",
    "indicator": "indicator",
    "hosts": "hosts",
    "period_s": "period (seconds)",
    "median_interval_s": "median interval (seconds)",
    "contacts": "contacts",
}
FIRST = ("method", "seed", "supporting_hosts", "endpoint_hosts", "lift", "q_value", "indicators")
LIST_SHOWN = 8


@dataclass(frozen=True)
class Section:
    title: str
    items: list[tuple[str, str]]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 0.001 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:,.3f}".rstrip("0").rstrip(".")
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        shown = ", ".join(_value(x) for x in v[:LIST_SHOWN] if x is not None)
        more = len(v) - LIST_SHOWN
        return shown + (f" … and {more} more" if more > 0 else "")
    if isinstance(v, dict):
        return ", ".join(
            f"{LABELS.get(k, k.replace('_', ' '))} {_value(x)}"
            for k, x in v.items()
            if x is not None
        )
    return str(v)


def _items(obj: dict[str, Any]) -> list[tuple[str, str]]:
    keys = [k for k in FIRST if k in obj] + sorted(k for k in obj if k not in FIRST)
    out = []
    for k in keys:
        v = obj[k]
        if v is None or v == [] or v == {}:
            continue
        out.append((LABELS.get(k, k.replace("_", " ")), _value(v)))
    return out


def summarise(evidence: str | None) -> list[Section]:
    """The evidence as sections of (label, value); unreadable JSON is shown as it is."""
    if not evidence:
        return []
    try:
        obj = json.loads(evidence)
    except ValueError:
        return [Section("evidence", [("text", evidence[:2000])])]
    if not isinstance(obj, dict):
        return [Section("evidence", [("value", _value(obj))])]
    nested = {k: v for k, v in obj.items() if isinstance(v, dict) and k != "seed"}
    flat = {k: v for k, v in obj.items() if k not in nested}
    sections = []
    if flat:
        sections.append(Section(str(obj.get("method") or "evidence"), _items(flat)))
    for method, body in nested.items():
        sections.append(Section(method, _items(body)))
    return sections
