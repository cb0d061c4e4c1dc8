"""Does a STIX object name an address in this ISP's subscriber pools, in any of its fields?

The C&C list is guarded column by column (:func:`mamori.share.c2list.guard`); what peers post to
the ``submissions`` collection has no columns: an address can sit in an indicator's pattern, an
``ipv4-addr``/``ipv6-addr`` value, a ``network-traffic`` or ``observed-data`` object, a
sighting's description, a custom property or a dictionary key. So every string of the object —
keys included, at any depth — is searched for IPv4/IPv6 addresses and CIDR prefixes, and one
that overlaps a pool counts. Defanged forms (``10.0.0[.]5``) are read as the address they
stand for, IPv4 with leading zeros as its decimal value, and an IPv4 address inside an IPv6 one
(mapped, 6to4) as that IPv4 address: what a reader could take for a subscriber's address must
not leave.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from mamori.config import IPNetwork

__all__ = ["subscriber_address"]

_V4 = re.compile(r"(?<![0-9])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?:/[0-9]{1,3})?(?![0-9])")
# a run of hex digits, colons and dots with two colons or more; ipaddress decides what it is
_V6 = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(?:/[0-9]{1,3})?")
_DEFANG = str.maketrans({"[": "", "]": "", "(": "", ")": "", "{": "", "}": ""})
# cheap first look: most strings (names, times, descriptions) hold no address at all
_MAYBE = re.compile(r"[0-9A-Fa-f][.:\[(]|[.:][0-9A-Fa-f]")


def _v4(text: str) -> ipaddress.IPv4Network | None:
    addr, _, plen = text.partition("/")
    octets = addr.split(".")
    if any(int(o) > 255 for o in octets):
        return None
    dec = ".".join(str(int(o)) for o in octets)  # 010 read as 10, as most tools would
    try:
        return ipaddress.IPv4Network(f"{dec}/{plen}" if plen else dec, strict=False)
    except ValueError:
        return None


def _networks(text: str) -> list[IPNetwork]:
    plain = text.replace("[.]", ".").replace("(.)", ".").replace("[:]", ":")
    plain = plain.replace("{.}", ".").replace("[dot]", ".").replace("(dot)", ".")
    out: list[IPNetwork] = []
    for m in _V4.finditer(plain):
        net = _v4(m.group())
        if net is not None:
            out.append(net)
    if plain.count(":") >= 2:
        for m in _V6.finditer(plain.translate(_DEFANG)):
            try:
                v6 = ipaddress.IPv6Network(m.group().strip("."), strict=False)
            except ValueError:
                continue
            out.append(v6)
            first = v6.network_address
            inner = first.ipv4_mapped or first.sixtofour
            if inner is not None and v6.prefixlen == 128:
                out.append(ipaddress.IPv4Network(inner))
    return out


def _hits(text: str, pools: Sequence[IPNetwork]) -> bool:
    if not _MAYBE.search(text):
        return False
    return any(
        net.version == pool.version and net.overlaps(pool)
        for net in _networks(text)
        for pool in pools
    )


def subscriber_address(obj: Any, pools: Sequence[IPNetwork]) -> str | None:
    """The JSON path (``pattern``, ``objects.0.value`` …) of the first string in ``obj`` that
    names an address or prefix overlapping ``pools``; ``None`` when none does. Iterative, so an
    object of any depth is walked without recursion."""
    if not pools:
        return None
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if _hits(v, pools):
                return path or "(value)"
        elif isinstance(v, dict):
            for k, item in v.items():
                key = str(k)
                where = f"{path}.{key}" if path else key
                if _hits(key, pools):
                    return where
                stack.append((where, item))
        elif isinstance(v, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(v))
    return None
