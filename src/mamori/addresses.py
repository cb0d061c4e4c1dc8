"""Which addresses lie in which networks, for whole columns at once.

Governance (is this address in a subscriber pool?), sharing (may this address leave?) and the
reputation allowlist (has the operator vouched for this address?) all ask the same question of
many addresses; IPv4 is answered with NumPy, IPv6 one by one (rare in these columns).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["in_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4 = r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$"


def in_networks(
    addrs: pa.Array | Sequence[str | None],
    networks: Iterable[Network],
    *,
    unreadable: bool = False,
    embedded_v4: bool = False,
) -> np.ndarray:
    """Boolean mask: which of ``addrs`` (text) lie in one of ``networks``.

    ``unreadable`` is the answer for a null or unparsable address (True where what cannot be
    checked must count as inside). With ``embedded_v4``, an IPv4-mapped or 6to4 IPv6 address is
    also checked as the IPv4 address it carries.
    """
    nets = list(networks)
    arr = pa.array(addrs, pa.string()) if not isinstance(addrs, pa.Array) else addrs
    n = len(arr)
    hit = np.zeros(n, dtype=bool)
    if n == 0:
        return hit
    valid = pc.fill_null(pc.is_valid(arr), False).to_numpy(zero_copy_only=False)
    hit[~valid] = unreadable
    text = pc.fill_null(arr, "")
    v4_shape = pc.match_substring_regex(text, _V4).to_numpy(zero_copy_only=False) & valid
    v4_idx = np.flatnonzero(v4_shape)
    v4_nets = [net for net in nets if net.version == 4]
    if len(v4_idx) and v4_nets:
        v4 = pc.take(text, pa.array(v4_idx))
        octets = pc.list_flatten(pc.split_pattern(v4, "."))
        ints = np.asarray(octets.cast(pa.uint32()).to_numpy(), dtype=np.uint64).reshape(-1, 4)
        value = (ints[:, 0] << 24) | (ints[:, 1] << 16) | (ints[:, 2] << 8) | ints[:, 3]
        sub = np.zeros(len(value), dtype=bool)
        for net in v4_nets:
            sub |= (value >= int(net.network_address)) & (value <= int(net.broadcast_address))
        hit[v4_idx] = sub
    other_idx = np.flatnonzero(~v4_shape & valid)
    if len(other_idx):
        v6_nets = [net for net in nets if net.version == 6]
        for i, t in zip(other_idx, pc.take(text, pa.array(other_idx)).to_pylist(), strict=True):
            try:
                ip = ipaddress.ip_address(t)
            except ValueError:
                hit[i] = unreadable
                continue
            if ip.version == 4:  # a form the fast path does not accept (leading zeros)
                hit[i] = unreadable
                continue
            inner = (ip.ipv4_mapped or ip.sixtofour) if embedded_v4 else None
            hit[i] = any(ip in net for net in v6_nets) or (
                inner is not None and any(inner in net for net in v4_nets)
            )
    return hit
