"""Mail queue size samples (``mamori ingest mail --queue``): the trigger of M11.

Postfix's ``postqueue -j`` prints one JSON object per queued message (queue name, sender, each
recipient). Only counts are kept: messages, recipients still to be delivered, messages in the
deferred queue. The objects are read with Arrow's JSON reader, not one by one.
"""

from __future__ import annotations

import io
import socket
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pydantic import BaseModel

from mamori.governance import Governance
from mamori.schemas import MAIL_QUEUE

__all__ = ["QueueError", "QueueSample", "queue_counts", "sample_queue"]

# only what is counted is read: a recipient's address is never parsed into a value
_SCHEMA = pa.schema(
    [
        ("queue_name", pa.string()),
        ("recipients", pa.list_(pa.struct([("delay_reason", pa.string())]))),
    ]
)


class QueueError(RuntimeError):
    """The queue could not be read (the command failed or printed something else)."""


class QueueSample(BaseModel):
    ts: datetime
    server: str
    messages: int
    recipients: int
    deferred: int
    stored: bool


def queue_counts(output: bytes) -> tuple[int, int, int]:
    """(messages, recipients, deferred) from ``postqueue -j`` output."""
    if not output.strip():
        return 0, 0, 0
    try:
        t = pj.read_json(
            io.BytesIO(output),
            parse_options=pj.ParseOptions(
                explicit_schema=_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
    except pa.ArrowInvalid as exc:
        raise QueueError(f"not postqueue -j output: {exc}") from None
    rcpt = pc.sum(pc.fill_null(pc.list_value_length(t.column("recipients")), 0)).as_py() or 0
    deferred = pc.sum(pc.equal(t.column("queue_name"), "deferred")).as_py() or 0
    return t.num_rows, int(rcpt), int(deferred)


def sample_queue(
    gov: Governance,
    *,
    actor: str,
    command: Sequence[str] | None = None,
    server: str | None = None,
    timeout_s: float = 30.0,
    dry_run: bool = False,
) -> QueueSample:
    """Run the queue command once and store the counts in ``mail_queue`` (under M11)."""
    cmd = list(command or gov.config.mail.queue_command)
    at = datetime.now(UTC)
    now = at.replace(microsecond=at.microsecond // 1000 * 1000)  # the store keeps ms
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QueueError(f"{' '.join(cmd)}: {exc}") from None
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip()[:300]
        raise QueueError(f"{' '.join(cmd)} exited {proc.returncode}: {why}")
    messages, recipients, deferred = queue_counts(proc.stdout)
    host = (server or gov.config.mail.server or socket.gethostname())[:253]
    if not dry_run:
        row = {
            "ts": [now],
            "server": [host],
            "messages": [messages],
            "recipients": [recipients],
            "deferred": [deferred],
        }
        gov.write("M11", MAIL_QUEUE.name, pa.table(row), actor)
    return QueueSample(
        ts=now,
        server=host,
        messages=messages,
        recipients=recipients,
        deferred=deferred,
        stored=not dry_run,
    )
