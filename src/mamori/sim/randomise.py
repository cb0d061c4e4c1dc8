"""Randomised worlds: each seed draws the world's parameters, so no detector fits one world.

:func:`randomise` takes a scenario and a seed and returns the scenario with its parameters drawn
from wide ranges around the preset (botnet sizes, beacon periods, jitter, C&C ports, the benign
periodic services' shares and intervals, the contract mix and CGNAT share, the feeds' delay),
plus the drawn values for ``truth.json``. The ranges are what the world can plausibly be, set
once here and never moved to please a detector: a detector is scored on seeds it was not built
on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mamori.sim.config import ScenarioConfig

__all__ = ["CC_PORTS", "loguniform", "randomise"]

#: ports C&C servers are seen on in the wild (HTTPS, alternative HTTP, Emotet's 7080/8080,
#: TrickBot's 447/449, mail-looking 995, a few high ports)
CC_PORTS = (443, 80, 8080, 7080, 8443, 4443, 447, 449, 995, 2222, 3389, 50000)


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _scale(rng: np.random.Generator, n: int, lo: float = 0.5, hi: float = 2.0) -> int:
    return max(1, round(n * loguniform(rng, lo, hi))) if n else 0


def randomise(cfg: ScenarioConfig, seed: int) -> tuple[ScenarioConfig, dict[str, Any]]:
    """``cfg`` with its world parameters drawn from ``seed``, and the drawn values."""
    rng = np.random.default_rng([seed, 11])
    share_cgnat = float(rng.uniform(0.05, 0.6))
    share_static = float(rng.uniform(0.01, 0.06))
    share_ipoe = float(rng.uniform(0.1, 0.9) * (1.0 - share_cgnat - share_static))
    n_ports = int(rng.integers(1, 4))
    ports = tuple(int(p) for p in rng.choice(CC_PORTS, size=n_ports, replace=False))
    iot = cfg.iot.model_copy(
        update={
            "bots": _scale(rng, cfg.iot.bots),
            "keepalive_s": loguniform(rng, 30.0, 300.0),
            "cc_port": int(rng.choice([23, 2323, 38241, 48101, 6667, 1312, 9506])),
            "scans_per_bot_hour": _scale(rng, cfg.iot.scans_per_bot_hour, 0.25, 2.0),
        }
    )
    pc = cfg.pc.model_copy(
        update={
            "bots": _scale(rng, cfg.pc.bots),
            "beacon_s": loguniform(rng, 60.0, 1800.0),
            "jitter": float(rng.uniform(0.0, 0.5)),
            "cc_ports": ports,
            "request_bytes": int(rng.integers(200, 2000)),
            "rotate_hours": cfg.pc.rotate_hours * loguniform(rng, 0.5, 3.0),
        }
    )
    stealth = cfg.stealth.model_copy(
        update={
            "bots": _scale(rng, cfg.stealth.bots),
            "beacon_s": loguniform(rng, 900.0, 7200.0),
            "jitter": float(rng.uniform(0.1, 0.6)),
            "cc_port": int(rng.choice(CC_PORTS)),
        }
    )
    feeds = cfg.feeds.model_copy(
        update={
            "listing_delay_hours": cfg.feeds.listing_delay_hours * loguniform(rng, 0.5, 2.0),
            "unlisted_share": float(rng.uniform(0.1, 0.4)),
        }
    )
    update: dict[str, Any] = {
        "share_cgnat": share_cgnat,
        "share_static": share_static,
        "share_ipoe": share_ipoe,
        "cgnat_block_size": int(rng.choice([256, 512, 1024, 2048])),
        "ntp_share": float(rng.uniform(0.3, 0.9)),
        "ntp_interval_s": float(rng.choice([64.0, 128.0, 256.0, 512.0, 1024.0])),
        "update_share": float(rng.uniform(0.2, 0.8)),
        "update_interval_s": loguniform(rng, 1800.0, 21600.0),
        "camera_share": float(rng.uniform(0.02, 0.2)),
        "camera_interval_s": loguniform(rng, 30.0, 600.0),
        "messaging_share": float(rng.uniform(0.2, 0.8)),
        "messaging_interval_s": loguniform(rng, 60.0, 1800.0),
        "iot": iot,
        "pc": pc,
        "stealth": stealth,
        "feeds": feeds,
    }
    drawn = {
        k: (v.model_dump() if hasattr(v, "model_dump") else v)
        for k, v in update.items()
        if k != "feeds"
    }
    drawn["feeds"] = {
        "listing_delay_hours": feeds.listing_delay_hours,
        "unlisted_share": feeds.unlisted_share,
    }
    return cfg.model_copy(update=update), drawn
