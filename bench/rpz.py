"""RPZ benchmark: zone generation for N listed names, and Debian's Unbound loading the result.

    PYTHONPATH=src python bench/rpz.py [--names 1000000] [--no-subdomains]

Prints: time to read the reputation entries through governance and write both zones; Unbound's
start-up time with the zones (until a listed name is blocked), its resident memory, the time of
``auth_zone_reload`` and of ``reload_keep_cache`` (what a consent change costs); and, as a
reference, dnspython parsing the same zone file (the library's own zone reader).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unbound_harness import DOMAIN, running_unbound

from mamori.act.resolver import (
    UnboundControl,
    prepare_resolver_files,
    sync_resolver,
    unbound_snippet,
)
from mamori.config import DnsConfig, load_config
from mamori.governance import Governance


def reputation(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    idx = pa.array(np.arange(n))
    words = pc.cast(idx, pa.string())
    sub = pc.cast(pa.array(rng.integers(0, 50_000, n)), pa.string())
    domain = pc.binary_join_element_wise("host", words, ".d", sub, ".bench.example", "")
    cats = np.where(rng.random(n) < 0.5, "c2", "malware-site")
    now = datetime.now(UTC)
    return pa.table(
        {
            "loaded": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
            "indicator_type": pa.array(["domain"] * n),
            "domain": domain,
            "category": pa.array(cats),
            "source": pa.array(["bench"] * n),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--no-subdomains", action="store_true")
    ap.add_argument("--skip-unbound", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mamori-rpz-bench-") as tmp:
        root = Path(tmp)
        cfg = load_config(overrides={"store": root / "store"}).model_copy(
            update={
                "dns": DnsConfig(
                    warning_host=f"warning.{DOMAIN}.", subdomains=not args.no_subdomains
                )
            }
        )
        gov = Governance(cfg)
        # plus a listed C&C name that resolves upstream, to see when Unbound applies the zone;
        # one load (the zones use each source's latest load)
        listed = reputation(args.names)
        probe = pa.table(
            {
                "loaded": listed.column("loaded").slice(0, 1),
                "indicator_type": ["domain"],
                "domain": [f"cc1.{DOMAIN}"],
                "category": ["c2"],
                "source": ["bench"],
            }
        )
        gov.write_registry("reputation", pa.concat_tables([listed, probe]), "bench", source="bench")
        gov.write_registry(
            "allocations",
            pa.table(
                {
                    "start": pa.array(
                        [datetime(2020, 1, 1, tzinfo=UTC)], pa.timestamp("ms", tz="UTC")
                    ),
                    "addr": ["127.0.0.2"],
                    "subscriber_id": ["s1"],
                }
            ),
            "bench",
            source="csv",
        )
        t0 = time.perf_counter()
        result = prepare_resolver_files(gov, "bench")
        gen = time.perf_counter() - t0
        names = sum(z.names for z in result.zones)
        records = sum(z.records for z in result.zones)
        size = sum(z.path.stat().st_size for z in result.zones)
        print(
            f"zone generation: {names:,} names, {records:,} policy records, "
            f"{size / 1e6:.1f} MB in {gen:.2f} s ({names / gen:,.0f} names/s)"
        )
        for z in result.zones:
            print(
                f"  {z.measure} {z.zone}: {z.names:,} names, serial {z.serial}, {z.seconds:.2f} s"
            )
        if args.skip_unbound:
            return
        t0 = time.perf_counter()
        with running_unbound(
            root / "unbound", unbound_snippet(cfg), checkconf=False, ready_timeout_s=900
        ) as ub:
            while ub.answer(f"cc1.{DOMAIN}", "127.0.0.2")[0] != "NXDOMAIN":
                time.sleep(0.1)
            load = time.perf_counter() - t0
            rss = subprocess.run(
                ["ps", "-o", "rss=", "-p", str(ub.pid)], capture_output=True, text=True, check=True
            ).stdout.strip()
            print(f"unbound start-up with the zones: {load:.2f} s, RSS {int(rss) / 1024:,.0f} MiB")
            ctl = UnboundControl(ub.control, timeout_s=600)
            t0 = time.perf_counter()
            ctl("auth_zone_reload", result.by_measure("M7").zone)
            print(f"unbound auth_zone_reload (M7 zone): {time.perf_counter() - t0:.2f} s")
            # a subscriber withdraws consent: the opt-out zone (no big zone reload)
            gov.config = cfg.model_copy(
                update={"dns": cfg.dns.model_copy(update={"tag_reload_min_interval_s": 3600})}
            )
            gov.state_dir("resolver").joinpath("last_reload").write_text(repr(time.time()))
            t0 = time.perf_counter()
            gov.consent.set("s1", "M7", False, actor="bench", channel="web")
            sync = sync_resolver(gov, "bench", control=ctl)
            while ub.answer(f"cc1.{DOMAIN}", "127.0.0.2")[0] != "NOERROR":
                time.sleep(0.01)
            print(
                f"consent withdrawal applied (opt-out zone, {sync.passthru} address): "
                f"{time.perf_counter() - t0:.2f} s"
            )
            gov.consent.set("s1", "M7", True, actor="bench", channel="web")
            t0 = time.perf_counter()
            sync_resolver(gov, "bench", control=ctl, force=True)  # empties the opt-out zone
            while True:
                try:
                    if (
                        ub.answer(
                            f"cc1.{DOMAIN}",
                            "127.0.0.2",
                        )[0]
                        == "NXDOMAIN"
                    ):
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            print(
                "unbound reload_keep_cache (tags: a grant of consent, or the exact tags after a "
                f"withdrawal): {time.perf_counter() - t0:.2f} s"
            )
        import dns.zone

        z = result.by_measure("M7")
        t0 = time.perf_counter()
        dns.zone.from_file(str(z.path), origin=z.zone)
        ref = time.perf_counter() - t0
        print(
            f"reference: dnspython parses the M7 zone in {ref:.2f} s "
            f"(generation of both zones is {ref / gen:.1f}x faster)"
        )
        gov.close()


if __name__ == "__main__":
    main()
