"""Templates, per-exporter sampling state, and data held until its template arrives.

Templates are kept per (exporter address, version, observation domain / source id, template id),
expire when not refreshed for ``timeout_s`` (measured on the datagrams' receive times, so a replayed
capture behaves like the live stream), and are bounded per exporter and in all, the least recently
announced evicted first, so a template flood cannot grow memory without limit.
:meth:`TemplateRegistry.state` returns plain JSON-serialisable data (all of it, or one exporter's)
and :meth:`TemplateRegistry.restore` takes it back, so a collector restart keeps its templates.
"""

from __future__ import annotations

import base64
import itertools
import operator
import struct
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import numpy as np

from mamori.ingest.netflow import fields as ie

__all__ = [
    "MAX_TEMPLATES",
    "MAX_TEMPLATES_PER_EXPORTER",
    "PENDING_MAX_BYTES",
    "V9_FIELDS",
    "FieldSpec",
    "HeldSet",
    "ParsedSets",
    "PendingSets",
    "SamplingState",
    "Template",
    "TemplateRegistry",
    "field_spec",
]

MAX_TEMPLATES_PER_EXPORTER: Final = 4096
MAX_TEMPLATES: Final = 262_144  # over all exporters (spoofed sources cannot grow it further)
PENDING_MAX_BYTES: Final = 64 * 1024 * 1024  # data held for missing templates, all exporters
STATE_FORMAT: Final = 2  # 1: fields as lists (still read)


