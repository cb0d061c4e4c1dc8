"""Templates, per-exporter sampling state, and data held until its template arrives.

Templates are kept per (exporter address, version, observation domain / source id, template id),
expire when not refreshed for ``timeout_s`` (measured on the datagrams' receive times, so a replayed
capture behaves like the live stream), and are bounded per exporter so a template flood cannot grow
memory without limit. :meth:`TemplateRegistry.state` returns plain JSON-serialisable data and
:meth:`TemplateRegistry.restore` takes it back, so a collector restart keeps its templates.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import numpy as np

from mamori.ingest.netflow import fields as ie

__all__ = [
    "MAX_TEMPLATES",
    "MAX_TEMPLATES_PER_EXPORTER",
    "PENDING_MAX_BYTES",
    "FieldSpec",
    "HeldSet",
    "ParsedSets",
    "PendingSets",
    "SamplingState",
    "Template",
    "TemplateRegistry",
]

MAX_TEMPLATES_PER_EXPORTER: Final = 4096
MAX_TEMPLATES: Final = 262_144  # over all exporters (spoofed sources cannot grow it further)
PENDING_MAX_BYTES: Final = 64 * 1024 * 1024  # data held for missing templates, all exporters
STATE_FORMAT: Final = 1


@dataclass(frozen=True)
class FieldSpec:
    """One field of a template: IE id, length in bytes (65535 = variable), enterprise number."""

    id: int
    length: int
    enterprise: int = 0
    scope: bool = False

    @property
    def variable(self) -> bool:
        return self.length == ie.VARIABLE_LENGTH


def _uint_format(length: int) -> Any:
    if length == 1:
        return "u1"
    if length in (2, 4, 8):
        return f">u{length}"
    return ("u1", (length,))


@dataclass(frozen=True)
class Template:
    """A data or options template as the exporter announced it."""

    version: int  # 5 (the fixed v5 layout), 9 or 10
    template_id: int
    fields: tuple[FieldSpec, ...]
    options: bool = False

    @cached_property
    def variable(self) -> bool:
        return any(f.variable for f in self.fields)

    @cached_property
    def nat(self) -> bool:
        """An IPFIX data template of NAT event records (RFC 8158): one with natEvent. Its records
        are NAT log entries (port blocks, sessions), never flows."""
        return (
            self.version == 10
            and not self.options
            and any(f.id == ie.NAT_EVENT and f.enterprise == 0 for f in self.fields)
        )

    @cached_property
    def record_length(self) -> int:
        """Length of one record; for variable-length templates, the minimum (1 byte per field)."""
        return sum(1 if f.variable else f.length for f in self.fields)

    @cached_property
    def offsets(self) -> dict[int, tuple[int, int]]:
        """IE id -> (offset, length) of the first readable occurrence of each field we use.

        Only meaningful for fixed-length templates. Enterprise fields, v9 scope fields and fields
        whose length cannot hold their type are left out.
        """
        out: dict[int, tuple[int, int]] = {}
        pos = 0
        for f in self.fields:
            if (
                f.enterprise == 0
                and not (f.scope and self.version == 9)
                and f.id not in out
                and _readable(f)
            ):
                out[f.id] = (pos, f.length)
            pos += f.length
        return out

    @cached_property
    def dtype(self) -> np.dtype[Any]:
        offs = self.offsets
        names = [f"f{fid}" for fid in offs]
        formats = [("V16" if length == 16 else _uint_format(length)) for _, length in offs.values()]
        return np.dtype(
            {
                "names": names,
                "formats": formats,
                "offsets": [off for off, _ in offs.values()],
                "itemsize": self.record_length,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "id": self.template_id,
            "options": self.options,
            "fields": [[f.id, f.length, f.enterprise, int(f.scope)] for f in self.fields],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Template:
        return cls(
            version=int(data["version"]),
            template_id=int(data["id"]),
            options=bool(data["options"]),
            fields=tuple(
                FieldSpec(int(i), int(n), int(e), bool(s)) for i, n, e, s in data["fields"]
            ),
        )


def _readable(f: FieldSpec) -> bool:
    if f.variable:
        return False
    if f.id in ie.ADDRESS_FIELDS:
        return f.length == ie.ADDRESS_FIELDS[f.id]
    if f.id in ie.UNSIGNED_FIELDS:
        return 1 <= f.length <= 8
    return False


@dataclass(frozen=True)
class SamplingState:
    """What an exporter / observation domain told us about its sampling. Immutable: a data set
    keeps a reference to the state current when it arrived."""

    default: int | None = None
    by_sampler: Mapping[int, int] = field(default_factory=dict)

    def with_rate(self, sampler: int | None, rate: int) -> SamplingState:
        if sampler is None:
            return SamplingState(rate, self.by_sampler)
        if self.by_sampler.get(sampler) == rate:
            return self
        return SamplingState(self.default, {**self.by_sampler, sampler: rate})


_NO_SAMPLING: Final = SamplingState()

TemplateKey = tuple[str, int, int, int]  # exporter, version, domain, template id
DomainKey = tuple[str, int, int]  # exporter, version, domain


class TemplateRegistry:
    """Templates per exporter and observation domain, with expiry and a per-exporter bound."""

    def __init__(
        self,
        timeout_s: float = 1800.0,
        max_per_exporter: int = MAX_TEMPLATES_PER_EXPORTER,
        max_total: int = MAX_TEMPLATES,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_per_exporter = max_per_exporter
        self.max_total = max_total
        self._templates: dict[TemplateKey, tuple[Template, float]] = {}
        self._per_exporter: Counter[str] = Counter()
        self._sampling: dict[DomainKey, SamplingState] = {}
        self._init_ms: dict[DomainKey, int] = {}

    def __len__(self) -> int:
        return len(self._templates)

    def get(self, key: TemplateKey, now: float, counters: Counter[str]) -> Template | None:
        entry = self._templates.get(key)
        if entry is None:
            return None
        template, seen = entry
        if now - seen > self.timeout_s:
            self._drop(key)
            counters["templates.expired"] += 1
            return None
        return template

    def entry(self, key: TemplateKey) -> tuple[Template, float] | None:
        """The template and the time it was last seen, without expiring it."""
        return self._templates.get(key)

    def touch(self, key: TemplateKey, now: float) -> None:
        """Mark a registered template seen at ``now`` (a refresh already counted)."""
        self._templates[key] = (self._templates[key][0], now)

    def put(self, key: TemplateKey, template: Template, now: float, counters: Counter[str]) -> bool:
        """Add or refresh a template. Returns False when the exporter's bound refused it."""
        old = self._templates.get(key)
        if old is None:
            if (
                self._per_exporter[key[0]] >= self.max_per_exporter
                or len(self._templates) >= self.max_total
            ):
                counters["templates.flood_dropped"] += 1
                return False
            self._per_exporter[key[0]] += 1
            counters["templates.new"] += 1
        elif old[0] is template or old[0] == template:
            counters["templates.refreshed"] += 1
        else:
            counters["templates.replaced"] += 1
        self._templates[key] = (template, now)
        return True

    def withdraw(self, key: TemplateKey, counters: Counter[str]) -> None:
        if key in self._templates:
            self._drop(key)
            counters["templates.withdrawn"] += 1

    def withdraw_all(self, domain: DomainKey, options: bool, counters: Counter[str]) -> None:
        for key in [k for k, (t, _) in self._templates.items() if k[:3] == domain]:
            if self._templates[key][0].options == options:
                self.withdraw(key, counters)

    def _drop(self, key: TemplateKey) -> None:
        del self._templates[key]
        self._per_exporter[key[0]] -= 1
        if self._per_exporter[key[0]] <= 0:
            del self._per_exporter[key[0]]

    # Sampling and system-init time, learnt from options records.
    def sampling(self, domain: DomainKey) -> SamplingState:
        return self._sampling.get(domain, _NO_SAMPLING)

    def set_sampling(self, domain: DomainKey, sampler: int | None, rate: int) -> None:
        self._sampling[domain] = self.sampling(domain).with_rate(sampler, rate)

    def init_ms(self, domain: DomainKey) -> int | None:
        return self._init_ms.get(domain)

    def set_init_ms(self, domain: DomainKey, value: int) -> None:
        self._init_ms[domain] = value

    def state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "templates": [
                {"exporter": k[0], "domain": k[2], "seen": seen, **t.to_json()}
                for k, (t, seen) in self._templates.items()
            ],
            "sampling": [
                {
                    "exporter": k[0],
                    "version": k[1],
                    "domain": k[2],
                    "default": s.default,
                    "by_sampler": [[sid, r] for sid, r in s.by_sampler.items()],
                }
                for k, s in self._sampling.items()
            ],
            "init_ms": [[k[0], k[1], k[2], v] for k, v in self._init_ms.items()],
        }

    def restore(self, state: Mapping[str, Any], counters: Counter[str]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown template state format {state.get('format')!r}")
        for item in state.get("templates", []):
            template = Template.from_json(item)
            key = (
                str(item["exporter"]),
                template.version,
                int(item["domain"]),
                template.template_id,
            )
            self.put(key, template, float(item["seen"]), counters)
        for item in state.get("sampling", []):
            dkey = (str(item["exporter"]), int(item["version"]), int(item["domain"]))
            default = item.get("default")
            self._sampling[dkey] = SamplingState(
                None if default is None else int(default),
                {int(sid): int(r) for sid, r in item.get("by_sampler", [])},
            )
        for exporter, version, domain, value in state.get("init_ms", []):
            self._init_ms[(str(exporter), int(version), int(domain))] = int(value)


@dataclass(frozen=True)
class HeldSet:
    """A data set whose template had not arrived, with what is needed to decode it later."""

    key: TemplateKey
    body: bytes
    export_ms: int
    uptime_ms: int
    received: float


class PendingSets:
    """Data sets held until their template arrives: bounded in number, bytes and age."""

    def __init__(self, limit: int, max_age_s: float, max_bytes: int = PENDING_MAX_BYTES) -> None:
        self.limit = limit
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self._bytes = 0
        self._by_key: dict[TemplateKey, OrderedDict[int, HeldSet]] = {}
        self._order: deque[tuple[TemplateKey, int]] = deque()
        self._seq = itertools.count()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def hold(self, held: HeldSet, counters: Counter[str]) -> None:
        if self.limit <= 0:
            counters["sets.pending_dropped"] += 1
            return
        seq = next(self._seq)
        self._by_key.setdefault(held.key, OrderedDict())[seq] = held
        self._order.append((held.key, seq))
        self._count += 1
        self._bytes += len(held.body)
        counters["sets.pending"] += 1
        self._evict(held.received, counters)
        if len(self._order) > 2 * self._count + 1024:  # drop entries of released sets
            self._order = deque((k, s) for k, s in self._order if s in self._by_key.get(k, {}))

    def holds(self, key: TemplateKey) -> bool:
        return bool(self._by_key.get(key))

    def release(self, key: TemplateKey) -> Iterator[HeldSet]:
        sets = self._by_key.pop(key, None)
        if not sets:
            return iter(())
        self._count -= len(sets)
        self._bytes -= sum(len(h.body) for h in sets.values())
        return iter(list(sets.values()))

    def _evict(self, now: float, counters: Counter[str]) -> None:
        while self._order:
            key, seq = self._order[0]
            sets = self._by_key.get(key)
            if sets is None or seq not in sets:
                self._order.popleft()  # already released
                continue
            held = sets[seq]
            over = self._count > self.limit or self._bytes > self.max_bytes
            old = now - held.received > self.max_age_s
            if not (over or old):
                break
            self._order.popleft()
            del sets[seq]
            if not sets:
                del self._by_key[key]
            self._count -= 1
            self._bytes -= len(held.body)
            counters["sets.pending_dropped" if over else "sets.pending_expired"] += 1


class ParsedSets:
    """Template sets already parsed, by their exact bytes: exporters resend the same template
    sets every few packets, and the same bytes give the same (shared) :class:`Template` objects.
    Bounded; only sets that parsed without any problem are kept."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._sets: dict[tuple[int, int, bytes], tuple[Template, ...]] = {}

    def get(self, key: tuple[int, int, bytes]) -> tuple[Template, ...] | None:
        return self._sets.get(key)

    def put(self, key: tuple[int, int, bytes], templates: tuple[Template, ...]) -> None:
        if len(self._sets) >= self.limit:
            self._sets.clear()
        self._sets[key] = templates
