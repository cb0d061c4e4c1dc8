"""Vectorised walk of a whole batch of packed datagrams (see :class:`.decoder.PackedDatagrams`).

The common case is walked with NumPy across all datagrams at once:

* version and header fields of every datagram are read together;
* v9 flowsets / IPFIX sets are walked as a wavefront: the k-th set of every datagram at once;
* NetFlow v5 datagrams are gathered into one structured-dtype pass.

What cannot be decided from the bytes alone is replayed in datagram order with the existing
per-datagram code, in one Python loop over *events* only: template and options-template sets (a
set that only refreshes a template already registered changes nothing), whole datagrams that are
in any way unusual (bad lengths, truncation, reserved sets, sFlow, unknown versions: see
``slow``), and data sets whose template is unknown, options, variable-length or expiring. After
each event the templates, sampling rates and system-init times of the batch's data keys are looked
up again; where they changed, a new *segment* starts. Every other data set is resolved against
the state of its segment with array lookups, and the records of each template are gathered with a
single fancy index into one contiguous buffer, decoded by :class:`.batch.Batch` like any other.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from mamori.ingest.netflow import ipfix, v9
from mamori.ingest.netflow.batch import Batch, Bulk
from mamori.ingest.netflow.templates import SamplingState, Template, TemplateKey
from mamori.ingest.netflow.v5 import MAX_RECORDS, RECORD_LENGTH, V5_TEMPLATE

__all__ = ["walk"]

I64 = npt.NDArray[np.int64]
_MAX_SETS: Final = 64  # datagrams with more sets than this take the per-datagram path
_NO_SAMPLING: Final = SamplingState()

# (template, rate, sampling, init ms) of a data key, or None: handled one by one.
Resolved = tuple[Template, int, SamplingState, int | None] | None


_I64_MAX = int(np.iinfo(np.int64).max)


def _same(a: Sequence[Resolved], b: Sequence[Resolved]) -> bool:
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            if x is not y:
                return False
        elif x[0] is not y[0] or x[1:] != y[1:]:
            return False
    return True


def walk(
    data: bytes,
    offsets: I64,
    lengths: I64,
    exporter: npt.NDArray[np.int32],
    exporters: Sequence[str],
    received: npt.NDArray[np.float64],
    batch: Batch,
    slow: Callable[[int], None],
    stats: Counter[str] | None = None,
) -> bool:
    """Decode a batch into ``batch``; ``slow(i)`` decodes datagram ``i`` with the per-datagram
    code (it must catch its own errors). Returns False, having changed nothing, where a
    template could expire within the batch: the caller then decodes it datagram by datagram.

    ``stats`` (optional) counts what took which path: ``datagrams.vector`` (v5 / v9 / IPFIX
    datagrams walked as arrays), ``datagrams.per_datagram`` (given to ``slow``),
    ``sets.template`` / ``sets.template_refresh_only`` (template sets replayed in Python, and how
    many of them only refreshed), ``sets.data_vector`` and ``sets.data_python`` (data sets
    decoded in bulk, or one by one: options, unknown or variable-length templates), and
    ``segments`` (state changes that started a new segment)."""
    if stats is None:
        stats = Counter()
    n = len(offsets)
    if n == 0:
        return True
    if not data:
        stats["datagrams.per_datagram"] += n
        for i in range(n):
            slow(i)
        return True
    u8 = np.frombuffer(data, dtype=np.uint8)
    off, ln = offsets, lengths
    received_ms = (received * 1000).astype(np.int64)  # as Batch.add_fixed rounds it

    def u16(pos: I64) -> I64:
        # mode="clip": fields past the end are garbage, only used where the datagram has them
        return (u8.take(pos, mode="clip").astype(np.int64) << 8) | u8.take(pos + 1, mode="clip")

    def u32(pos: I64) -> I64:
        return (u16(pos) << 16) | u16(pos + 2)

    ver = np.where(ln >= 2, u16(off), -1)
    is5 = (ver == 5) & (ln >= 24)
    is9 = (ver == 9) & (ln >= 20)
    is10 = (ver == 10) & (ln >= 16)
    odd = ~(is5 | is9 | is10)
    h2, h4, h8, h12, h16 = (u16(off + 2), u32(off + 4), u32(off + 8), u32(off + 12), u32(off + 16))
    is10 &= h2 == ln  # length field disagreeing with the datagram: per-datagram path
    odd |= (ver == 10) & ~is10

    count5 = np.where(is5, h2, 0)
    ok5 = is5 & (count5 <= (ln - 24) // RECORD_LENGTH) & (count5 <= MAX_RECORDS)
    odd |= is5 & ~ok5

    # ---- v9 / IPFIX: sets as a wavefront
    cand = np.flatnonzero(is9 | is10)
    c_ver = ver[cand]
    c_end = off[cand] + ln[cand]
    pos = off[cand] + np.where(c_ver == 9, 20, 16)
    tmpl_lo = np.where(c_ver == 9, 0, 2)
    alive = np.arange(cand.size)
    bad_c = np.zeros(cand.size, dtype=np.bool_)
    parts: list[tuple[I64, I64, I64, I64, I64]] = []  # candidate, k, set id, start, end
    for k in range(_MAX_SETS):
        if not alive.size:
            break
        rem = c_end[alive] - pos[alive]
        go = rem >= 4
        stop = alive[~go]
        # IPFIX: bytes after the last set are a problem the per-datagram path counts
        bad_c[stop[(c_ver[stop] == 10) & (rem[~go] != 0)]] = True
        alive = alive[go]
        a = pos[alive]
        sid, slen = u16(a), u16(a + 2)
        ok = (slen >= 4) & (a + slen <= c_end[alive])
        ok &= (sid >= 256) | (sid == tmpl_lo[alive]) | (sid == tmpl_lo[alive] + 1)
        bad_c[alive[~ok]] = True
        alive, a, sid, slen = alive[ok], a[ok], sid[ok], slen[ok]
        parts.append((alive, np.full(alive.size, k, dtype=np.int64), sid, a + 4, a + slen))
        pos[alive] = a + slen
    bad_c[alive] = True  # too many sets
    odd[cand[bad_c]] = True
    good_c = ~bad_c

    # All sets of good datagrams and all odd datagrams, in datagram order then set order.
    empty = np.zeros(0, dtype=np.int64)
    s_c, s_k, s_id, s_start, s_end = (
        np.concatenate([p[i] for p in parts]) if parts else empty for i in range(5)
    )
    keep = good_c[s_c]
    s_dg = cand[s_c[keep]]
    s_k, s_id, s_start, s_end = s_k[keep], s_id[keep], s_start[keep], s_end[keep]
    odd_dg = np.flatnonzero(odd)
    e_dg = np.concatenate([s_dg, odd_dg])
    e_k = np.concatenate([s_k, np.full(odd_dg.size, -1, dtype=np.int64)])
    order = np.lexsort((e_k, e_dg))
    e_dg = e_dg[order]
    e_id = np.concatenate([s_id, np.full(odd_dg.size, -1, dtype=np.int64)])[order]
    e_start = np.concatenate([s_start, np.zeros(odd_dg.size, dtype=np.int64)])[order]
    e_end = np.concatenate([s_end, np.zeros(odd_dg.size, dtype=np.int64)])[order]
    m = e_dg.size
    is_data = e_id >= 256
    e_ver = ver[e_dg]
    e_domain = np.where(e_ver == 9, h16[e_dg], h12[e_dg])
    e_export = np.where(e_ver == 9, h8[e_dg], h4[e_dg]) * 1000
    e_uptime = np.where(e_ver == 9, h4[e_dg], -1)
    e_exp = exporter[e_dg].astype(np.int64)

    # Data keys (exporter, version, domain, template id) of the batch.
    d_pos = np.flatnonzero(is_data)
    if len(exporters) < 1 << 14:  # one int64 per key: exporter, version, domain, template id
        packed_key = (
            ((e_exp[d_pos] * 2 + (e_ver[d_pos] == 10)) << 48)
            | (e_domain[d_pos] << 16)
            | e_id[d_pos]
        )
        uk, kinv = np.unique(packed_key, return_inverse=True)
        ukeys = np.stack(
            [uk >> 49, np.where((uk >> 48) & 1, 10, 9), (uk >> 16) & 0xFFFFFFFF, uk & 0xFFFF],
            axis=1,
        )
    else:
        kcols = np.stack([e_exp[d_pos], e_ver[d_pos], e_domain[d_pos], e_id[d_pos]], axis=1)
        ukeys, kinv = np.unique(kcols, axis=0, return_inverse=True)
    kinv = kinv.reshape(-1)
    keys: list[TemplateKey] = [
        (exporters[int(x)], int(v), int(d), int(t)) for x, v, d, t in ukeys.tolist()
    ]
    e_key = np.full(m, -1, dtype=np.int64)
    e_key[d_pos] = kinv
    key_pos = [d_pos[kinv == i].tolist() for i in range(len(keys))]

    registry, pending = batch.registry, batch.pending

    # A template could expire within the batch: the caller takes the per-datagram path, which
    # expires templates in exact datagram order. (Templates put during the batch are seen at
    # a receive time of the batch.)
    lo, hi = float(received.min()), float(received.max())
    for key in keys:
        entry = registry.entry(key)
        if entry is not None:
            lo = min(lo, entry[1])
    if hi - lo > registry.timeout_s:
        return False

    # ---- v5: every well-formed datagram in one pass
    if ok5.any():
        batch.counters["packets.v5"] += int(ok5.sum())
        dg5 = np.flatnonzero(ok5 & (count5 > 0))
        if dg5.size:
            sampling = u16(off[dg5] + 22) & 0x3FFF
            _emit(
                batch,
                u8,
                V5_TEMPLATE,
                off[dg5] + 24,
                count5[dg5],
                _exporter_map(batch, exporters)[exporter[dg5]],
                np.full(dg5.size, -1, dtype=np.int64),
                h8[dg5] * 1000 + h12[dg5] // 1_000_000,
                h4[dg5],
                sampling.astype(np.uint64),
                np.full(dg5.size, batch.snapshot_index(_NO_SAMPLING), dtype=np.int64),
                received_ms[dg5],
            )

    stats["datagrams.vector"] += int(good_c.sum() + ok5.sum())
    stats["datagrams.per_datagram"] += int(odd.sum())
    batch.counters["packets.v9"] += int((good_c & (c_ver == 9)).sum())
    batch.counters["packets.ipfix"] += int((good_c & (c_ver == 10)).sum())
    if m == 0:
        return True

    def resolve(key: TemplateKey) -> Resolved:
        entry = registry.entry(key)
        if entry is None:
            return None
        t = entry[0]
        if t.options or t.variable:
            return None
        dkey = key[:3]
        sampling = registry.sampling(dkey)
        init = registry.init_ms(dkey) if key[1] == 10 else None
        return (t, sampling.default or 0, sampling, init)

    def refresh_only(
        version: int, sid: int, body: bytes, name: str, domain: int
    ) -> tuple[Template, ...] | None:
        """The templates of a template set that only refreshes templates registered as they
        are (a cached parse, the same objects, nothing held for them), else None."""
        parsed = batch.parsed_sets.get((version, sid, body))
        if parsed is None:
            return None
        for t in parsed:
            key = (name, version, domain, t.template_id)
            entry = registry.entry(key)
            if entry is None or entry[0] is not t or pending.holds(key):
                return None
        return parsed

    view = memoryview(data)
    res = [resolve(key) for key in keys]
    seg_starts = [0]
    seg_res = [res]
    bad_keys = [i for i, r in enumerate(res) if r is None]
    done: list[int] = []
    events = np.flatnonzero(~is_data)
    static = events.tolist()
    ev = {
        i: (dg, sid, a, b, v, d, x)
        for i, dg, sid, a, b, v, d, x in zip(
            static,
            e_dg[events].tolist(),
            e_id[events].tolist(),
            e_start[events].tolist(),
            e_end[events].tolist(),
            e_ver[events].tolist(),
            e_domain[events].tolist(),
            e_exp[events].tolist(),
            strict=True,
        )
    }
    # Template sets known to only refresh (same exporter, version, domain, set id and bytes as
    # one that did, with no template change since): counted, and their keys' last-seen times
    # applied before anything that reads them, without parsing them again. Identical template
    # sets share a class, found with one np.unique per set length.
    s_cls = _classes(u8, events, e_id, e_start, e_end, e_exp, e_ver, e_domain).tolist()
    s_rec = received[e_dg[events]].tolist()
    ns = len(static)
    counters = batch.counters
    pure: dict[int, list[TemplateKey]] = {}
    refreshed = 0
    touched: dict[TemplateKey, float] = {}
    # Per exporter / domain, the options data set last applied (key index, bytes, counters it
    # added): applying the same options records again changes nothing but the counters.
    last_options: dict[tuple[str, int, int], tuple[int, bytes, Counter[str]]] = {}

    def apply_touched() -> None:
        for key, when in touched.items():
            registry.touch(key, when)
        touched.clear()

    changed_templates = 0
    si = 0
    cur = 0
    while True:
        nxt_bad = m
        for ki in bad_keys:
            plist = key_pos[ki]
            j = bisect.bisect_left(plist, cur)
            if j < len(plist) and plist[j] < nxt_bad:
                nxt_bad = plist[j]
        while si < ns and static[si] < nxt_bad:  # known refresh-only template sets
            known = pure.get(s_cls[si])
            if known is None:
                break
            refreshed += len(known)
            for key in known:
                touched[key] = s_rec[si]
            si += 1
        nxt_static = static[si] if si < ns else m
        nxt = min(nxt_static, nxt_bad)
        if nxt >= m:
            break
        cur = nxt + 1
        changed = True
        if nxt == nxt_static:
            si += 1
            dg, sid, a, b, version, domain, x = ev[nxt]
            if sid < 0:
                apply_touched()
                slow(dg)
            else:
                name = exporters[x]
                rec = float(received[dg])
                body = data[a:b]
                apply_touched()
                parsed = refresh_only(version, sid, body, name, domain)
                if parsed is not None:
                    changed = False
                    for t in parsed:
                        batch.add_template(name, domain, t, rec)
                    pure[s_cls[si - 1]] = [(name, version, domain, t.template_id) for t in parsed]
                    continue
                changed_templates += 1
                parse = v9.template_set if version == 9 else ipfix.template_set
                try:
                    parse(view[a:b], sid, name, domain, rec, batch)
                except Exception:
                    batch.internal_error(name)
        else:
            apply_touched()
            done.append(nxt)
            ki = int(e_key[nxt])
            key = keys[ki]
            p0, p1 = int(e_start[nxt]), int(e_end[nxt])
            body = data[p0:p1]
            last = last_options.get(key[:3])
            if last is not None and last[0] == ki and last[1] == body:
                counters.update(last[2])  # the same options again: same (idempotent) effect
                continue
            entry = registry.entry(key)
            options = entry is not None and entry[0].options
            before = counters.copy() if options else None
            try:
                batch.add_data(
                    key[0],
                    key[2],
                    key[1],
                    key[3],
                    view[p0:p1],
                    int(e_export[nxt]),
                    int(e_uptime[nxt]),
                    float(received[int(e_dg[nxt])]),
                )
            except Exception:
                batch.internal_error(key[0])
                before = None
            if before is not None:
                last_options[key[:3]] = (ki, body, counters - before)
        if changed:
            if nxt == nxt_static:  # templates may have changed (data sets change sampling only)
                pure.clear()
                last_options.clear()
            new = [resolve(key) for key in keys]
            if not _same(new, res):
                res = new
                seg_starts.append(cur)
                seg_res.append(res)
                bad_keys = [i for i, r in enumerate(res) if r is None]
    apply_touched()
    if refreshed:
        counters["templates.refreshed"] += refreshed
    n_static = len(static) - int(odd.sum())
    stats["sets.template"] += n_static
    stats["sets.template_refresh_only"] += n_static - changed_templates
    stats["sets.data_python"] += len(done)
    stats["sets.data_vector"] += int(d_pos.size) - len(done)
    stats["segments"] += len(seg_starts)

    # ---- resolve every other data set against its segment, then gather per template
    if not keys:
        return True
    templates: list[Template] = []
    t_index: dict[int, int] = {}
    shape = (len(seg_res), len(keys))
    tab_t = np.full(shape, -1, dtype=np.int64)
    tab_rate = np.zeros(shape, dtype=np.uint64)
    tab_snap = np.zeros(shape, dtype=np.int64)
    tab_init = np.full(shape, -1, dtype=np.int64)
    for s, rs in enumerate(seg_res):
        for ki, r in enumerate(rs):
            if r is None:
                continue
            t, r_rate, r_sampling, r_init = r
            ti = t_index.get(id(t))
            if ti is None:
                ti = t_index[id(t)] = len(templates)
                templates.append(t)
            tab_t[s, ki] = ti
            tab_rate[s, ki] = r_rate
            tab_snap[s, ki] = batch.snapshot_index(r_sampling)
            # A (mutated or hostile) init time past int64 is later than any export time: the
            # clamp gives the same zero uptime the per-datagram path computes.
            tab_init[s, ki] = -1 if r_init is None else min(r_init, _I64_MAX)
    if done:
        d_pos = np.setdiff1d(d_pos, np.asarray(done, dtype=np.int64), assume_unique=True)
    kk = e_key[d_pos]
    seg = np.searchsorted(np.asarray(seg_starts, dtype=np.int64), d_pos, side="right") - 1
    d_t = tab_t[seg, kk]
    exp_map = _exporter_map(batch, exporters)
    for ti, t in enumerate(templates):
        sel = d_t == ti
        p = d_pos[sel]
        s_, k_ = seg[sel], kk[sel]
        start = e_start[p]
        counts = (e_end[p] - start) // t.record_length
        export = e_export[p]
        init = tab_init[s_, k_]
        uptime = np.where(init >= 0, np.maximum(export - init, 0), e_uptime[p])
        _emit(
            batch,
            u8,
            t,
            start,
            counts,
            exp_map[e_exp[p]],
            e_domain[p],
            export,
            uptime,
            tab_rate[s_, k_],
            tab_snap[s_, k_],
            received_ms[e_dg[p]],
        )
    return True


def _classes(
    u8: npt.NDArray[np.uint8],
    events: I64,
    e_id: I64,
    e_start: I64,
    e_end: I64,
    e_exp: I64,
    e_ver: I64,
    e_domain: I64,
) -> I64:
    """For each event, a class shared by template sets with the same exporter, version, domain,
    set id and bytes (exact comparison); -1 for events that are not template sets."""
    out = np.full(events.size, -1, dtype=np.int64)
    tsel = np.flatnonzero(e_id[events] >= 0)
    if not tsel.size:
        return out
    tpos = events[tsel]
    length = e_end[tpos] - e_start[tpos]
    meta = np.stack([e_exp[tpos], e_ver[tpos], e_domain[tpos], e_id[tpos]], axis=1)
    meta8 = np.ascontiguousarray(meta.astype("<i8")).view(np.uint8).reshape(tpos.size, 32)
    base = 0
    for size in np.unique(length).tolist():
        sel = np.flatnonzero(length == size)
        rows = u8[e_start[tpos[sel]][:, None] + np.arange(size, dtype=np.int64)]
        pad = np.zeros((sel.size, -size % 8), dtype=np.uint8)
        words = np.ascontiguousarray(np.hstack([meta8[sel], rows, pad])).view(np.uint64)
        mult = _MULT[: words.shape[1]] if words.shape[1] <= _MULT.size else None
        if mult is None:  # very long sets: no class (parsed every time)
            out[tsel[sel]] = base + np.arange(sel.size)
            base += sel.size
            continue
        with np.errstate(over="ignore"):
            digest = (words * mult).sum(axis=1, dtype=np.uint64)
        _, first, inv = np.unique(digest, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        # exact: a row unlike its class's first row (a hash collision) gets a class of its own
        same = (words == words[first[inv]]).all(axis=1)
        cls = np.where(same, inv, first.size + np.arange(sel.size))
        out[tsel[sel]] = cls + base
        base += first.size + sel.size
    return out


_MULT: Final = (
    np.random.default_rng(0x6D616D6F7269).integers(0, 2**63, 4096, dtype=np.uint64) * 2 + 1
).astype(np.uint64)  # odd 64-bit multipliers for the template set digest


def _exporter_map(batch: Batch, exporters: Sequence[str]) -> npt.NDArray[np.int32]:
    return np.asarray([batch.exporter_index(e) for e in exporters], dtype=np.int32)


def _emit(
    batch: Batch,
    u8: npt.NDArray[np.uint8],
    template: Template,
    start: I64,
    counts: I64,
    exporter: npt.NDArray[np.int32],
    domain: I64,
    export_ms: I64,
    uptime_ms: I64,
    rate: npt.NDArray[np.uint64],
    snapshot: I64,
    received_ms: I64,
) -> None:
    """Gather the records of data sets of one fixed-length template and queue them."""
    keep = counts > 0
    if not keep.all():
        start, counts, exporter, domain = start[keep], counts[keep], exporter[keep], domain[keep]
        export_ms, uptime_ms, rate = export_ms[keep], uptime_ms[keep], rate[keep]
        snapshot, received_ms = snapshot[keep], received_ms[keep]
    total = int(counts.sum())
    if total == 0:
        return
    rl = template.record_length
    first = np.cumsum(counts) - counts
    rec_start = np.repeat(start - first * rl, counts) + np.arange(total, dtype=np.int64) * rl
    windows = np.lib.stride_tricks.sliding_window_view(u8, rl)
    records = np.ascontiguousarray(windows[rec_start])
    batch.add_bulk(
        template,
        Bulk(
            records,
            counts.astype(np.int64),
            exporter.astype(np.int32),
            domain.astype(np.int64),
            export_ms.astype(np.int64),
            uptime_ms.astype(np.int64),
            rate.astype(np.uint64),
            received_ms.astype(np.int64),
            snapshot.astype(np.int64),
        ),
    )
