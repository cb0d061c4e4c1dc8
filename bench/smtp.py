"""SMTP AUTH brute force: Mamori against fail2ban's postfix-sasl and dovecot jails on the same log,
and Mamori's parse rate.

    PYTHONPATH=src .venv/bin/python bench/smtp.py [--scenario demo] [--seed 0]
        [--work /tmp/smtp-bench] [--lines 2000000] [--repeat 3]

1. The simulated ISP's ``mail.log`` (Postfix submission + Dovecot, with a brute force from
   outside, compromised accounts, honest users' typos and a device with an old password).
2. fail2ban (Debian's package): ``fail2ban-regex --out row LOG 'postfix[mode=auth]'`` and
   ``… dovecot`` give every failure line the filters match, with its time and address; the jails'
   logic (Debian's jail.conf: ``maxretry = 5`` within ``findtime = 10m``) is applied to them: an
   address is banned at its fifth failure within ten minutes.
3. Mamori: ``ingest mail`` (both formats) into a fresh store and the brute-force detector
   (``smtp-brute-force``, defaults: the same 5 in 10 minutes, plus enumeration, distributed and
   slow attacks), through governance.
4. Both against the truth: addresses found, missed, wrongly found, and when (log time) each was
   banned or refused after the attack's first failure.
5. Parse rate: Mamori's Postfix and Dovecot parsers on the log repeated up to ``--lines`` lines
   in 32 MB blocks, on one thread and on ``--workers`` (process CPU time and wall time, best of
   ``--repeat``), and fail2ban-regex's own rate on the log.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from mamori.config import load_config
from mamori.detect.base import Window
from mamori.detect.smtp_bruteforce import BruteForceDetector
from mamori.governance import Governance
from mamori.ingest.mail import MailParser, ingest_mail_file
from mamori.ingest.mail.load import BLOCK_BYTES, parse_blocks
from mamori.sim import simulate

JAILS = {"postfix-sasl": "postfix[mode=auth]", "dovecot": "dovecot"}
MAXRETRY, FINDTIME_S = 5, 600  # Debian's jail.conf [DEFAULT]


def fail2ban(log: Path, filt: str) -> tuple[list[tuple[str, float]], float]:
    """(address, epoch) of every failure the filter matches, and fail2ban-regex's wall time."""
    t0 = time.perf_counter()
    out = subprocess.run(
        ["fail2ban-regex", "--out", "row", str(log), filt],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    wall = time.perf_counter() - t0
    rows = []
    for line in out.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("["):
            ip, ts, _ = ast.literal_eval(line.replace("\t", " "))
            rows.append((str(ip), float(ts)))
    return rows, wall


def jail(failures: list[tuple[str, float]]) -> dict[str, float]:
    """Address → time of its first ban (maxretry failures within findtime)."""
    by_ip: dict[str, list[float]] = defaultdict(list)
    for ip, ts in failures:
        by_ip[ip].append(ts)
    bans = {}
    for ip, times in by_ip.items():
        times.sort()
        for i in range(MAXRETRY - 1, len(times)):
            if times[i] - times[i - MAXRETRY + 1] <= FINDTIME_S:
                bans[ip] = times[i]
                break
    return bans


def mamori(log: Path, store: Path) -> tuple[dict[str, float], dict[str, Any]]:
    shutil.rmtree(store, ignore_errors=True)
    with Governance(load_config(overrides={"store": store})) as gov:
        for fmt in ("postfix", "dovecot"):
            ingest_mail_file(gov, log, fmt, actor="bench")
        run = BruteForceDetector(write=False).run(gov, Window(), actor="bench")
    found = {}
    for f in run.findings.to_pylist():
        trigger = datetime.fromisoformat(json.loads(f["evidence"])["trigger"]).timestamp()
        found[f["ip"]] = min(trigger, found.get(f["ip"], trigger))
    return found, run.summary


def parse_rate(log: Path, lines: int, repeat: int, workers: int) -> dict[str, Any]:
    data = log.read_bytes()
    n = data.count(b"\n")
    big = data * max(1, lines // max(n, 1))
    out: dict[str, Any] = {
        "lines": big.count(b"\n"),
        "megabytes": round(len(big) / 1e6, 1),
        "workers": workers,
        "cpus": os.cpu_count(),
    }
    for fmt in ("postfix", "dovecot"):
        best_cpu = best_wall = float("inf")
        for _ in range(repeat):
            c0, w0 = time.process_time(), time.perf_counter()
            parser = MailParser(fmt, reference=datetime.now(UTC))  # type: ignore[arg-type]
            blocks = (big[i : i + BLOCK_BYTES] for i in range(0, len(big), BLOCK_BYTES))
            events = pa.concat_tables(parse_blocks(parser, blocks, workers=workers))
            best_cpu = min(best_cpu, time.process_time() - c0)
            best_wall = min(best_wall, time.perf_counter() - w0)
        out[fmt] = {
            "events": events.num_rows,
            "cpu_s": round(best_cpu, 3),
            "wall_s": round(best_wall, 3),
            "lines_per_s_cpu": round(out["lines"] / best_cpu),
            "lines_per_s_wall": round(out["lines"] / best_wall),
        }
    return out


def _score(found: dict[str, float], truth: set[str]) -> dict[str, Any]:
    tp = set(found) & truth
    return {
        "found": sorted(found),
        "true": len(tp),
        "missed": sorted(truth - set(found)),
        "wrong": sorted(set(found) - truth),
        "precision": round(len(tp) / len(found), 4) if found else 0.0,
        "recall": round(len(tp) / len(truth), 4) if truth else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/smtp-bench"))
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = ap.parse_args()
    if not shutil.which("fail2ban-regex"):
        sys.exit("fail2ban-regex not found (Debian package fail2ban)")
    sim = args.work / f"{args.scenario}-s{args.seed}"
    if not (sim / "truth.json").exists():
        simulate(args.scenario, sim, seed=args.seed)
    log = sim / "mail" / "mail.log"
    truth = json.loads((sim / "truth.json").read_text())["smtp"]
    attackers = set(truth["brute_force"]["sources"])
    n_lines = log.read_bytes().count(b"\n")

    f2b_fail: list[tuple[str, float]] = []
    f2b_wall = 0.0
    per_jail = {}
    bans: dict[str, float] = {}  # the jails ban separately: an address banned by either
    for name, filt in JAILS.items():
        rows, wall = fail2ban(log, filt)
        banned = jail(rows)
        f2b_fail += rows
        f2b_wall += wall
        per_jail[name] = {"failures_matched": len(rows), "banned": sorted(banned),
                          "seconds": round(wall, 2)}  # fmt: skip
        for ip, t in banned.items():
            bans[ip] = min(t, bans.get(ip, t))

    t0 = time.perf_counter()
    found, summary = mamori(log, args.work / "store")
    m_wall = time.perf_counter() - t0

    first_fail = {}
    for ip, ts in f2b_fail:
        first_fail[ip] = min(ts, first_fail.get(ip, ts))

    def delays(hits: dict[str, float]) -> dict[str, float | None]:
        return {ip: round(hits[ip] - first_fail[ip], 1) if ip in first_fail else None
                for ip in sorted(hits) if ip in attackers}  # fmt: skip

    report = {
        "scenario": args.scenario,
        "seed": args.seed,
        "log_lines": n_lines,
        "attackers": sorted(attackers),
        "fail2ban": {
            **_score(bans, attackers),
            "jails": per_jail,
            "seconds_to_ban_after_first_failure": delays(bans),
            "regex_seconds": round(f2b_wall, 2),
            "lines_per_s": round(2 * n_lines / f2b_wall),
        },
        "mamori": {
            **_score(found, attackers),
            "summary": summary,
            "seconds_to_refuse_after_first_failure": delays(found),
            "ingest_and_detect_seconds": round(m_wall, 2),
        },
        "parse_rate": {
            f"{w}_workers": parse_rate(log, args.lines, args.repeat, w)
            for w in sorted({1, args.workers})
        },
    }
    print(json.dumps(report, indent=1))
    (args.work / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
