"""Reads made ahead of the first page view, so a table of 100,000 rows opens in a page's time.

At start, and then whenever the audit log shows a change to a dataset (or a kept read nears
``[web] kept_read_max_s``), a background thread reads the console's tables through governance —
each under its measure, audited as the console's own access (actor ``web:warm``) — and keeps the
rows (:mod:`mamori.web.grantcache`); it also brings the audit log's index and the mailbox's index
up to date. A page view that then uses the kept rows writes its own ``access`` entry as before,
so the log still shows every person's every read. Nothing is read that no view of the console
reads: the measures are those of the findings, actions, alerts and cases views.

Governance takes one caller at a time: each read holds :data:`grantcache.GOVERNANCE`, as the
console's requests do, so a request that arrives during a read waits for that one read only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from mamori.governance import AccessRefused, Governance
from mamori.governance.roles import (
    ACTION_MEASURES,
    ALERT_MEASURES,
    CASE_MEASURES,
    FINDING_MEASURES,
)
from mamori.web import data, grantcache
from mamori.web.auditindex import audit_index
from mamori.web.maildir import read_mailbox

__all__ = ["ACTOR", "Warmer", "pairs"]

ACTOR = grantcache.WARM_ACTOR
TABLES = (
    ("findings", FINDING_MEASURES),
    ("actions", ACTION_MEASURES),
    ("notifications", ALERT_MEASURES),
    ("cases", CASE_MEASURES),
)
log = logging.getLogger(__name__)


def pairs(gov: Governance) -> Iterator[tuple[str, str]]:
    """(measure, dataset) of every read the console's tables make, where the measure is switched
    on and may read the dataset."""
    for dataset, measures in TABLES:
        for m in measures:
            measure = gov.catalogue.get(m)
            if measure is not None and gov.config.measure_enabled(m) and measure.may_read(dataset):
                yield m, dataset


class Warmer:
    """The background thread: one pass at start, then a look every ``interval_s``."""

    def __init__(self, gov: Governance, interval_s: float) -> None:
        self.gov = gov
        self.interval_s = interval_s
        self.passes = 0  # passes completed (tests and the bench wait on it)
        self.done = threading.Event()  # set after the first pass
        self._stop = threading.Event()
        self._refused: dict[tuple[str, str], int] = {}  # refused at this dataset version
        self._thread = threading.Thread(target=self._run, name="console-warm", daemon=True)

    def start(self) -> Warmer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a pass that failed is retried; pages read on their own meanwhile
                log.exception("warming the console's reads failed")
            self.passes += 1
            self.done.set()
            self._stop.wait(self.interval_s)

    def run_once(self) -> int:
        """Bring every kept read up to date; how many governance reads that took."""
        gov = self.gov
        with grantcache.GOVERNANCE:
            audit_index(gov).table()
        mailbox: Path | None = gov.config.web.mailbox_dir
        if mailbox is not None and mailbox.is_dir():
            read_mailbox(mailbox)
        reads = 0
        # a read kept for less than two more looks is made again now, before a page needs it
        margin = 2 * self.interval_s
        for m, dataset in pairs(gov):
            if self._stop.is_set():
                break
            with grantcache.GOVERNANCE:
                version = audit_index(gov).changes(dataset)
                if self._refused.get((m, dataset)) == version or grantcache.is_fresh(
                    gov, m, dataset, None, margin_s=margin
                ):
                    continue
                try:
                    grantcache.keep(gov, m, dataset, None, ACTOR)
                except AccessRefused:
                    # audited by governance; not asked again until something changes
                    self._refused[(m, dataset)] = version
                    continue
                reads += 1
        if reads:
            # what the pages make of the rows (one row per alert, per case, the current version
            # of each action …) is made now too, from the rows just kept
            for make, measures in (
                (data.findings_table, FINDING_MEASURES),
                (data.actions_table, ACTION_MEASURES),
                (data.alerts_table, ALERT_MEASURES),
                (data.cases_table, CASE_MEASURES),
            ):
                with grantcache.GOVERNANCE:
                    make(gov, measures, ACTOR)
        return reads
