"""The other sources: resolver query logs, mail syslog, reputation feeds, third-party reports.

* dnstap CLIENT_QUERY messages in a Frame Streams file per resolver (see ``dnstap.py``).
* Unbound query log (``log-queries: yes``, log file, epoch time stamps)::

      [1793610000] unbound[2101:0] info: 10.16.0.5 www1.search.example.com. A IN

* Postfix (submission service) and Dovecot lines in one ``mail.log`` (RFC 3164 time stamps):
  SASL successes (``client=…, sasl_method=PLAIN, sasl_username=…``), SASL failures
  (``warning: unknown[IP]: SASL LOGIN authentication failed: …, sasl_username=…``, as Postfix
  3.x writes them, the line fail2ban's
  ``postfix`` filter matches), Dovecot ``imap-login: Disconnected (auth failed, …)`` lines (the
  ``dovecot`` filter), and queue growth: spam relayed through a compromised account is deferred.
* abuse.ch Feodo Tracker ``ipblocklist.csv``, URLhaus ``csv_recent``, ThreatFox CSV export, and a
  STIX 2.1 bundle (plain JSON): a snapshot at the end of the window, where C&C servers appear only
  ``listing_delay_hours`` after they start, some are never listed, and a few benign endpoints are
  listed by mistake (recorded in the truth); and a phishing URL list (one URL per line).
* Third-party reports (CSV): infected hosts (IP, port, time), a taken-down C&C server's victim
  log (IP, time), and a NOTICE-style vulnerable-device report (IP, time).
"""

from __future__ import annotations

import csv
import json
import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mamori.sim._net import iso, iso_ms, ntoa, ntoa_many
from mamori.sim.alloc_logs import syslog_ts
from mamori.sim.dnstap import client_query, write_frame_stream
from mamori.sim.flows import LABELS
from mamori.sim.traffic import Traffic
from mamori.sim.world import MAIL_SERVER, RESOLVERS, World

STIX_NAMESPACE = uuid.UUID("6f1d3b6e-0e6b-4a39-9d55-7f0e4f5e9a01")


def _dt(ts: float) -> str:
    t = time.gmtime(int(ts))
    return time.strftime("%Y-%m-%d %H:%M:%S", t)


def write_unbound(world: World, traffic: Traffic, out: Path) -> dict[str, int]:
    d = traffic.dns
    if not d.t:
        return {}
    t = np.concatenate(d.t)
    client = np.concatenate(d.client)
    port = np.concatenate(d.port)
    resolver = np.concatenate(d.resolver)
    names = [n for chunk in d.qname for n in chunk]
    qtypes = [q for q, chunk in zip(d.qtype, d.qname, strict=True) for _ in chunk]
    order = np.argsort(t, kind="stable")
    client_text = ntoa_many(client)
    counts: dict[str, int] = {}
    for k, res in enumerate(RESOLVERS):
        sel = order[resolver[order] == res]
        with (out / f"unbound-resolver{k + 1}.log").open("w", encoding="ascii", newline="\n") as fh:
            fh.writelines(
                f"[{int(t[i])}] unbound[{2101 + k}:0] info: {client_text[i]} "
                f"{names[i]}. {qtypes[i]} IN\n"
                for i in sel.tolist()
            )
        counts[f"dns_queries_resolver{k + 1}"] = int(sel.size)
        ident = f"resolver{k + 1}.isp.example.jp".encode()
        res_b = struct.pack(">I", res)
        write_frame_stream(
            out / f"resolver{k + 1}.dnstap",
            (
                client_query(float(t[i]), struct.pack(">I", int(client[i])), int(port[i]), res_b,
                             names[i], qtypes[i], i, ident, b"mamori-sim")
                for i in sel.tolist()
            ),
        )  # fmt: skip
    return counts


