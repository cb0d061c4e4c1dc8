"""BIND 9 with Mamori's zones: Debian's named loading N listed names in the views of
``bind_snippet``, and what a consent change and a zone change cost.

    PYTHONPATH=src python bench/bind.py [--names 1000000]

Prints: named's start-up time with the zones (until a listed name is blocked) and resident memory;
a consent withdrawal and a grant through ``sync_resolver`` (ACL file + ``rndc reconfig``) until
the answer changes; a new list entry (zones regenerated, ``rndc reload`` in every view) until it
is blocked in both views that hold the C&C zone. The same reputation data as bench/rpz.py, so the
figures compare with Unbound's there (reference: Unbound's ``reload_keep_cache``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dns.exception
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.rpz import reputation
from tests.bind_harness import Named, running_named
from tests.unbound_harness import DOMAIN

from mamori.act.resolver import (
    RndcControl,
    bind_snippet,
    prepare_resolver_files,
    sync_resolver,
)
from mamori.config import DnsConfig, load_config
from mamori.governance import Governance


def _until(named: Named, name: str, client: str, rcode: str, limit_s: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        try:
            if named.answer(name, client)[0] == rcode:
                return time.perf_counter() - t0
        except dns.exception.Timeout:
            pass
        time.sleep(0.01)
    raise SystemExit(f"{name} from {client} never answered {rcode}")


def _timed(step: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mamori-bind-bench-") as tmp:
        root = Path(tmp)
        cfg = load_config(overrides={"store": root / "store"}).model_copy(
            update={"dns": DnsConfig(warning_host=f"warning.{DOMAIN}.")}
        )
        gov = Governance(cfg)
        listed = reputation(args.names)

        def load(*extra: str) -> None:
            """The list plus ``extra`` C&C names, as one load (zones use a feed's latest load)."""
            n = len(extra)
            loaded = pa.array([datetime.now(UTC)], pa.timestamp("ms", tz="UTC"))
            rows = pa.table(
                {
                    "loaded": pa.array([loaded[0]] * n, loaded.type),
                    "indicator_type": ["domain"] * n,
                    "domain": list(extra),
                    "category": ["c2"] * n,
                    "source": ["bench"] * n,
                }
            )
            base = listed.set_column(0, "loaded", pa.array([loaded[0]] * len(listed), loaded.type))
            gov.write_registry("reputation", pa.concat_tables([base, rows]), "bench", source="b")

        load(f"cc1.{DOMAIN}")
        gov.write_registry(
            "allocations",
            pa.table(
                {
                    "start": pa.array(
                        [datetime(2020, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("ms", tz="UTC")
                    ),
                    "addr": ["127.0.0.2", "127.0.0.5"],
                    "subscriber_id": ["s1", "s2"],
                }
            ),
            "bench",
            source="csv",
        )
        gov.consent.set("s2", "M8", False, actor="bench", channel="web")  # view mamori-m7
        t0 = time.perf_counter()
        result = prepare_resolver_files(gov, "bench")
        records = sum(z.records for z in result.zones)
        print(
            f"zone generation: {sum(z.names for z in result.zones):,} names, {records:,} policy "
            f"records in {time.perf_counter() - t0:.2f} s"
        )
        t0 = time.perf_counter()
        with running_named(root / "named", bind_snippet(cfg), ready_timeout_s=1800) as nd:
            _until(nd, f"cc1.{DOMAIN}", "127.0.0.2", "NXDOMAIN")
            _until(nd, f"cc1.{DOMAIN}", "127.0.0.5", "NXDOMAIN")
            startup = time.perf_counter() - t0
            rss = subprocess.run(
                ["ps", "-o", "rss=", "-p", str(nd.pid)], capture_output=True, text=True, check=True
            ).stdout.strip()
            print(
                f"named start-up with the zones (each held by two views): {startup:.2f} s, "
                f"RSS {int(rss) / 1024:,.0f} MiB"
            )
            ctl = RndcControl(nd.rndc, timeout_s=600)
            gov.consent.set("s1", "M7", False, actor="bench", channel="web")
            t0 = time.perf_counter()
            sync = _timed(lambda: sync_resolver(gov, "bench", control=ctl))
            _until(nd, f"cc1.{DOMAIN}", "127.0.0.2", "NOERROR")
            print(
                f"consent withdrawal applied (resolver-sync + rndc reconfig): "
                f"{time.perf_counter() - t0:.2f} s (sync call {sync:.2f} s)"
            )
            gov.consent.set("s1", "M7", True, actor="bench", channel="web")
            t0 = time.perf_counter()
            sync_resolver(gov, "bench", control=ctl)
            _until(nd, f"cc1.{DOMAIN}", "127.0.0.2", "NXDOMAIN")
            print(f"consent grant applied: {time.perf_counter() - t0:.2f} s")
            load(f"cc1.{DOMAIN}", f"malware.{DOMAIN}")
            t0 = time.perf_counter()
            sync_resolver(gov, "bench", control=ctl, zones=True)
            gen = time.perf_counter() - t0
            _until(nd, f"malware.{DOMAIN}", "127.0.0.2", "NXDOMAIN")
            _until(nd, f"malware.{DOMAIN}", "127.0.0.5", "NXDOMAIN")
            print(
                f"new list entry blocked in both views (zones rewritten in {gen:.2f} s, "
                f"rndc reload per view): {time.perf_counter() - t0:.2f} s"
            )
        gov.close()


if __name__ == "__main__":
    main()
