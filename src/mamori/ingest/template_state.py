"""The collector's saved templates: one small file per exporter, written when it changes.

A single file of every template, rewritten at every flush, grew to 66 MB under a template flood
(20,000 templates of 358 fields), took seconds to write at each flush and at SIGTERM, and had to be
read whole before the collector listened again. Here:

* ``<state>/templates/<exporter>.json`` holds one exporter's templates, sampling rates and init
  times (:meth:`TemplateRegistry.state` of that exporter), written atomically;
* a flush writes only the exporters whose templates changed (new, replaced, withdrawn, evicted,
  expired; sampling learnt), each at most every ``MIN_INTERVAL_S``, and the ones whose templates
  were only announced again at most every ``refresh_every_s`` (their last-seen times, so that a
  restart does not expire them); the stop writes everything pending;
* a start lists the directory and reads nothing: an exporter's file is read when its first packet
  asks for its templates (:meth:`TemplateRegistry.defer`), so the time to listen does not depend
  on how many templates were saved.

The single ``templates.json`` of earlier versions is read once, written out per exporter and
removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from mamori.ingest.netflow.templates import TemplateRegistry

__all__ = ["TemplateState"]

log = logging.getLogger("mamori.ingest.collector")

_SUFFIX = ".json"
MIN_INTERVAL_S = 30.0  # an exporter's file is written at most this often (but at the stop)


class TemplateState:
    """Saves and loads a :class:`TemplateRegistry` per exporter under ``directory``."""

    def __init__(self, directory: Path, legacy: Path | None = None) -> None:
        self.directory = directory
        self.legacy = legacy
        self.counters: Counter[str] = Counter()
        self._saved_at: dict[str, float] = {}  # exporter -> monotonic time of its last write

    def path(self, exporter: str) -> Path:
        # Exporter names are address text; quoting keeps any other text a plain file name.
        return self.directory / f"{quote(exporter, safe='')}{_SUFFIX}"

    def attach(self, registry: TemplateRegistry) -> None:
        """Make the saved exporters known to ``registry`` without reading them; a saved single
        file of an earlier version is read now and rewritten per exporter at the next save."""
        self.directory.mkdir(parents=True, exist_ok=True)
        names = [
            unquote(p.name.removesuffix(_SUFFIX))
            for p in self.directory.iterdir()
            if p.name.endswith(_SUFFIX) and not p.name.startswith(".")
        ]
        registry.defer(names, self.load)
        if self.legacy is not None and self.legacy.exists():
            try:
                registry.restore(json.loads(self.legacy.read_text()), Counter())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.counters["errors.template_state_unreadable"] += 1
                log.warning("collector: saved templates unreadable (%s); ignored", exc)

    def load(self, exporter: str) -> Mapping[str, Any] | None:
        try:
            data: Mapping[str, Any] = json.loads(self.path(exporter).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self.counters["errors.template_state_unreadable"] += 1
            log.warning("collector: saved templates of %s unreadable (%s); ignored", exporter, exc)
            return None
        if not isinstance(data, Mapping) or data.get("format") is None:
            self.counters["errors.template_state_unreadable"] += 1
            return None
        self.counters["templates.restored"] += 1
        return data

    def save(
        self,
        registry: TemplateRegistry,
        now: float,
        *,
        refresh_every_s: float,
        min_interval_s: float = MIN_INTERVAL_S,
        final: bool = False,
    ) -> int:
        """Write the exporters whose state changed once their file is ``min_interval_s`` old,
        and those only refreshed once it is ``refresh_every_s`` old (everything pending when
        ``final``); remove the files of exporters with nothing left. Returns the files written or
        removed. ``now``: a monotonic clock."""
        changed, refreshed = registry.take_changes()

        def age(exporter: str) -> float:
            return now - self._saved_at.get(exporter, -1e18)

        if not final:
            # Under a flood every exporter changes at every flush: each file is written at
            # most every min_interval_s whatever arrives (a kill -9 loses at most that much;
            # exporters announce their templates again anyway).
            waiting = {e for e in changed if age(e) < min_interval_s}
            stale = {e for e in refreshed if age(e) < refresh_every_s}
            registry.keep_changes(changed=waiting, refreshed=stale)
            changed -= waiting
            refreshed -= stale
        done = 0
        for exporter in sorted(changed | refreshed):
            state = registry.state(exporter)
            path = self.path(exporter)
            try:
                if state["templates"] or state["sampling"] or state["init_ms"]:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    _atomic_write(path, json.dumps(state, separators=(",", ":")))
                    self._saved_at[exporter] = now
                else:
                    path.unlink(missing_ok=True)
                    self._saved_at.pop(exporter, None)
            except OSError as exc:  # a full disk: tried again at the next save
                registry.keep_changes(changed=[exporter])
                self.counters["errors.template_state_write"] += 1
                log.warning("collector: templates of %s not saved (%s)", exporter, exc)
                continue
            done += 1
        if done:
            self.counters["templates.state_files_written"] += done
        if self.legacy is not None and self.legacy.exists() and not registry.has_changes():
            with contextlib.suppress(OSError):  # every exporter it held is written out now
                self.legacy.unlink()
        return done


def _atomic_write(path: Path, text: str) -> None:
    # named for the process: decoding processes sharing a port share this directory
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
