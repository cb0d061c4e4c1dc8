"""Third-party reports about the ISP's addresses (Shadowserver, X-ARF, CSV, JSON) → findings."""

from mamori.ingest.reports.load import LoadResult, load_report
from mamori.ingest.reports.parse import (
    REPORT_SCHEMA,
    BadRecord,
    ReportFormat,
    ReportKind,
    ReportParse,
    parse_report,
    parse_report_text,
)

__all__ = [
    "REPORT_SCHEMA",
    "BadRecord",
    "LoadResult",
    "ReportFormat",
    "ReportKind",
    "ReportParse",
    "load_report",
    "parse_report",
    "parse_report_text",
]
