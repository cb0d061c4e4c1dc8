"""Score a detector's JSON findings against a simulated ISP's ``truth.json``.

Findings are the dictionaries ``mamori detect … --json`` prints (one per line); only the fields
named below are read, so any detector can be scored:

=============  ==========================================================================
kind           a finding matches when
=============  ==========================================================================
``c2``         ``ip`` (and ``port`` when given) is a C&C endpoint (role ``cc``; with
               ``include_distribution``, also loaders and first-stage servers); recall counts
               only endpoints the traffic contacted (``contacts`` > 0 in the truth)
``infected``   ``ip`` (+ ``port`` behind CGNAT) and ``time``/``first_seen`` fall in an address
               interval an infected subscriber held
``ddos``       ``ip`` is a DDoS or reflection victim; with ``min_pps``, victims attacked below it
               (``victim_pps`` in the truth) need not be found, and a finding on one, or on an
               attacking bot's or abused reflector's address, is not a false alarm
``reflection`` ``ip`` is an open resolver / reflector inside the ISP
``spoofing``   the finding's ``evidence.input_if`` is the customer-facing interface a spoofing
               subscriber's packets entered on (every border router has one per region)
``smtp``       ``auth_id`` is a compromised account, or ``ip`` a brute-force source
=============  ==========================================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

KINDS = ("c2", "infected", "ddos", "reflection", "spoofing", "smtp")


class Score(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    findings: int
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    #: truth items no finding matched, and findings that matched nothing (as keys)
    missed: list[str]
    spurious: list[str]
    #: spurious findings that hit a known trap (benign periodic service, wrong feed entry)
    traps_hit: list[str]


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def load_findings(path: Path) -> list[dict[str, Any]]:
    """JSON lines (``--json`` output) or one JSON array."""
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        data = json.loads(text)
        return [dict(x) for x in data]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _score(
    kind: str,
    n_findings: int,
    truth_keys: list[str],
    matched_truth: set[str],
    spurious: list[str],
    traps: set[str],
) -> Score:
    tp = n_findings - len(spurious)
    fn = len([k for k in truth_keys if k not in matched_truth])
    precision = tp / n_findings if n_findings else 0.0
    recall = (len(truth_keys) - fn) / len(truth_keys) if truth_keys else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(
        kind=kind,
        findings=n_findings,
        true_positives=tp,
        false_positives=len(spurious),
        false_negatives=fn,
        precision=round(precision, 6),
        recall=round(recall, 6),
        f1=round(f1, 6),
        missed=sorted(k for k in truth_keys if k not in matched_truth),
        spurious=sorted(spurious),
        traps_hit=sorted(s for s in spurious if s.split(":")[0] in traps),
    )


def _traps(truth: Mapping[str, Any]) -> set[str]:
    out = {t["ip"] for t in truth.get("benign_traps", [])}
    out |= {w["ip"] for w in truth.get("feeds", {}).get("wrong_entries", [])}
    return out


def score(
    kind: str,
    findings: Iterable[Mapping[str, Any]],
    truth: Mapping[str, Any],
    include_distribution: bool = False,
    min_pps: float | None = None,
) -> Score:
    """Precision/recall of ``findings`` of one ``kind`` against ``truth`` (a parsed truth.json);
    ``min_pps``: for ``ddos``, the detection threshold (attacks below it are optional)."""
    fl = list(findings)
    traps = _traps(truth)
    if kind == "c2":
        roles = {"cc", "loader", "infection"} if include_distribution else {"cc"}
        eps = [e for e in truth["endpoints"]
               if e["role"] in roles and e.get("contacts", 1) > 0]  # fmt: skip
        keys = [f"{e['ip']}:{e['port']}" for e in eps]
        matched: set[str] = set()
        spurious: list[str] = []
        for f in fl:
            port = f.get("port")
            hits = [
                k
                for k, e in zip(keys, eps, strict=True)
                if e["ip"] == f["ip"] and (port is None or int(port) == e["port"])
            ]
            if hits:
                matched.update(hits)
            else:
                spurious.append(f"{f['ip']}:{port}")
        return _score(kind, len(fl), keys, matched, spurious, traps)
    if kind == "infected":
        intervals = [(inf["subscriber"], a) for inf in truth["infected"] for a in inf["addresses"]]
        keys = sorted({str(inf["subscriber"]) for inf in truth["infected"]})
        matched = set()
        spurious = []
        for f in fl:
            t = _ts(f.get("time", f.get("first_seen", f.get("ts"))))
            port = f.get("port")
            hit = None
            for sub, a in intervals:
                if a["ip"] != f["ip"] and a.get("inside_ip") != f["ip"]:
                    continue
                if t is not None and not (_ts(a["from"]) or 0) <= t <= (_ts(a["until"]) or 0):
                    continue
                if (
                    port is not None
                    and a["inside_ip"]
                    and a["ip"] == f["ip"]
                    and not (a["port_lo"] <= int(port) <= a["port_hi"])
                ):
                    continue
                hit = str(sub)
                break
            if hit is None:
                spurious.append(f"{f['ip']}:{port}")
            else:
                matched.add(hit)
        return _score(kind, len(fl), keys, matched, spurious, traps)
    if kind == "ddos":
        return _score_ddos(fl, truth, traps, min_pps)
    if kind == "spoofing":
        lines = truth.get("ddos", {}).get("spoofing", [])
        keys = sorted({f"if{int(s['input_if'])}" for s in lines if "input_if" in s})
        matched = set()
        spurious = []
        for f in fl:
            ev = f.get("evidence") or {}
            if isinstance(ev, str):
                ev = json.loads(ev)
            iface = f"if{ev.get('input_if')}"
            if iface in keys:
                matched.add(iface)
            else:
                spurious.append(f"{f.get('ip')}:{iface}")
        return _score(kind, len(fl), keys, matched, spurious, traps)
    if kind == "reflection":
        entries = truth.get("reflection", {}).get("reflectors", [])
        # a reflector on a dynamic address may be found at any address it held meanwhile
        held = {a: r["ip"] for r in entries for a in [r["ip"], *r.get("addresses", [])]}
        refl = sorted({r["ip"] for r in entries})
        matched = {held[str(f["ip"])] for f in fl if str(f["ip"]) in held}
        spurious = [str(f["ip"]) for f in fl if str(f["ip"]) not in held]
        return _score(kind, len(fl), refl, matched, spurious, traps)
    if kind == "smtp":
        smtp = truth.get("smtp", {})
        keys = [c["auth_id"] for c in smtp.get("compromised_accounts", [])]
        keys += smtp.get("brute_force", {}).get("sources", [])
        matched = set()
        spurious = []
        for f in fl:
            k = f.get("auth_id") or f.get("ip")
            (matched.add(k) if k in keys else spurious.append(str(k)))
        return _score(kind, len(fl), keys, matched, spurious, traps)
    raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


def _score_ddos(
    fl: list[Mapping[str, Any]], truth: Mapping[str, Any], traps: set[str], min_pps: float | None
) -> Score:
    rates: dict[str, float | None] = {}
    for part in ("ddos", "reflection"):
        t = truth.get(part, {})
        for v in t.get("victims", []):
            r = t.get("victim_pps", {}).get(v)
            rates[v] = (rates.get(v) or 0.0) + r if r is not None else rates.get(v)
    keys = sorted(v for v, r in rates.items() if min_pps is None or r is None or r >= min_pps)
    # addresses an attack may also be reported on without being a false alarm: victims below
    # the threshold, the attacking bots' own addresses and the abused reflectors' (a
    # subscriber's device flooding others)
    optional = set(rates) - set(keys)
    for r in truth.get("reflection", {}).get("reflectors", []):
        optional |= {r["ip"], *r.get("addresses", [])}
    bots = {int(b) for b in truth.get("ddos", {}).get("bots", [])}
    for inf in truth.get("infected", []):
        if int(inf["subscriber"]) in bots:
            optional |= {a["ip"] for a in inf["addresses"]}
    fl = [f for f in fl if str(f["ip"]) not in optional]
    return _simple("ddos", fl, keys, "ip", traps)


def _simple(
    kind: str, fl: list[Mapping[str, Any]], keys: list[str], field: str, traps: set[str]
) -> Score:
    matched = {str(f[field]) for f in fl if str(f[field]) in keys}
    spurious = [str(f[field]) for f in fl if str(f[field]) not in keys]
    return _score(kind, len(fl), keys, matched, spurious, traps)


def score_files(
    kind: str,
    findings: Path,
    truth: Path,
    include_distribution: bool = False,
    min_pps: float | None = None,
) -> Score:
    return score(
        kind,
        load_findings(findings),
        json.loads(truth.read_text(encoding="utf-8")),
        include_distribution=include_distribution,
        min_pps=min_pps,
    )


# ------------------------------------------------------------------ C&C discovery, honestly


class C2Score(BaseModel):
    """C&C discovery against the truth, counting only what the feeds did not already give."""

    model_config = ConfigDict(frozen=True)

    #: endpoints reported (deduplicated on ip:port)
    findings: int
    #: reported endpoints that are C&C servers (any, listed or not)
    true_positives: int
    #: reported endpoints that are loaders / first-stage servers: hostile, but not C&C
    hostile_not_cc: int
    precision: float
    #: precision counting loaders / first-stage servers as correct too
    precision_hostile: float
    #: C&C contacted in the window and not listed by ``as_of`` (unlisted, or listed later)
    unknown_total: int
    unknown_found: int
    recall_unknown: float
    k: int
    precision_at_k: float
    missed_unknown: list[str]
    spurious: list[str]
    #: the evidence ceiling: unknown C&C that at least ``observable_min_hosts`` distinct
    #: internal hosts reached in the *sampled* exports (a C&C nobody sampled is not a miss of
    #: the detector), how many of them were found, and that recall
    observable_min_hosts: int = 1
    observable_total: int = 0
    observable_found: int = 0
    recall_observable: float = 0.0
    #: per unknown C&C: distinct sampled internal hosts (None: the truth predates the ceiling)
    sampled_hosts: dict[str, int | None] = {}


class LeadTime(BaseModel):
    """Share of C&C the feeds list late or never that a detector found before the listing."""

    model_config = ConfigDict(frozen=True)

    late_or_unlisted: int
    found_before_listing: int
    share: float
    #: per endpoint: listing time (None = never listed) and first detection time
    detail: dict[str, dict[str, str | None]]


def _cc(truth: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {f"{e['ip']}:{e['port']}": e for e in truth["endpoints"]
            if e["role"] == "cc" and e.get("contacts", 1) > 0}  # fmt: skip


def listing_times(truth: Mapping[str, Any]) -> dict[str, float | None]:
    """ip:port → when the (simulated) feeds list it: -inf for C&C listed from the start, the
    ``listed_at`` of late-listed ones, ``None`` for never-listed ones."""
    feeds = truth.get("feeds", {})
    out: dict[str, float | None] = {k: float("-inf") for k in _cc(truth)}
    # the feeds' late and missing entries include loaders and first-stage servers: only C&C
    # servers count here
    for e in feeds.get("delayed", []):
        if (key := f"{e['ip']}:{e['port']}") in out:
            out[key] = _ts(e.get("listed_at"))
    for e in feeds.get("unlisted", []):
        if (key := f"{e['ip']}:{e['port']}") in out:
            out[key] = None
    return out


def _key(f: Mapping[str, Any]) -> str:
    return f"{f['ip']}:{f.get('port')}"


def score_c2(
    findings: Iterable[Mapping[str, Any]],
    truth: Mapping[str, Any],
    *,
    as_of: Any = None,
    k: int = 10,
    observable_min_hosts: int = 1,
) -> C2Score:
    """Precision, recall on C&C unknown at ``as_of`` (default: the window's end), precision@k,
    and recall on the unknown C&C that were observable (``sampled_hosts`` in the truth ≥
    ``observable_min_hosts``).

    Findings are ranked by ``score`` for precision@k. A finding whose port is null matches any
    port of its address.
    """
    cc = _cc(truth)
    hostile = {f"{e['ip']}:{e['port']}" for e in truth["endpoints"]
               if e["role"] in ("loader", "infection")}  # fmt: skip
    cutoff = _ts(as_of) if as_of is not None else _ts(truth["window"]["until"])
    listed = listing_times(truth)
    unknown = sorted(
        key for key, t in listed.items() if t is None or (cutoff is not None and t > cutoff)
    )
    ranked = sorted(findings, key=lambda f: -float(f.get("score") or 0.0))
    seen: dict[str, Mapping[str, Any]] = {}
    for f in ranked:
        seen.setdefault(_key(f), f)

    def match(key: str, pool: Iterable[str]) -> list[str]:
        ip, _, port = key.partition(":")
        return [p for p in pool if p.split(":")[0] == ip and (port in ("None", "") or p == key)]

    tp = hostile_n = 0
    spurious: list[str] = []
    hits: list[bool] = []
    found: set[str] = set()
    for key in seen:
        m = match(key, cc)
        if m:
            tp += 1
            found.update(m)
        elif match(key, hostile):
            hostile_n += 1
        else:
            spurious.append(key)
        hits.append(bool(m))
    n = len(seen)
    top = hits[:k]
    unk_found = [u for u in unknown if u in found]
    hosts_of: dict[str, int | None] = {
        u: (None if cc[u].get("sampled_hosts") is None else int(cc[u]["sampled_hosts"]))
        for u in unknown
    }
    observable = [u for u in unknown if (hosts_of[u] or 0) >= observable_min_hosts]
    obs_found = [u for u in observable if u in found]
    return C2Score(
        findings=n,
        true_positives=tp,
        hostile_not_cc=hostile_n,
        precision=round(tp / n, 6) if n else 0.0,
        precision_hostile=round((tp + hostile_n) / n, 6) if n else 0.0,
        unknown_total=len(unknown),
        unknown_found=len(unk_found),
        recall_unknown=round(len(unk_found) / len(unknown), 6) if unknown else 0.0,
        k=k,
        precision_at_k=round(sum(top) / len(top), 6) if top else 0.0,
        missed_unknown=[u for u in unknown if u not in found],
        spurious=sorted(spurious),
        observable_min_hosts=observable_min_hosts,
        observable_total=len(observable),
        observable_found=len(obs_found),
        recall_observable=round(len(obs_found) / len(observable), 6) if observable else 0.0,
        sampled_hosts=hosts_of,
    )


def lead_time(
    runs: Iterable[tuple[Any, Iterable[Mapping[str, Any]]]], truth: Mapping[str, Any]
) -> LeadTime:
    """``runs``: (cutoff time, findings of a run over data up to that time), e.g. hourly.

    Counts the C&C servers the feeds list late or never (``truth.feeds``) and, of them, those a
    run found strictly before the listing time (never-listed: found at all).
    """
    listed = listing_times(truth)
    late = {k: t for k, t in listed.items() if t is None or t != float("-inf")}
    first: dict[str, float] = {}
    for cutoff, fl in runs:
        t = _ts(cutoff)
        if t is None:
            continue
        for f in fl:
            ip, port = f["ip"], f.get("port")
            for key in late:
                kip, kport = key.split(":")
                if kip == ip and (port is None or int(port) == int(kport)):
                    first[key] = min(first.get(key, t), t)
    early = [k for k, t in late.items() if k in first and (t is None or first[k] < t)]
    detail = {
        k: {
            "listed": None if t is None else datetime.fromtimestamp(t, tz=UTC).isoformat(),
            "found": datetime.fromtimestamp(first[k], tz=UTC).isoformat() if k in first else None,
        }
        for k, t in sorted(late.items())
    }
    return LeadTime(
        late_or_unlisted=len(late),
        found_before_listing=len(early),
        share=round(len(early) / len(late), 6) if late else 0.0,
        detail=detail,
    )