def write_mail(world: World, traffic: Traffic, path: Path) -> int:
    m = traffic.mail
    rng = np.random.default_rng([world.seed, 5])
    lines: list[tuple[float, int, str]] = []
    lip = ntoa(MAIL_SERVER)
    mx = world.services["mx"]
    qid = 0x1A2B3C

    def add(ts: float, text: str) -> None:
        lines.append((ts, len(lines), f"{syslog_ts(ts)} mail {text}"))

    order = np.argsort(np.asarray(m.t), kind="stable").tolist()
    for i in order:
        ts, client, user, ok = m.t[i], ntoa(m.client[i]), m.user[i], m.ok[i]
        pid = 3000 + (i * 37) % 60000
        sess = f"{(i * 2654435761) & 0xFFFFFFFFFFFF:012x}"
        if m.service[i] == "imap":
            add(
                ts,
                f"dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): "
                f"user=<{user}>, method=PLAIN, rip={client}, lip={lip}, TLS, "
                f"session=<{sess}>",
            )
            continue
        smtpd = f"postfix/submission/smtpd[{pid}]"
        add(ts, f"{smtpd}: connect from unknown[{client}]")
        if not ok:
            add(
                ts + 1,
                # Postfix 3.x names the user a failure was for
                f"{smtpd}: warning: unknown[{client}]: SASL LOGIN authentication failed: "
                f"(reason unavailable), sasl_username={user}",
            )
            add(
                ts + 1,
                f"{smtpd}: disconnect from unknown[{client}] ehlo=1 auth=0/1 quit=1 commands=2/3",
            )
            continue
        if not m.spam[i] and rng.random() < 0.3:
            add(
                ts - 5,
                f"dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={client}, "
                f"lip={lip}, mpid={pid + 1}, TLS, session=<{sess}>",
            )
        for _ in range(m.messages[i]):
            qid += 1 + int(rng.integers(1, 50))
            q = f"{qid:010X}"
            size = int(rng.integers(900, 30_000))
            add(
                ts,
                f"{smtpd}: {q}: client=unknown[{client}], sasl_method=PLAIN, sasl_username={user}",
            )
            add(ts, f"postfix/cleanup[{pid + 2}]: {q}: message-id=<{q}@isp.example.jp>")
            add(ts, f"postfix/qmgr[1187]: {q}: from=<{user}>, size={size}, nrcpt=1 (queue active)")
            relay = mx[int(rng.integers(0, len(mx)))]
            rcpt = f"r{int(rng.integers(0, 10**6)):06d}@{relay.domain.split('.', 1)[1]}"
            if m.spam[i]:
                add(
                    ts + 30,
                    f"postfix/smtp[{pid + 3}]: {q}: to=<{rcpt}>, relay=none, delay=30, "
                    f"delays=0.1/0/30/0, dsn=4.4.1, status=deferred (connect to "
                    f"{relay.domain}[{ntoa(relay.ip)}]:25: Connection timed out)",
                )
            else:
                add(
                    ts + 1,
                    f"postfix/smtp[{pid + 3}]: {q}: to=<{rcpt}>, "
                    f"relay={relay.domain}[{ntoa(relay.ip)}]:25, delay=0.9, "
                    "delays=0.1/0/0.3/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
                )
                add(ts + 1, f"postfix/qmgr[1187]: {q}: removed")
        add(
            ts + 2,
            f"{smtpd}: disconnect from unknown[{client}] ehlo=2 starttls=1 auth=1 "
            "mail=1 rcpt=1 data=1 quit=1 commands=8",
        )
    lines.sort(key=lambda r: (r[0], r[1]))
    with path.open("w", encoding="ascii", newline="\n") as fh:
        fh.writelines(r[2] + "\n" for r in lines)
    return len(lines)


_ABUSE_HEAD = (
    "################################################################\n"
    "# abuse.ch {title:<52}#\n"
    "# Last updated: {updated:<46}#\n"
    "#                                                              #\n"
    "# Simulated by Mamori: documentation addresses, not real data  #\n"
    "################################################################\n"
    "#\n"
)


