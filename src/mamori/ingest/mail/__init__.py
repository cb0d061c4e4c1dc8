"""Mail-server logs (Postfix, Dovecot, Exim) and queue samples for SMTP AUTH abuse (M11, M12):
:mod:`.parse` reads the lines, :mod:`.load` stores their events (files, or a live log followed),
:mod:`.queue` samples the queue size."""

from mamori.ingest.mail.load import (
    FollowBatch,
    MailFollower,
    MailIngestReport,
    ingest_mail_file,
    measure_for_logs,
    store_events,
)
from mamori.ingest.mail.parse import EVENTS, FORMATS, MailFormat, MailParser, ParseCounts
from mamori.ingest.mail.queue import QueueError, QueueSample, queue_counts, sample_queue

__all__ = [
    "EVENTS",
    "FORMATS",
    "FollowBatch",
    "MailFollower",
    "MailFormat",
    "MailIngestReport",
    "MailParser",
    "ParseCounts",
    "QueueError",
    "QueueSample",
    "ingest_mail_file",
    "measure_for_logs",
    "queue_counts",
    "sample_queue",
    "store_events",
]
