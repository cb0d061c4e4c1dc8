"""Attribution: (address, port, time) → the subscriber who held it.

The only module that joins communications data with subscriber identity; always through
governance, always audited. See :mod:`mamori.attribute.lookup`.
"""

from mamori.attribute.lookup import (
    QUERY_SCHEMA,
    RESULT_SCHEMA,
    STATUSES,
    Attribution,
    attribute,
    attribute_one,
)

__all__ = [
    "QUERY_SCHEMA",
    "RESULT_SCHEMA",
    "STATUSES",
    "Attribution",
    "attribute",
    "attribute_one",
]
