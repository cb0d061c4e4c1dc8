"""The catalogue of measures M1–M14, loaded from ``measures.toml`` into typed objects."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mamori.schemas import DATASETS, DataKind

__all__ = ["Catalogue", "ConsentMode", "LegalBasis", "Measure", "catalogue", "load_catalogue"]


class LegalBasis(StrEnum):
    CONSENT = "consent"
    JUSTIFIED_ACT = "justified-act"
    EMERGENCY = "emergency"
    SELF_DEFENCE = "self-defence"
    NOT_INFRINGEMENT = "not-infringement"


ConsentMode = Literal["none", "opt-out", "opt-in"]


def _expand(access: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for name, cols in access.items():
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}")
        schema = DATASETS[name]
        if "*" in cols:
            out[name] = schema.column_names
            continue
        unknown = [c for c in cols if c not in schema]
        if unknown:
            raise ValueError(f"dataset {name} has no column(s) {unknown}")
        out[name] = tuple(cols)
    return out


class Measure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^M(1[0-4]|[1-9])$")
    name: str
    name_ja: str
    purpose: str
    purpose_ja: str
    legal_bases: tuple[LegalBasis, ...] = Field(min_length=1)
    consent: ConsentMode
    retention_days: int = Field(gt=0)
    reads: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    writes: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Measure:
        object.__setattr__(self, "reads", _expand(self.reads))
        object.__setattr__(self, "writes", _expand(self.writes))
        if self.consent != "none" and LegalBasis.CONSENT not in self.legal_bases:
            raise ValueError(f"{self.id}: consent mode {self.consent} without consent as a basis")
        if self.consent == "none" and LegalBasis.CONSENT in self.legal_bases:
            raise ValueError(f"{self.id}: consent is a basis but the consent mode is 'none'")
        return self

    @property
    def consent_default(self) -> bool | None:
        """Whether a subscriber who never said anything is in (``None``: not consent-based)."""
        return {"none": None, "opt-out": True, "opt-in": False}[self.consent]

    def may_read(self, dataset: str) -> tuple[str, ...]:
        return self.reads.get(dataset, ())

    def may_write(self, dataset: str) -> tuple[str, ...]:
        return self.writes.get(dataset, ())


class Catalogue(Mapping[str, Measure]):
    def __init__(self, measures: Mapping[str, Measure], registry: Sequence[str] = ()) -> None:
        self._m = dict(measures)
        # Datasets of subscriber records loaded from the ISP's own systems (not measures).
        self.registry: tuple[str, ...] = tuple(registry)

    def __getitem__(self, key: str) -> Measure:
        return self._m[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._m)

    def __len__(self) -> int:
        return len(self._m)

    def consent_based(self) -> list[Measure]:
        return [m for m in self._m.values() if m.consent != "none"]

    def retention_limit(self, dataset: str) -> int | None:
        """Longest retention any measure writing ``dataset`` allows (None if none writes it).

        Configuration may keep a dataset for less, never for more: no purpose would cover it.
        """
        limits = [m.retention_days for m in self._m.values() if dataset in m.writes]
        return max(limits) if limits else None


def load_catalogue(path: Path | None = None) -> Catalogue:
    if path is None:
        text = resources.files("mamori.governance").joinpath("measures.toml").read_text("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    registry = tuple(raw.pop("registry", {}).get("datasets", ()))
    for name in registry:
        # Registry data is loaded without a measure, so it must never hold communications data.
        if name not in DATASETS or any(
            c.kind is DataKind.COMMUNICATIONS for c in DATASETS[name].columns
        ):
            raise ValueError(f"registry dataset {name!r} is unknown or holds communications data")
    measures: dict[str, Measure] = {}
    for mid, body in raw.items():
        try:
            measures[mid] = Measure(id=mid, **body)
        except ValidationError as exc:
            raise ValueError(f"measure catalogue entry {mid}: {exc}") from None
    expected = {f"M{i}" for i in range(1, 15)}
    if set(measures) != expected:
        raise ValueError(f"catalogue must define exactly M1–M14; got {sorted(measures)}")
    return Catalogue(measures, registry)


@cache
def catalogue() -> Catalogue:
    """The catalogue shipped with Mamori."""
    return load_catalogue()
