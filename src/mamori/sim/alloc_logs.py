"""Address-allocation logs in the formats the equipment writes.

* FreeRADIUS ``detail`` file (rlm_detail): a ctime-style header line per packet, then
  ``<TAB>Attribute = value`` lines and a blank line. Accounting Start / Interim-Update / Stop from
  the BRAS for PPPoE and static business sessions.
* Kea DHCPv4 memfile lease CSV (``kea-leases4.csv``), header
  ``address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,
  user_context,pool_id``: one row per allocation or renewal (``expire`` = client last transaction
  time + ``valid_lifetime``); a released lease is appended with ``valid_lifetime`` 0, which is how
  the memfile back end records a deletion (Kea ARM, "Memfile - Basic Storage for Leases").
* CGNAT port-block allocation syslog, Juniper MS-MPC / Next Gen Services format::

      JSERVICES_NAT_PORT_BLOCK_ALLOC: <inside-ip> -> <public-ip>:<first>-<last> 0x<epoch hex>
      JSERVICES_NAT_PORT_BLOCK_RELEASE: <inside-ip> -> <public-ip>:<first>-<last> 0x<epoch hex>

  (Juniper, "Port Block Allocation" in the Junos Network Address Translation guide, and the
  system-log reference entries JSERVICES_NAT_PORT_BLOCK_ALLOC / _RELEASE.)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mamori.sim._net import ntoa
from mamori.sim.world import CGNAT, IPOE, NAS_BASE, PPPOE, STATIC, World

KEA_HEADER = (
    "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,"
    "state,user_context,pool_id"
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
TERMINATE = ("User-Request", "Idle-Timeout", "Lost-Carrier", "Port-Error")


def ctime(ts: float) -> str:
    """``Mon Nov  2 09:00:00 2026`` (UTC), as rlm_detail writes its record header."""
    t = time.gmtime(int(ts))
    return (
        f"{DAYS[t.tm_wday]} {MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year}"
    )


def syslog_ts(ts: float) -> str:
    """``Nov  2 09:00:00`` (RFC 3164 time stamp, UTC)."""
    t = time.gmtime(int(ts))
    return f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def event_ts(ts: float) -> str:
    t = time.gmtime(int(ts))
    return (
        f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} UTC"
    )


def mac(sub: int) -> str:
    b = (0x02, 0x5A, (sub >> 24) & 255, (sub >> 16) & 255, (sub >> 8) & 255, sub & 255)
    return ":".join(f"{x:02x}" for x in b)


def write_radius_detail(world: World, path: Path) -> int:
    """Accounting records for PPPoE and static sessions, in time order; returns the count."""
    s = world.sessions
    t1 = world.t1
    rng = np.random.default_rng([world.seed, 3])
    interim = world.cfg.radius_interim_s
    rows: list[tuple[float, int, str]] = []
    sel = np.flatnonzero(np.isin(world.contract[s.sub], (PPPOE, STATIC)))
    for i in sel.tolist():
        sub = int(s.sub[i])
        start, stop = float(s.start[i]), float(s.stop[i])
        if start >= t1:
            continue
        ident = f"{i:08X}"
        region = int(world.region[sub])
        common = (
            f'\tAcct-Session-Id = "{ident}"\n'
            f'\tUser-Name = "{world.user_name(sub)}"\n'
            f"\tNAS-IP-Address = {ntoa(NAS_BASE + region)}\n"
            f"\tNAS-Port = {sub % 65536}\n"
            f"\tNAS-Port-Type = Virtual\n"
            f"\tService-Type = Framed-User\n"
            f"\tFramed-Protocol = PPP\n"
            f"\tFramed-IP-Address = {ntoa(int(s.ip[i]))}\n"
            f'\tCalling-Station-Id = "{mac(sub)}"\n'
            f"\tAcct-Authentic = RADIUS\n"
        )
        uniq = f'\tAcct-Unique-Session-Id = "{(i * 2654435761) & 0xFFFFFFFFFFFF:012x}"\n'
        rate = float(rng.uniform(2e3, 2e5))

        def rec(ts: float, kind: str, extra: str, common: str = common, uniq: str = uniq) -> str:
            return (
                f"{ctime(ts)}\n\tAcct-Status-Type = {kind}\n{common}"
                f'\tEvent-Timestamp = "{event_ts(ts)}"\n{extra}\tAcct-Delay-Time = 0\n'
                f"{uniq}\tTimestamp = {int(ts)}\n\n"
            )

        def usage(ts: float, start: float = start, rate: float = rate) -> str:
            el = int(ts - start)
            o = int(el * rate)
            return (
                f"\tAcct-Session-Time = {el}\n\tAcct-Input-Octets = {o & 0xFFFFFFFF}\n"
                f"\tAcct-Input-Gigawords = {o >> 32}\n"
                f"\tAcct-Output-Octets = {(o * 7) & 0xFFFFFFFF}\n"
                f"\tAcct-Output-Gigawords = {(o * 7) >> 32}\n"
            )

        rows.append((start, 0, rec(start, "Start", "")))
        k0 = max(1, int(np.ceil((world.t0 - start) / interim)))
        ts = start + k0 * interim
        while ts < min(stop, t1):
            rows.append((ts, 1, rec(ts, "Interim-Update", usage(ts))))
            ts += interim
        if stop < t1:
            cause = TERMINATE[i % len(TERMINATE)]
            rows.append(
                (stop, 2, rec(stop, "Stop", usage(stop) + f"\tAcct-Terminate-Cause = {cause}\n"))
            )
    rows.sort(key=lambda r: (r[0], r[1]))
    with path.open("w", encoding="ascii", newline="\n") as fh:
        fh.writelines(r[2] for r in rows)
    return len(rows)


def write_kea_leases(world: World, path: Path) -> int:
    """Kea memfile rows for IPoE sessions (subnet 1) and CGNAT inside addresses (subnet 2)."""
    s = world.sessions
    life = world.cfg.dhcp_lifetime_s
    rows: list[tuple[float, str]] = []
    t0, t1 = world.t0, world.t1

    def row(ts: float, addr: int, sub: int, lifetime: int, subnet: int) -> tuple[float, str]:
        t = int(ts)
        return (
            ts,
            f"{ntoa(addr)},{mac(sub)},,{lifetime},{t + lifetime},{subnet},0,0,host-{sub:07d},0,,0",
        )

    for i in np.flatnonzero(world.contract[s.sub] == IPOE).tolist():
        sub = int(s.sub[i])
        start, stop, addr = float(s.start[i]), float(s.stop[i]), int(s.ip[i])
        if start >= t1:
            continue
        # the lease history inside the window: the allocation (or the last renewal before t0),
        # then a renewal every half lifetime, then a release
        k0 = max(0, int((t0 - start) // (life / 2)))
        ts = start + k0 * life / 2
        while ts < min(stop, t1):
            rows.append(row(ts, addr, sub, life, 1))
            ts += life / 2
        if stop < t1:
            rows.append(row(stop, addr, sub, 0, 1))
    inside = np.flatnonzero(world.contract == CGNAT)
    by_sub = {
        int(sub): int(a) for sub, a in zip(s.sub.tolist(), s.inside_ip.tolist(), strict=True) if a
    }
    phase = np.random.default_rng([world.seed, 4]).uniform(0, life / 2, inside.size)
    for sub, ph in zip(inside.tolist(), phase.tolist(), strict=True):
        ts = t0 - ph
        while ts < t1:
            rows.append(row(ts, by_sub[sub], sub, life, 2))
            ts += life / 2
    rows.sort(key=lambda r: r[0])
    with path.open("w", encoding="ascii", newline="\n") as fh:
        fh.write(KEA_HEADER + "\n")
        fh.writelines(r[1] + "\n" for r in rows)
    return len(rows)


def write_cgnat_syslog(world: World, path: Path, host: str = "cgn1") -> int:
    s = world.sessions
    rows: list[tuple[float, int, str]] = []
    prefix = "(FPC Slot 1, PIC Slot 0) {sp-1/0/0}[jservices-nat]:"
    for i in np.flatnonzero(world.contract[s.sub] == CGNAT).tolist():
        start, stop = float(s.start[i]), float(s.stop[i])
        if start >= world.t1:
            continue
        body = (
            f"{ntoa(int(s.inside_ip[i]))} -> {ntoa(int(s.ip[i]))}:"
            f"{int(s.port_lo[i])}-{int(s.port_hi[i])}"
        )
        rows.append(
            (
                start,
                1,
                f"{syslog_ts(start)} {host} {prefix} "
                f"JSERVICES_NAT_PORT_BLOCK_ALLOC: {body} 0x{int(start):x}",
            )
        )
        if stop < world.t1:
            rows.append(
                (
                    stop,
                    0,
                    f"{syslog_ts(stop)} {host} {prefix} "
                    f"JSERVICES_NAT_PORT_BLOCK_RELEASE: {body} 0x{int(stop):x}",
                )
            )
    rows.sort(key=lambda r: (r[0], r[1]))
    with path.open("w", encoding="ascii", newline="\n") as fh:
        fh.writelines(r[2] + "\n" for r in rows)
    return len(rows)
