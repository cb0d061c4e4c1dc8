"""IPFIX (RFC 7011): message header, template / options-template / data sets."""

from __future__ import annotations

import struct
from typing import Final

from mamori.ingest.netflow.batch import Batch
from mamori.ingest.netflow.templates import Template, field_spec

__all__ = ["HEADER", "parse_ipfix", "template_set"]

HEADER: Final = struct.Struct("!HHIII")
_PAIR: Final = struct.Struct("!HH")
_U32: Final = struct.Struct("!I")
_TEMPLATE_SET: Final = 2
_OPTIONS_SET: Final = 3


def parse_ipfix(payload: bytes, exporter: str, received: float, batch: Batch) -> None:
    """Walk one IPFIX message: register templates, queue data sets."""
    if len(payload) < HEADER.size:
        batch.problem("errors.truncated", exporter, "IPFIX header")
        return
    _, length, export_secs, _, domain = HEADER.unpack_from(payload)
    batch.counters["packets.ipfix"] += 1
    size = len(payload)
    if length < HEADER.size:
        batch.problem("errors.bad_length", exporter, f"IPFIX length {length}")
        return
    if length > size:
        batch.problem("errors.truncated", exporter, f"IPFIX length {length} > {size}")
    elif length < size:
        batch.problem("errors.trailing", exporter, f"IPFIX length {length} < {size}")
        size = length
    export_ms = export_secs * 1000
    view = memoryview(payload)[:size]
    pos = HEADER.size
    while size - pos >= 4:
        set_id, set_len = _PAIR.unpack_from(payload, pos)
        if set_len < 4:
            batch.problem("errors.set_length", exporter, f"IPFIX set length {set_len}")
            return
        end = pos + set_len
        if end > size:
            if length <= size:  # else the whole message was already counted as truncated
                batch.problem("errors.truncated", exporter, f"IPFIX set {set_id}")
            end = size
        body = view[pos + 4 : end]
        if set_id in (_TEMPLATE_SET, _OPTIONS_SET):
            template_set(body, set_id, exporter, domain, received, batch)
        elif set_id >= 256:
            batch.add_data(exporter, domain, 10, set_id, body, export_ms, -1, received)
        else:
            batch.problem("errors.reserved_set", exporter, f"IPFIX set id {set_id}")
        pos = end
    if pos < size:
        batch.problem("errors.trailing", exporter, "IPFIX bytes after the last set")


def template_set(
    body: memoryview, set_id: int, exporter: str, domain: int, received: float, batch: Batch
) -> None:
    """Register the templates of one template (2) or options template (3) set."""
    key = (10, set_id, bytes(body))
    parsed = batch.parsed_sets.get(key)
    if parsed is None:
        parsed, clean = _templates(body, exporter, domain, batch, set_id == _OPTIONS_SET)
        if clean:
            batch.parsed_sets.put(key, parsed)
    for template in parsed:
        batch.add_template(exporter, domain, template, received)


def _templates(
    body: memoryview, exporter: str, domain: int, batch: Batch, options: bool
) -> tuple[tuple[Template, ...], bool]:
    """Parse a (options) template set. Returns the templates and whether the set was clean
    (withdrawals and problems make it not worth caching)."""
    size = len(body)
    pos = 0
    out: list[Template] = []
    clean = True
    while size - pos >= 4:
        tid, count = _PAIR.unpack_from(body, pos)
        if tid == 0 and count == 0:
            break  # padding
        pos += 4
        if count == 0:
            clean = False
            if tid == (_OPTIONS_SET if options else _TEMPLATE_SET):
                batch.registry.withdraw_all((exporter, 10, domain), options, batch.counters)
            else:
                batch.registry.withdraw((exporter, 10, domain, tid), batch.counters)
            continue
        scope = 0
        if options:
            if size - pos < 2:
                batch.problem("errors.truncated", exporter, f"IPFIX options template {tid}")
                return tuple(out), False
            scope = int.from_bytes(body[pos : pos + 2], "big")
            pos += 2
            if scope == 0 or scope > count:
                batch.problem("errors.bad_template", exporter, f"IPFIX scope count {scope}")
                return tuple(out), False
        fields = []
        for i in range(count):
            if size - pos < 4:
                batch.problem("errors.truncated", exporter, f"IPFIX template {tid}")
                return tuple(out), False
            fid, length = _PAIR.unpack_from(body, pos)
            pos += 4
            enterprise = 0
            if fid & 0x8000:
                if size - pos < 4:
                    batch.problem("errors.truncated", exporter, f"IPFIX template {tid}")
                    return tuple(out), False
                (enterprise,) = _U32.unpack_from(body, pos)
                pos += 4
                fid &= 0x7FFF
            fields.append(field_spec(fid, length, enterprise, i < scope))
        if tid < 256:
            batch.problem("templates.bad_id", exporter, f"IPFIX template id {tid}")
            clean = False
            continue
        out.append(Template(10, tid, tuple(fields), options))
    return tuple(out), clean
