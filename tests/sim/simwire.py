"""Tiny independent decoders for the simulator's tests (NetFlow v9, IPFIX, sFlow v5 headers)."""

from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mamori.sim import SimSummary, read_pcap


def path(s: SimSummary, key: str) -> Path:
    """The file ``simulate`` wrote under the logical name ``key``."""
    return Path(s.out) / s.files[key]


@dataclass
class ExporterStats:
    protocol: str
    packets: int = 0
    records: int = 0
    pkts: int = 0
    octets: int = 0
    samples: int = 0
    sampling: set[int] = field(default_factory=set)
    templates: int = 0
    flows: list[tuple[int, int, int, int, int]] = field(default_factory=list)


def _fields(blob: bytes, count: int, pos: int) -> tuple[list[tuple[int, int]], int]:
    out = []
    for _ in range(count):
        t, n = struct.unpack_from(">HH", blob, pos)
        pos += 4
        if t & 0x8000:
            pos += 4
            t &= 0x7FFF
        out.append((t, n))
    return out, pos


def _decode_record(blob: bytes, fields: list[tuple[int, int]]) -> dict[int, int]:
    vals: dict[int, int] = {}
    pos = 0
    for t, n in fields:
        vals[t] = int.from_bytes(blob[pos : pos + n], "big")
        pos += n
    return vals


def decode_pcap(path: Path) -> dict[tuple[str, int], ExporterStats]:
    """Decode every export packet strictly; raises AssertionError on any structural error."""
    stats: dict[tuple[str, int], ExporterStats] = {}
    templates: dict[tuple[str, int, int], list[tuple[int, int]]] = {}
    opt_templates: dict[tuple[str, int, int], tuple[int, list[tuple[int, int]]]] = {}
    seqs: dict[tuple[str, int], int] = defaultdict(lambda: -1)
    for p in read_pcap(path):
        b = p.payload
        version = struct.unpack_from(">H", b)[0]
        if version == 0 and struct.unpack_from(">I", b)[0] == 5:
            version = 5
        if version == 9:
            _, count, _uptime, _secs, seq, sid = struct.unpack_from(">HHIIII", b)
            key = (p.src, sid)
            st = stats.setdefault(key, ExporterStats("netflow9"))
            assert seqs[key] in (-1, seq - 1), "v9 sequence must count packets"
            seqs[key] = seq
            pos, seen = 20, 0
            while pos < len(b):
                fid, flen = struct.unpack_from(">HH", b, pos)
                assert flen >= 4 and pos + flen <= len(b) and flen % 4 == 0
                body = b[pos + 4 : pos + flen]
                if fid == 0:
                    tid, n = struct.unpack_from(">HH", body)
                    templates[(p.src, sid, tid)], _ = _fields(body, n, 4)
                    st.templates += 1
                    seen += 1
                elif fid == 1:
                    tid, slen, olen = struct.unpack_from(">HHH", body)
                    flds, _ = _fields(body, (slen + olen) // 4, 6)
                    opt_templates[(p.src, sid, tid)] = (slen // 4, flds)
                    seen += 1
                elif (p.src, sid, fid) in templates:
                    flds = templates[(p.src, sid, fid)]
                    size = sum(n for _, n in flds)
                    k = len(body) // size
                    assert len(body) - k * size < 4, "only padding may follow records"
                    for i in range(k):
                        v = _decode_record(body[i * size : (i + 1) * size], flds)
                        st.records += 1
                        st.pkts += v[2]
                        st.octets += v[1]
                        st.flows.append((v[8], v[12], v[7], v[11], v[4]))
                    seen += k
                else:
                    _, flds = opt_templates[(p.src, sid, fid)]
                    v = _decode_record(body, flds)
                    st.sampling.add(v[34])
                    seen += 1
                pos += flen
            assert seen == count, f"v9 header count {count} != records {seen}"
            st.packets += 1
        elif version == 10:
            _, length, _t, seq, dom = struct.unpack_from(">HHIII", b)
            assert length == len(b), "IPFIX message length"
            key = (p.src, dom)
            st = stats.setdefault(key, ExporterStats("ipfix"))
            assert seqs[key] in (-1, seq), "IPFIX sequence counts data records"
            pos, data_recs = 16, 0
            while pos < len(b):
                sid_, slen = struct.unpack_from(">HH", b, pos)
                assert slen >= 4 and pos + slen <= len(b)
                body = b[pos + 4 : pos + slen]
                if sid_ == 2:
                    tid, n = struct.unpack_from(">HH", body)
                    templates[(p.src, dom, tid)], _ = _fields(body, n, 4)
                    st.templates += 1
                elif sid_ == 3:
                    tid, n, scope = struct.unpack_from(">HHH", body)
                    assert scope >= 1
                    flds, _ = _fields(body, n, 6)
                    opt_templates[(p.src, dom, tid)] = (scope, flds)
                elif (p.src, dom, sid_) in templates:
                    flds = templates[(p.src, dom, sid_)]
                    size = sum(n for _, n in flds)
                    k = len(body) // size
                    assert len(body) - k * size < 4
                    for i in range(k):
                        v = _decode_record(body[i * size : (i + 1) * size], flds)
                        st.records += 1
                        st.pkts += v[2]
                        st.octets += v[1]
                        st.flows.append((v[8], v[12], v[7], v[11], v[4]))
                        assert v[152] <= v[153]
                    data_recs += k
                else:
                    _, flds = opt_templates[(p.src, dom, sid_)]
                    v = _decode_record(body, flds)
                    st.sampling.add(v[34])
                    data_recs += 1
                pos += slen
            seqs[key] = (seq + data_recs) & 0xFFFFFFFF
            st.packets += 1
        elif version == 5:
            _, atype, _agent, sub, _seq, _up, n = struct.unpack_from(">IIIIIII", b)
            assert atype == 1
            key = (p.src, sub)
            st = stats.setdefault(key, ExporterStats("sflow5"))
            pos = 28
            for _ in range(n):
                tag, slen = struct.unpack_from(">II", b, pos)
                assert tag == 1, "flow sample, enterprise 0"
                body = b[pos + 8 : pos + 8 + slen]
                (_sq, _src, rate, _pool, _drops, _i, _o, nrec) = struct.unpack_from(">8I", body)
                assert nrec == 1
                rtag, rlen, hproto, frame, stripped, hlen = struct.unpack_from(">6I", body, 32)
                assert (rtag, hproto, stripped) == (1, 11, 0)  # raw header, IPv4
                assert rlen == 16 + hlen and hlen % 4 == 0
                hdr = body[56 : 56 + hlen]
                assert hdr[0] == 0x45 and hlen == (40 if hdr[9] == 6 else 28)
                ip_len = struct.unpack_from(">H", hdr, 2)[0]
                assert frame == ip_len
                src, dst = struct.unpack_from(">II", hdr, 12)
                sport, dport = struct.unpack_from(">HH", hdr, 20)
                st.flows.append((src, dst, sport, dport, hdr[9]))
                st.sampling.add(rate)
                st.samples += 1
                pos += 8 + slen
            assert pos == len(b)
            st.packets += 1
        else:
            raise AssertionError(f"unknown export version {version}")
    return stats