_PACKED: Final = struct.Struct("!HH")  # a field as saved: id, length
_ENTERPRISE: Final = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a template: IE id, length in bytes (65535 = variable), enterprise number."""

    id: int
    length: int
    enterprise: int = 0
    scope: bool = False
    # Derived once per (shared) field, so that per-template work runs in C (map, join, sum):
    # the smallest length a record gives it, and its saved form.
    size: int = field(init=False, repr=False, compare=False, hash=False)
    packed: bytes = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", 1 if self.variable else self.length)
        object.__setattr__(self, "packed", _PACKED.pack(self.id, self.length))

    @property
    def variable(self) -> bool:
        return self.length == ie.VARIABLE_LENGTH


_FIELD_SPECS_MAX: Final = 1 << 16


class _Shared(dict[tuple[int, ...], FieldSpec]):
    """The shared :class:`FieldSpec` per field values: templates repeat the same few hundred
    fields, and thousands of templates then hold pointers instead of objects (a flood of 20,000
    templates of 358 fields took a GiB without). Bounded: past it, new ones are not shared."""

    def __missing__(self, key: tuple[int, ...]) -> FieldSpec:
        extra = len(key) > 2  # (id, length) of a v9 field, or (id, length, enterprise, scope)
        spec = FieldSpec(key[0], key[1], key[2] if extra else 0, bool(extra and key[3]))
        if len(self) < _FIELD_SPECS_MAX:
            self[key] = spec
        return spec


_FIELD_SPECS = _Shared()  # (id, length, enterprise, scope)
V9_FIELDS: Final = _Shared()
"""(id, length) → the shared FieldSpec of a NetFlow v9 data template field; looked up with
``map(V9_FIELDS.__getitem__, struct.iter_unpack(...))``, no Python call per field."""


def field_spec(fid: int, length: int, enterprise: int = 0, scope: bool = False) -> FieldSpec:
    """The shared :class:`FieldSpec` for these values (see :class:`_Shared`)."""
    return _FIELD_SPECS[(fid, length, enterprise, scope)]


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
        return ie.VARIABLE_LENGTH in map(_LENGTH, self.fields)

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
        return sum(map(_SIZE, self.fields))

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
        """``packed``: base64 of (id, length) ``!HH`` per field; ``enterprise``: base64 of
        ``!I`` per field, only where one has an enterprise number; ``scopes``: how many leading
        fields are scope fields (options templates). A flood's thousands of templates of
        hundreds of fields are saved and read back without a Python object per field."""
        fields = self.fields
        out: dict[str, Any] = {
            "version": self.version,
            "id": self.template_id,
            "options": self.options,
            "packed": base64.b64encode(b"".join(map(_PACKED_OF, fields))).decode(),
        }
        if any(map(_ENTERPRISE_OF, fields)):
            raw = b"".join(_ENTERPRISE.pack(f.enterprise) for f in fields)
            out["enterprise"] = base64.b64encode(raw).decode()
        scopes = sum(map(_SCOPE_OF, fields))
        if scopes:
            out["scopes"] = scopes
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Template:
        fields: tuple[FieldSpec, ...]
        if "packed" not in data:  # saved by an earlier version
            fields = tuple(
                field_spec(int(i), int(n), int(e), bool(s)) for i, n, e, s in data["fields"]
            )
        else:
            pairs = list(_PACKED.iter_unpack(base64.b64decode(data["packed"], validate=True)))
            scopes = int(data.get("scopes", 0))
            if "enterprise" in data or scopes:
                raw = base64.b64decode(data.get("enterprise", ""), validate=True)
                ents = [e for (e,) in _ENTERPRISE.iter_unpack(raw)] or [0] * len(pairs)
                if len(ents) != len(pairs):
                    raise ValueError("saved template: enterprise numbers do not match fields")
                fields = tuple(
                    field_spec(i, n, e, k < scopes)
                    for k, ((i, n), e) in enumerate(zip(pairs, ents, strict=True))
                )
            else:
                fields = tuple(map(V9_FIELDS.__getitem__, pairs))
        return cls(
            version=int(data["version"]),
            template_id=int(data["id"]),
            options=bool(data["options"]),
            fields=fields,
        )


_LENGTH: Final = operator.attrgetter("length")
_SIZE: Final = operator.attrgetter("size")
_PACKED_OF: Final = operator.attrgetter("packed")
_ENTERPRISE_OF: Final = operator.attrgetter("enterprise")
_SCOPE_OF: Final = operator.attrgetter("scope")


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
    """Templates per exporter and observation domain, with expiry and bounds.

    At most ``max_per_exporter`` templates per exporter address and ``max_total`` in all: past
    either bound the least recently announced template (of that exporter, or of any) is evicted
    (``templates.evicted``), so a flood, even from many spoofed sources, cannot grow memory.
    The sampling rates and init times of an observation domain go with its last template.

    Persistence is per exporter, so that it costs what changed and not what is held:
    :meth:`take_changes` names the exporters whose state changed (or was only refreshed) since
    the last call, :meth:`state` ``(exporter)`` gives one exporter's state, and :meth:`defer`
    registers exporters whose saved state is loaded only when something first asks about them
    (a restart does not read every template before it listens).
    """

    def __init__(
        self,
        timeout_s: float = 1800.0,
        max_per_exporter: int = MAX_TEMPLATES_PER_EXPORTER,
        max_total: int = MAX_TEMPLATES,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_per_exporter = max(1, max_per_exporter)
        self.max_total = max(1, max_total)
        # least recently announced first (puts and refreshes move a template to the end)
        self._templates: OrderedDict[TemplateKey, tuple[Template, float]] = OrderedDict()
        self._by_exporter: dict[str, OrderedDict[TemplateKey, None]] = {}
        self._per_domain: Counter[DomainKey] = Counter()
        self._sampling: dict[DomainKey, SamplingState] = {}
        self._init_ms: dict[DomainKey, int] = {}
        self._changed: set[str] = set()  # exporters whose saved state is out of date
        self._refreshed: set[str] = set()  # exporters whose templates were only re-announced
        self._unloaded: set[str] = set()
        self._loader: Callable[[str], Mapping[str, Any] | None] | None = None

    def __len__(self) -> int:
        return len(self._templates)

    # ------------------------------------------------------------------ deferred loading
    def defer(
        self, exporters: Iterable[str], loader: Callable[[str], Mapping[str, Any] | None]
    ) -> None:
        """Load the state of ``exporters`` with ``loader`` (a :meth:`state` of one exporter, or
        None) when each is first asked about."""
        self._loader = loader
        self._unloaded.update(exporters)

    def _ensure(self, exporter: str) -> None:
        if exporter in self._unloaded:
            self._unloaded.discard(exporter)
            assert self._loader is not None
            state = self._loader(exporter)
            if state:
                had = exporter in self._changed
                self.restore(state, Counter())
                if not had:  # what was just read needs no writing back
                    self._changed.discard(exporter)

    def load_all(self) -> None:
        for exporter in list(self._unloaded):
            self._ensure(exporter)

    # ------------------------------------------------------------------ templates
    def get(self, key: TemplateKey, now: float, counters: Counter[str]) -> Template | None:
        self._ensure(key[0])
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
        self._ensure(key[0])
        return self._templates.get(key)

    def touch(self, key: TemplateKey, now: float) -> None:
        """Mark a registered template seen at ``now`` (a refresh already counted)."""
        entry = self._templates.get(key)
        if entry is None:  # evicted meanwhile
            return
        self._templates[key] = (entry[0], now)
        self._templates.move_to_end(key)
        self._by_exporter[key[0]].move_to_end(key)
        self._refreshed.add(key[0])

    def put(self, key: TemplateKey, template: Template, now: float, counters: Counter[str]) -> None:
        """Add or refresh a template (evicting the least recently announced past a bound)."""
        exporter = key[0]
        self._ensure(exporter)
        old = self._templates.get(key)
        if old is None:
            mine = self._by_exporter.get(exporter)
            if mine is not None and len(mine) >= self.max_per_exporter:
                self._evict(next(iter(mine)), counters)
            while len(self._templates) >= self.max_total:
                self._evict(next(iter(self._templates)), counters)
            self._by_exporter.setdefault(exporter, OrderedDict())[key] = None
            self._per_domain[key[:3]] += 1
            counters["templates.new"] += 1
            self._changed.add(exporter)
        elif old[0] is template or old[0] == template:
            counters["templates.refreshed"] += 1
            self._by_exporter[exporter].move_to_end(key)
            self._refreshed.add(exporter)
        else:
            counters["templates.replaced"] += 1
            self._by_exporter[exporter].move_to_end(key)
            self._changed.add(exporter)
        self._templates[key] = (template, now)
        self._templates.move_to_end(key)

    def _evict(self, key: TemplateKey, counters: Counter[str]) -> None:
        self._drop(key)
        counters["templates.evicted"] += 1

    def withdraw(self, key: TemplateKey, counters: Counter[str]) -> None:
        self._ensure(key[0])
        if key in self._templates:
            self._drop(key)
            counters["templates.withdrawn"] += 1

    def withdraw_all(self, domain: DomainKey, options: bool, counters: Counter[str]) -> None:
        self._ensure(domain[0])
        mine = self._by_exporter.get(domain[0])
        for key in [k for k in mine or () if k[:3] == domain]:
            if self._templates[key][0].options == options:
                self.withdraw(key, counters)

    def expire(self, now: float, counters: Counter[str]) -> int:
        """Drop the templates not announced for ``timeout_s`` before ``now`` (they would expire
        at their next use anyway; this frees them). Returns how many."""
        n = 0
        # Announcement order is (nearly) time order: stop at the first template still fresh.
        while self._templates:
            key, (_, seen) = next(iter(self._templates.items()))
            if now - seen <= self.timeout_s:
                break
            self._drop(key)
            n += 1
        if n:
            counters["templates.expired"] += n
        return n

    def _drop(self, key: TemplateKey) -> None:
        exporter = key[0]
        del self._templates[key]
        mine = self._by_exporter[exporter]
        del mine[key]
        if not mine:
            del self._by_exporter[exporter]
        dkey = key[:3]
        self._per_domain[dkey] -= 1
        if self._per_domain[dkey] <= 0:
            # A domain without templates cannot decode anything its options said.
            del self._per_domain[dkey]
            self._sampling.pop(dkey, None)
            self._init_ms.pop(dkey, None)
        self._changed.add(exporter)

    # Sampling and system-init time, learnt from options records.
    def sampling(self, domain: DomainKey) -> SamplingState:
        self._ensure(domain[0])
        return self._sampling.get(domain, _NO_SAMPLING)

    def set_sampling(self, domain: DomainKey, sampler: int | None, rate: int) -> None:
        new = self.sampling(domain).with_rate(sampler, rate)
        if self._sampling.get(domain) != new:
            self._sampling[domain] = new
            self._changed.add(domain[0])

    def init_ms(self, domain: DomainKey) -> int | None:
        self._ensure(domain[0])
        return self._init_ms.get(domain)

    def set_init_ms(self, domain: DomainKey, value: int) -> None:
        self._ensure(domain[0])
        if self._init_ms.get(domain) != value:
            self._init_ms[domain] = value
            self._changed.add(domain[0])

    # ------------------------------------------------------------------ state
    def take_changes(self) -> tuple[set[str], set[str]]:
        """(exporters whose state changed, exporters whose templates were only announced again:
        their last-seen times moved) since the last call."""
        changed, refreshed = self._changed, self._refreshed - self._changed
        self._changed, self._refreshed = set(), set()
        return changed, refreshed

    def has_changes(self) -> bool:
        return bool(self._changed)

    def keep_changes(self, changed: Iterable[str] = (), refreshed: Iterable[str] = ()) -> None:
        """Give back what :meth:`take_changes` returned and was not saved."""
        self._changed.update(changed)
        self._refreshed.update(refreshed)

    def exporters(self) -> set[str]:
        """Exporters with state held (loaded or not)."""
        held = set(self._by_exporter) | self._unloaded
        held.update(k[0] for k in self._sampling)
        held.update(k[0] for k in self._init_ms)
        return held

    def state(self, exporter: str | None = None) -> dict[str, Any]:
        """Everything (or one exporter's state, loading it if deferred) as plain JSON data."""
        if exporter is None:
            self.load_all()
            keys: Iterable[TemplateKey] = self._templates
        else:
            self._ensure(exporter)
            keys = self._by_exporter.get(exporter, {})

        def mine(k: DomainKey) -> bool:
            return exporter is None or k[0] == exporter

        return {
            "format": STATE_FORMAT,
            "templates": [
                {"exporter": k[0], "domain": k[2], "seen": seen, **t.to_json()}
                for k in keys
                for t, seen in (self._templates[k],)
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
                if mine(k)
            ],
            "init_ms": [[k[0], k[1], k[2], v] for k, v in self._init_ms.items() if mine(k)],
        }

    def restore(self, state: Mapping[str, Any], counters: Counter[str]) -> None:
        if state.get("format") not in (1, STATE_FORMAT):
            raise ValueError(f"unknown template state format {state.get('format')!r}")
        # Oldest first, so that announcement order stays time order.
        items = sorted(state.get("templates", []), key=lambda item: float(item["seen"]))
        for item in items:
            template = Template.from_json(item)
            key = (
                str(item["exporter"]),
                template.version,
                int(item["domain"]),
                template.template_id,
            )
            self._unloaded.discard(key[0])  # never loaded twice
            self.put(key, template, float(item["seen"]), counters)
        for item in state.get("sampling", []):
            dkey = (str(item["exporter"]), int(item["version"]), int(item["domain"]))
            if dkey not in self._per_domain:
                continue  # no template left to decode what it says
            default = item.get("default")
            self._sampling[dkey] = SamplingState(
                None if default is None else int(default),
                {int(sid): int(r) for sid, r in item.get("by_sampler", [])},
            )
        for exporter, version, domain, value in state.get("init_ms", []):
            dkey = (str(exporter), int(version), int(domain))
            if dkey in self._per_domain:
                self._init_ms[dkey] = int(value)


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
