"""One entry point for every export format: the list, the guard, then the writer."""

from __future__ import annotations

import json
from typing import Literal

from mamori.governance import Governance
from mamori.share.c2list import guard, reviewed_list
from mamori.share.csvio import list_to_csv
from mamori.share.misp import list_to_event
from mamori.share.stix import bundle, list_to_objects

__all__ = ["ExportFormat", "export"]

ExportFormat = Literal["stix", "misp", "csv"]


def export(
    gov: Governance,
    fmt: ExportFormat,
    actor: str,
    *,
    tlp: str = "amber+strict",
    min_score: float = 0.0,
    include_candidates: bool = False,
) -> tuple[bytes, int]:
    """The C&C list in ``fmt`` and the number of endpoints in it: confirmed and corroborated
    endpoints, and candidates only with ``include_candidates`` (audited in the event's detail).

    Raises :class:`~mamori.share.c2list.ExportRefused` (audited) if anything but aggregated
    endpoint data outside the ISP's subscriber pools would leave.
    """
    reviewed = reviewed_list(gov, actor, min_score=min_score,
                             include_candidates=include_candidates)  # fmt: skip
    table = reviewed.table
    guard(gov, table, actor, what=f"export-{fmt}")
    isp = gov.config.isp_name
    if fmt == "stix":
        data = json.dumps(bundle(list_to_objects(table, isp, tlp)), separators=(",", ":")).encode()
    elif fmt == "misp":
        data = json.dumps(list_to_event(table, isp, tlp), separators=(",", ":")).encode()
    elif fmt == "csv":
        data = list_to_csv(table)
    else:
        raise ValueError(f"unknown format {fmt!r}; one of stix, misp, csv")
    gov.audit.append(
        actor=actor,
        event="share-export",
        measure="M3",
        dataset="findings",
        columns=table.column_names,
        detail={
            "format": fmt,
            "endpoints": table.num_rows,
            "bytes": len(data),
            "tlp": tlp,
            "include_candidates": include_candidates,
            "shared": reviewed.counts(),
            "held_back": reviewed.held_back,
        },
    )
    return data, table.num_rows
