"""Plain lists: one IP, IP:port, domain or URL per line; ``#`` starts a comment (whole line or
after the value). The OpenPhish community feed and most blocklists look like this."""

from __future__ import annotations

from pathlib import Path

from mamori.ingest.reputation.common import Rows, text_lines

__all__ = ["parse_plain"]


def parse_plain(path: Path, rows: Rows, fmt: str = "plain") -> None:
    for no, raw in text_lines(path, rows):
        text = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("http") else raw
        text = text.strip()
        if not text:
            continue
        value = text.split()[0]
        try:
            rows.add_value(value)
        except ValueError as exc:
            rows.bad(no, f"{type(exc).__name__}: {exc}")
