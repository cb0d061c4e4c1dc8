"""Is the evidence for C&C discovery there at all in sampled flows? Counts from the stored flows.

    PYTHONPATH=src .venv/bin/python bench/c2_feasibility.py WORK/demo-r1000-s0 [...]

For each directory built by ``bench/detect_eval.py`` (``sim/`` with truth.json, ``store/``): per
true C&C endpoint, the distinct internal hosts and sampled records reaching it (exchanges only),
and how many of those hosts are *suspects* (also reached a seed listed by the window's end); the
suspect counts per seed; and how many benign endpoints show at least the same evidence (hosts,
suspect hosts) — the candidates a detector would have to tell apart from the C&C.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from detect_eval import config_for
from mamori.detect.flowview import open_oriented
from mamori.detect.seeds import open_seeds
from mamori.governance import Governance


def report(work: Path) -> None:
    truth = json.loads((work / "sim" / "truth.json").read_text(encoding="utf-8"))
    gov = Governance(config_for(work / "sim", work / "store"))
    try:
        view = open_oriented(gov, "feasibility")
        seeds = open_seeds(gov, "feasibility", view.sandbox)
        v, s = view.name, seeds.name
        view.sandbox.execute(f"""CREATE OR REPLACE TEMP TABLE sus AS
            SELECT DISTINCT s.seed_id, o.host FROM {v} o JOIN {s} s
            ON o.ext = s.ip AND (s.port IS NULL OR o.eport = s.port)""")
        # suspect hosts: the most of any one seed's suspects (correlation works per seed)
        view.sandbox.execute(f"""CREATE OR REPLACE TEMP TABLE ep AS
            WITH o AS (SELECT * FROM {v} WHERE est AND NOT server_side),
            a AS (SELECT ext, eport, proto, count(DISTINCT host) AS hosts, count(*) AS recs,
                         sum(packets) AS pkts FROM o GROUP BY ALL),
            b AS (SELECT ext, eport, proto, seed_id, count(DISTINCT host) AS k
                  FROM o JOIN sus USING (host) GROUP BY ALL),
            bm AS (SELECT ext, eport, proto, max(k) AS sus_hosts FROM b GROUP BY ALL)
            SELECT a.*, coalesce(bm.sus_hosts, 0) AS sus_hosts
            FROM a LEFT JOIN bm USING (ext, eport, proto)""")
        n_hosts = view.sql(f"SELECT count(DISTINCT host) FROM {v}").fetchall()[0][0]
        n_sus = view.sql("SELECT count(DISTINCT host) FROM sus").fetchall()[0][0]
        print(
            f"## {work.name}: {n_hosts} internal hosts seen, {seeds.count} seeds, "
            f"{n_sus} suspect hosts (reached a seed)"
        )
        for ip, port, cat, n in view.sql(f"""
                SELECT s.ip, s.port, s.category, count(DISTINCT o.host) FROM {s} s
                LEFT JOIN {v} o ON o.ext = s.ip AND (s.port IS NULL OR o.eport = s.port)
                GROUP BY ALL ORDER BY 4 DESC""").fetchall():
            print(f"   seed {ip}:{port} {cat}: {n} hosts")
        listed = {f"{e['ip']}:{e['port']}" for e in truth["feeds"].get("delayed", [])}
        unl = {f"{e['ip']}:{e['port']}" for e in truth["feeds"].get("unlisted", [])}
        print(
            "   true C&C  (family, state, contacts unsampled): hosts, records, packets, "
            "suspect hosts of one seed | benign endpoints with >= as many hosts and suspect hosts"
        )
        cc = [e for e in truth["endpoints"] if e["role"] == "cc"]
        bad = [(e["ip"], int(e["port"])) for e in truth["endpoints"]]
        excl = " AND ".join(f"NOT (ext = '{i}' AND eport = {p})" for i, p in bad) or "TRUE"
        for e in cc:
            key = f"{e['ip']}:{e['port']}"
            st = "unlisted" if key in unl else "delayed" if key in listed else "listed"
            r = view.sql(
                f"SELECT hosts, recs, pkts, sus_hosts FROM ep WHERE ext = '{e['ip']}' "
                f"AND eport = {e['port']}"
            ).fetchall()
            h, rc, pk, sh = r[0] if r else (0, 0, 0, 0)
            like = view.sql(
                f"SELECT count(*) FROM ep WHERE {excl} AND hosts >= {max(h, 1)} "
                f"AND sus_hosts >= {sh}"
            ).fetchall()[0][0]
            print(
                f"   {key:<22} {e['family']:<15} {st:<9} {e.get('contacts', 0):>6}: "
                f"{h:>4} {rc:>5} {int(pk or 0):>6} {sh:>4} | {like}"
            )
        print(
            "   benign endpoints by suspect hosts (>=2 hosts): ",
            view.sql(f"""
            SELECT list(x ORDER BY x) FROM (SELECT sus_hosts || ':' || count(*) AS x,
            FROM ep WHERE {excl} AND hosts >= 2 GROUP BY sus_hosts)""").fetchall()[0][0],
        )
        view.close()
    finally:
        gov.close()


def ranking(work: Path, top: int = 15) -> None:
    """(seed, endpoint) pairs with >= 2 of the seed's suspects, by the Poisson tail of that overlap
    against the endpoint's popularity (no strata): where do the true C&C rank?"""
    from scipy.stats import poisson  # type: ignore[import-untyped]

    truth = json.loads((work / "sim" / "truth.json").read_text(encoding="utf-8"))
    role = {(e["ip"], int(e["port"])): e["role"] for e in truth["endpoints"]}
    gov = Governance(config_for(work / "sim", work / "store"))
    try:
        view = open_oriented(gov, "feasibility")
        seeds = open_seeds(gov, "feasibility", view.sandbox)
        v, s = view.name, seeds.name
        rows = view.sql(f"""
            WITH o AS (SELECT * FROM {v} WHERE est AND NOT server_side),
            n AS (SELECT count(DISTINCT host) AS n FROM {v}),
            sus AS (SELECT DISTINCT s.seed_id, s.ip AS sip, o.host FROM o JOIN {s} s
                    ON o.ext = s.ip AND (s.port IS NULL OR o.eport = s.port)),
            ks AS (SELECT seed_id, count(*) AS kseed FROM sus GROUP BY ALL),
            pop AS (SELECT ext, eport, count(DISTINCT host) AS nc FROM o GROUP BY ALL),
            pr AS (SELECT seed_id, sip, ext, eport, count(DISTINCT host) AS k
                   FROM o JOIN sus USING (host) WHERE ext <> sip GROUP BY ALL)
            SELECT sip, ext, eport, k, nc, kseed, n FROM pr JOIN pop USING (ext, eport)
            JOIN ks USING (seed_id) CROSS JOIN n WHERE k >= 1""").fetchall()
        view.close()
    finally:
        gov.close()
    scored = sorted(
        (float(poisson.sf(k - 1, nc * ks / n)), sip, ext, ep, k, nc, ks)
        for sip, ext, ep, k, nc, ks, n in rows
    )
    print(
        f"## {work.name}: {len(scored)} (seed, endpoint) pairs with a suspect; top {top}, "
        "then the C&C's pairs with their rank"
    )
    for rank, (p, sip, ext, ep, k, nc, ks) in enumerate(scored, 1):
        r = role.get((ext, int(ep)), "-")
        if rank > top and r != "cc":
            continue
        print(
            f"   #{rank:<4} "
            f"   p={p:9.2e} seed {sip:<16} -> {ext}:{ep:<6} k={k:<3} hosts={nc:<4} "
            f"seed_hosts={ks:<4} {r}"
        )


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        report(Path(arg))
        ranking(Path(arg))
