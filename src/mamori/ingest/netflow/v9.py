"""NetFlow v9 (RFC 3954): header, template / options-template / data flowsets."""

from __future__ import annotations

import struct
from typing import Final

from mamori.ingest.netflow.batch import Batch
from mamori.ingest.netflow.templates import V9_FIELDS, Template, field_spec

__all__ = ["HEADER", "parse_v9", "template_set"]

HEADER: Final = struct.Struct("!HHIIII")
_SET: Final = struct.Struct("!HH")
_OPT: Final = struct.Struct("!HHH")


def parse_v9(payload: bytes, exporter: str, received: float, batch: Batch) -> None:
    """Walk one NetFlow v9 datagram: register templates, queue data flowsets."""
    size = len(payload)
    if size < HEADER.size:
        batch.problem("errors.truncated", exporter, "v9 header")
        return
    _, _, uptime, secs, _, source_id = HEADER.unpack_from(payload)
    batch.counters["packets.v9"] += 1
    export_ms = secs * 1000
    view = memoryview(payload)
    pos = HEADER.size
    while size - pos >= 4:
        set_id, set_len = _SET.unpack_from(payload, pos)
        if set_len < 4:
            if set_id or set_len or any(view[pos:]):
                batch.problem("errors.set_length", exporter, f"v9 flowset length {set_len}")
            return
        end = pos + set_len
        if end > size:
            batch.problem("errors.truncated", exporter, f"v9 flowset {set_id}")
            end = size
        body = view[pos + 4 : end]
        if set_id in (0, 1):
            template_set(body, set_id, exporter, source_id, received, batch)
        elif set_id >= 256:
            batch.add_data(exporter, source_id, 9, set_id, body, export_ms, uptime, received)
        else:
            batch.problem("errors.reserved_set", exporter, f"v9 flowset id {set_id}")
        pos = end


def template_set(
    body: memoryview, set_id: int, exporter: str, source_id: int, received: float, batch: Batch
) -> None:
    """Register the templates of one template (0) or options template (1) flowset."""
    key = (9, set_id, bytes(body))
    parsed = batch.parsed_sets.get(key)
    if parsed is None:
        parse = _templates if set_id == 0 else _options_templates
        parsed, clean = parse(body, exporter, batch)
        if clean:
            batch.parsed_sets.put(key, parsed)
    for template in parsed:
        batch.add_template(exporter, source_id, template, received)


Parsed = tuple[tuple[Template, ...], bool]  # templates, and whether the set had no problem


def _templates(body: memoryview, exporter: str, batch: Batch) -> Parsed:
    size = len(body)
    pos = 0
    out: list[Template] = []
    clean = True
    while size - pos >= 4:
        tid, count = _SET.unpack_from(body, pos)
        pos += 4
        if tid == 0 and count == 0:
            break  # padding
        if count == 0:
            batch.problem("templates.zero_fields", exporter, f"v9 template {tid}")
            clean = False
            continue
        if pos + 4 * count > size:
            batch.problem("errors.truncated", exporter, f"v9 template {tid}")
            return tuple(out), False
        fields = tuple(map(V9_FIELDS.__getitem__, _SET.iter_unpack(body[pos : pos + 4 * count])))
        pos += 4 * count
        if tid < 256:
            batch.problem("templates.bad_id", exporter, f"v9 template id {tid}")
            clean = False
            continue
        out.append(Template(9, tid, fields))
    return tuple(out), clean


def _options_templates(body: memoryview, exporter: str, batch: Batch) -> Parsed:
    size = len(body)
    pos = 0
    out: list[Template] = []
    clean = True
    while size - pos >= _OPT.size:
        tid, scope_len, opt_len = _OPT.unpack_from(body, pos)
        if tid == 0 and scope_len == 0 and opt_len == 0:
            break  # padding
        pos += _OPT.size
        if scope_len % 4 or opt_len % 4:
            batch.problem("errors.bad_template", exporter, f"v9 options template {tid}")
            return tuple(out), False
        if pos + scope_len + opt_len > size:
            batch.problem("errors.truncated", exporter, f"v9 options template {tid}")
            return tuple(out), False
        fields = []
        for i in range(0, scope_len + opt_len, 4):
            fid, length = _SET.unpack_from(body, pos + i)
            fields.append(field_spec(fid, length, scope=i < scope_len))
        pos += scope_len + opt_len
        if tid < 256:
            batch.problem("templates.bad_id", exporter, f"v9 options template id {tid}")
            clean = False
            continue
        out.append(Template(9, tid, tuple(fields), options=True))
    return tuple(out), clean
