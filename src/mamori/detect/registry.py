"""Every detector Mamori has, by name: what ``mamori detect NAME`` runs and what
``mamori config check`` prints under ``[detect.NAME]``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mamori.detect.base import Detector, DetectorParams, section
from mamori.detect.c2 import C2Detector
from mamori.detect.ddos import DdosDetector
from mamori.detect.reflection import ReflectionDetector
from mamori.detect.reputation_match import InfectedDetector
from mamori.detect.spoofing import SpoofingDetector

__all__ = ["DETECTORS", "NOT_BUILT", "DetectorConfigError", "all_params", "build", "params_for"]

DETECTORS: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (C2Detector, DdosDetector, InfectedDetector, ReflectionDetector, SpoofingDetector)
}
#: detectors the command line names but that are not built yet (they exit 69)
NOT_BUILT = ("smtp",)


class DetectorConfigError(ValueError):
    """A ``[detect.NAME]`` section is invalid; the message names file keys and what is allowed."""


def params_for(config_detect: Mapping[str, Any], name: str) -> DetectorParams:
    """``[detect.NAME]`` validated against the detector's parameter model."""
    cls = DETECTORS.get(name)
    if cls is None:
        raise DetectorConfigError(
            f"[detect.{name}]: no such detector; known: {', '.join(sorted(DETECTORS))}"
        )
    try:
        params: DetectorParams = cls.Params(**section(config_detect, name))
    except ValidationError as exc:
        problems = "; ".join(
            f"detect.{name}.{'.'.join(str(p) for p in e['loc'])}"
            + ("" if isinstance(e.get("input"), dict) else f" = {e.get('input')!r}")
            + f": {e['msg']}"
            for e in exc.errors()
        )
        raise DetectorConfigError(f"invalid [detect.{name}]: {problems}") from None
    return params


def all_params(config_detect: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every detector's effective parameters (defaults overlaid by ``[detect.NAME]``), for
    ``config check``; an unknown section name is an error."""
    for name in config_detect:
        if name not in DETECTORS:
            raise DetectorConfigError(
                f"[detect.{name}]: no such detector; known: {', '.join(sorted(DETECTORS))}"
            )
    return {
        name: {
            "measure": cls.measure,
            "params": params_for(config_detect, name).model_dump(mode="json"),
        }
        for name, cls in sorted(DETECTORS.items())
    }


def build(name: str, config_detect: Mapping[str, Any], **options: Any) -> Detector:
    """The detector ``name`` with its configured parameters; ``options`` choose what the run
    does (e.g. ``write=False``)."""
    params = params_for(config_detect, name)
    detector: Detector = DETECTORS[name](params, **options)
    return detector