def _listing(world: World, traffic: Traffic) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Which endpoints the feeds list at the snapshot, and when they were listed."""
    c = world.cfg.feeds
    rng = np.random.default_rng([world.seed, 6])
    listed: list[dict[str, Any]] = []
    unlisted: list[dict[str, Any]] = []
    delayed: list[dict[str, Any]] = []
    for e in traffic.endpoints:
        pub = {k: v for k, v in e.items() if not k.startswith("_")}
        if e["role"] == "phishing":
            continue
        if e["family"] == "stealth" or rng.random() < c.unlisted_share:
            unlisted.append(pub)
            continue
        at = e["_from"] + c.listing_delay_hours * 3600.0
        if at > world.t1:
            unlisted.append(pub)
            continue
        if at > world.t0:
            delayed.append({**pub, "listed_at": iso(at)})
        listed.append({**e, "listed_at": at, "wrong": False})
    wrong_pool = world.services["iot-cloud"] + world.services["cdn"][:5]
    wrong: list[dict[str, Any]] = []
    for k in range(min(c.wrong_entries, len(wrong_pool))):
        s = wrong_pool[int(rng.integers(0, len(wrong_pool)))] if k else wrong_pool[0]
        e = {
            "ip": ntoa(s.ip),
            "port": s.port,
            "proto": "tcp",
            "family": "pc-emotet-like",
            "role": "cc",
            "domain": s.domain,
            "listed_at": world.t0 + 600.0 * (k + 1),
            "_from": world.t0,
            "wrong": True,
        }
        listed.append(e)
        wrong.append({"ip": e["ip"], "port": s.port, "benign_role": s.role, "domain": s.domain})
    return listed, {"unlisted": unlisted, "delayed": delayed, "wrong_entries": wrong}


def write_feeds(
    world: World, traffic: Traffic, out: Path, files: Callable[[str, str], Path]
) -> tuple[dict[str, int], dict[str, Any]]:
    listed, truth = _listing(world, traffic)
    snap = world.t1
    listed.sort(key=lambda e: (e["listed_at"], e["ip"], e["port"]))
    counts: dict[str, int] = {}

    def q(*vals: object) -> str:
        return ",".join(f'"{v}"' for v in vals)

    # Feodo Tracker: PC-botnet C&C servers
    feodo = [e for e in listed if e["family"] == "pc-emotet-like" and e["role"] == "cc"]
    with files("feodo", "feeds/feodo-ipblocklist.csv").open(
        "w", encoding="ascii", newline="\n"
    ) as fh:
        fh.write(
            _ABUSE_HEAD.format(
                title="Feodo Tracker Botnet C2 IP Blocklist (CSV)", updated=_dt(snap) + " UTC"
            )
        )
        fh.write(
            q("first_seen_utc", "dst_ip", "dst_port", "c2_status", "last_online", "malware") + "\n"
        )
        for e in feodo:
            fh.write(
                q(_dt(e["listed_at"]), e["ip"], e["port"], "online", _dt(snap)[:10], "Emotet")
                + "\n"
            )
    counts["feodo_entries"] = len(feodo)

    # URLhaus: loader and first-stage download URLs
    urls = [e for e in listed if e["role"] in ("loader", "infection")]
    with files("urlhaus", "feeds/urlhaus.csv").open("w", encoding="ascii", newline="\n") as fh:
        fh.write(
            _ABUSE_HEAD.format(
                title="URLhaus Database Dump (CSV - recent URLs only)", updated=_dt(snap) + " (UTC)"
            )
        )
        fh.write("# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter\n")
        for n, e in enumerate(urls):
            uid = 3_100_000 + n
            if e["role"] == "loader":
                url, tags = f"http://{e['ip']}:{e['port']}/bins/arm7", "elf,mirai"
            else:
                url, tags = f"http://{e['domain']}/invoice_{n:04d}.doc", "doc,emotet,heodo"
            fh.write(
                q(
                    uid,
                    _dt(e["listed_at"]),
                    url,
                    "online",
                    _dt(snap),
                    "malware_download",
                    tags,
                    f"https://urlhaus.abuse.ch/url/{uid}/",
                    "anonymous",
                )
                + "\n"
            )
    counts["urlhaus_entries"] = len(urls)

    # ThreatFox: ip:port and domain IOCs of C&C servers
    tf_rows: list[str] = []
    for n, e in enumerate(x for x in listed if x["role"] == "cc"):
        mal, alias, printable = (
            ("elf.mirai", "Katana", "Mirai")
            if e["family"] == "iot-mirai-like"
            else ("win.emotet", "Geodo", "Emotet")
        )
        for value, kind in ((f"{e['ip']}:{e['port']}", "ip:port"), (e["domain"], "domain")):
            if not value:
                continue
            tf_rows.append(
                ", ".join(
                    f'"{v}"'
                    for v in (
                        _dt(e["listed_at"]),
                        1_200_000 + 2 * n + (kind == "domain"),
                        value,
                        kind,
                        "botnet_cc",
                        mal,
                        alias,
                        printable,
                        "",
                        75,
                        "None",
                        printable,
                        0,
                        "mamori-sim",
                    )
                )
            )
    with files("threatfox", "feeds/threatfox.csv").open("w", encoding="ascii", newline="\n") as fh:
        fh.write(
            _ABUSE_HEAD.format(
                title="ThreatFox IOCs: CSV export", updated=_dt(snap) + " UTC"
            ).replace("abuse.ch ThreatFox", "ThreatFox")
        )
        fh.write(
            '# "first_seen_utc","ioc_id","ioc_value","ioc_type","threat_type","fk_malware",'
            '"malware_alias","malware_printable","last_seen_utc","confidence_level",'
            '"reference","tags","anonymous","reporter"\n'
        )
        fh.writelines(r + "\n" for r in tf_rows)
    counts["threatfox_entries"] = len(tf_rows)

    # phishing URLs, one per line (the OpenPhish community feed layout)
    phish = [e for e in traffic.endpoints if e["role"] == "phishing"]
    files("phishing", "feeds/phishing-urls.txt").write_text(
        "".join(f"https://{e['domain']}/login\n" for e in phish), encoding="ascii"
    )
    counts["phishing_urls"] = len(phish)

    # STIX 2.1 bundle, written by hand
    ident_id = f"identity--{uuid.uuid5(STIX_NAMESPACE, 'mamori-sim-isac')}"
    created = iso_ms(world.t0 - 86400.0)
    objects: list[dict[str, Any]] = [
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": ident_id,
            "created": created,
            "modified": created,
            "name": "Simulated ISAC (example)",
            "identity_class": "organization",
        }
    ]
    for e in listed:
        if e["role"] not in ("cc", "loader", "infection"):
            continue
        pats = [
            f"[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value "
            f"= '{e['ip']}' AND network-traffic:dst_port = {e['port']}]"
        ]
        if e.get("domain"):
            pats.append(f"[domain-name:value = '{e['domain']}']")
        for p in pats:
            when = iso_ms(e["listed_at"])
            objects.append(
                {
                    "type": "indicator",
                    "spec_version": "2.1",
                    "id": f"indicator--{uuid.uuid5(STIX_NAMESPACE, p)}",
                    "created_by_ref": ident_id,
                    "created": when,
                    "modified": when,
                    "name": f"{e['role']} server ({e['family']})",
                    "indicator_types": ["malicious-activity"],
                    "pattern": p,
                    "pattern_type": "stix",
                    "valid_from": when,
                    "labels": [e["family"], e["role"]],
                }
            )
    bundle = {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid5(STIX_NAMESPACE, str(world.seed))}",
        "objects": objects,
    }
    files("stix", "feeds/stix-bundle.json").write_text(
        json.dumps(bundle, indent=1) + "\n", encoding="ascii"
    )
    counts["stix_indicators"] = len(objects) - 1
    return counts, truth


def write_reports(
    world: World, traffic: Traffic, files: Callable[[str, str], Path]
) -> dict[str, int]:
    fl = traffic.flows
    rng = np.random.default_rng([world.seed, 7])
    counts: dict[str, int] = {}
    # third-party infected-host report: one C&C contact per infected IoT/PC bot (IP, port, time)
    hostile = np.isin(fl.label, (LABELS["iot-cc"], LABELS["pc-cc"])) & (fl.inbound == 0)
    idx = np.flatnonzero(hostile)
    _, first = np.unique(fl.sub[idx], return_index=True)
    pick = idx[first]
    pick = pick[rng.random(pick.size) < 0.7]
    with files("report_infected", "reports/infected-hosts.csv").open(
        "w", encoding="ascii", newline=""
    ) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "ip", "port", "protocol", "infection"])
        for i in pick.tolist():
            w.writerow(
                [
                    iso(float(fl.start[i])),
                    ntoa(int(fl.src[i])),
                    int(fl.sport[i]),
                    "tcp",
                    "mirai" if fl.label[i] == LABELS["iot-cc"] else "emotet",
                ]
            )
    counts["report_infected"] = int(pick.size)
    # a taken-down PC C&C server's connection log
    cc_flows = np.flatnonzero((fl.label == LABELS["pc-cc"]) & (fl.inbound == 0))
    rows = 0
    with files("report_takedown", "reports/takedown-victims.csv").open(
        "w", encoding="ascii", newline=""
    ) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "ip", "port"])
        if cc_flows.size:
            server = fl.dst[cc_flows[0]]
            for i in cc_flows[fl.dst[cc_flows] == server].tolist():
                w.writerow([iso(float(fl.start[i])), ntoa(int(fl.src[i])), int(fl.sport[i])])
                rows += 1
    counts["report_takedown"] = rows
    vul = traffic.truth.get("vulnerable", [])
    with files("report_vulnerable", "reports/vulnerable-devices.csv").open(
        "w", encoding="ascii", newline=""
    ) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "ip", "port", "issue"])
        for v in vul:
            w.writerow([v["observed_at"], v["ip"], v["port"], "telnet-weak-password"])
    counts["report_vulnerable"] = len(vul)
    return counts


def write_all(
    world: World, traffic: Traffic, out: Path, files: Callable[[str, str], Path]
) -> tuple[dict[str, int], dict[str, Any]]:
    counts = write_unbound(world, traffic, out / "dns")
    for k in range(len(RESOLVERS)):
        files(f"unbound_resolver{k + 1}", f"dns/unbound-resolver{k + 1}.log")
        files(f"dnstap_resolver{k + 1}", f"dns/resolver{k + 1}.dnstap")
    counts["mail_lines"] = write_mail(world, traffic, files("mail_log", "mail/mail.log"))
    feed_counts, feeds_truth = (
        ({}, {}) if not world.cfg.feeds.enabled else write_feeds(world, traffic, out, files)
    )
    counts.update(feed_counts)
    counts.update(write_reports(world, traffic, files))
    return counts, feeds_truth
