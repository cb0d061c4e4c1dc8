"""The detector contract: what every detector is, so the command line, the demo, the scheduler
and the tests can run any of them the same way.

A detector has

* a ``name`` (``mamori detect NAME``, and its section ``[detect.NAME]`` in ``mamori.toml``),
* the ``measure`` (M1–M14) it reads under — it opens its inputs through governance for that
  measure only, into a sandbox of its own,
* ``Params``: a pydantic model of every threshold it uses, with defaults (no threshold lives in
  code alone; ``mamori config check`` prints them all), and
* ``run(gov, window, actor=…) -> DetectorRun``: the findings (the ``findings`` schema; they name
  endpoints or addresses, never a subscriber) and a JSON-ready summary for the operator.

Adding one: subclass :class:`DetectorParams` for its parameters, write a class with those four
members (see :class:`mamori.detect.c2.C2Detector`), and add it to
:data:`mamori.detect.registry.DETECTORS`. ``docs/architecture.md`` walks through an example.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from mamori.governance import Governance

__all__ = ["Detector", "DetectorParams", "DetectorRun", "Window"]


class DetectorParams(BaseModel):
    """Base of every detector's parameters: unknown keys are an error (a typo in
    ``mamori.toml`` must not silently leave a default in force)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Window:
    """The time window a batch detector looks at: [since, until); ``None`` is open."""

    since: datetime | None = None
    until: datetime | None = None

    def as_json(self) -> list[str | None]:
        return [t.isoformat() if t else None for t in (self.since, self.until)]


@dataclass
class DetectorRun:
    """What a run produced: ``findings`` (schema ``findings``; stored unless the run was a dry
    one) and ``summary`` (counts, what was held back, what the operator should know)."""

    findings: pa.Table
    summary: dict[str, Any] = field(default_factory=dict)


class Detector(Protocol):
    name: ClassVar[str]
    measure: ClassVar[str]
    Params: ClassVar[type[DetectorParams]]
    params: DetectorParams

    def run(self, gov: Governance, window: Window, *, actor: str) -> DetectorRun: ...


def section(config_detect: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The raw ``[detect.NAME]`` table (empty when absent)."""
    raw = config_detect.get(name, {})
    if not isinstance(raw, Mapping):
        raise ValueError(f"[detect.{name}] must be a table of parameters, not {raw!r}")
    return dict(raw)
