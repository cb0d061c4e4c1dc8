"""Reputation feeds: C&C servers, first-stage (payload delivery) sites, malware and phishing sites.

One module per format family (``abusech``, ``stix``, ``misp``, ``plain``), a common row builder
(``common``) and the loader (``loader``): :func:`load_feed` stores a feed as its source's new
list, :func:`parse_feed` only parses, :func:`current_reputation` reads what is in force.
"""

from mamori.ingest.reputation.common import CATEGORIES, LineError, LoadReport
from mamori.ingest.reputation.loader import (
    FORMATS,
    FeedError,
    current_reputation,
    current_reputation_grant,
    detect_format,
    load_feed,
    parse_feed,
)

__all__ = [
    "CATEGORIES",
    "FORMATS",
    "FeedError",
    "LineError",
    "LoadReport",
    "current_reputation",
    "current_reputation_grant",
    "detect_format",
    "load_feed",
    "parse_feed",
]
