"""How long exporting the C&C list takes, per format, for many findings.

    .venv/bin/python bench/share_export.py [--findings 100000] [--sample 2000]

Builds a store with N c2 findings on N/2 distinct endpoints (outside the subscriber pools),
then times: the list (read through governance + aggregation), the guard (subscriber-pool check),
and the full export in each format, plus publishing into the TAXII collection. The reference is
the `stix2` library building the same three objects per endpoint, timed on a sample and scaled;
for MISP, PyMISP's model (MISPEvent.add_attribute + to_json) building the same attributes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import stix2

from mamori.config import AddressPool, load_config
from mamori.governance import Governance
from mamori.share import c2_list, export, guard, publish

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _timed(label: str, fn, *args, **kw):  # type: ignore[no-untyped-def]
    t, c = time.perf_counter(), time.process_time()
    result = fn(*args, **kw)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    # CPU time too: on a shared machine wall time mostly measures the neighbours.
    print(f"{label:<36} {dt:8.2f} s wall {dc:8.2f} s CPU")
    return result, dc


def _poll_all(gov: Governance) -> int:
    """Serve the collection on 127.0.0.1 and fetch every page with taxii2-client."""
    import threading

    import uvicorn
    from taxii2client.common import TokenAuth
    from taxii2client.v21 import Collection, as_pages

    from mamori.share import TrustStore, create_taxii_app
    from mamori.share.taxii import collection_id

    trust = TrustStore.of(gov)
    trust.set_group("bench", read=["c2"], write=[])
    key = trust.add_peer("bench", "bench")
    server = uvicorn.Server(
        uvicorn.Config(create_taxii_app(gov), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    cid = collection_id(gov.config.isp_name, "c2")
    col = Collection(f"http://127.0.0.1:{port}/api/collections/{cid}/", auth=TokenAuth(key))
    got = sum(len(p.get("objects", [])) for p in as_pages(col.get_objects, per_request=1000))
    col.close()
    server.should_exit = True
    thread.join()
    print(f"{'':<36} {got:8d} objects")
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--findings", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=2000)
    args = ap.parse_args()
    n = args.findings
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(overrides={"store": Path(tmp)}).model_copy(
            update={
                "address_plan": (AddressPool(name="dyn", kind="dynamic", prefixes=("10.0.0.0/8",)),)
            }
        )
        gov = Governance(cfg)
        ep = rng.integers(0, n // 2, n)
        ips = np.array([f"203.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in ep])
        ts = np.datetime64(T0.replace(tzinfo=None), "ms") + rng.integers(0, 86_400_000, n).astype(
            "timedelta64[ms]"
        )
        tsa = pa.array(ts, pa.timestamp("ms", tz="UTC"))
        gov.write(
            "M2",
            "findings",
            pa.table(
                {
                    "detected": tsa,
                    "finding_id": [f"f{i}" for i in range(n)],
                    "kind": ["c2"] * n,
                    "method": ["correlation"] * n,
                    "ip": ips,
                    "port": pa.array(443 + (ep % 7), pa.uint16()),
                    "protocol": ["tcp"] * n,
                    "score": pa.array(rng.random(n), pa.float32()),
                    "first_seen": tsa,
                    "last_seen": tsa,
                    "measure": ["M2"] * n,
                }
            ),
            "bench",
        )
        print(f"{n} findings")
        table, _ = _timed("list (governed read + aggregate)", c2_list, gov, "bench")
        endpoints = table.num_rows
        print(f"{endpoints} endpoints")
        _timed("guard (subscriber-pool check)", guard, gov, table, "bench", what="bench")
        per_fmt = {}
        for fmt in ("stix", "misp", "csv"):
            (data, _), dt = _timed(f"export {fmt}", export, gov, fmt, "bench")
            per_fmt[fmt] = dt
            print(f"{'':<36} {len(data) / 1e6:8.1f} MB")
        _timed("publish to TAXII collection c2", publish, gov, "bench")
        _timed("publish again (nothing new)", publish, gov, "bench")

        _timed("poll all over TAXII (taxii2-client)", _poll_all, gov)

        k = min(args.sample, endpoints)
        rows = table.slice(0, k).to_pylist()
        c = time.process_time()
        for r in rows:
            ind = stix2.Indicator(
                pattern=f"[network-traffic:dst_ref.type = 'ipv4-addr' AND "
                f"network-traffic:dst_ref.value = '{r['ip']}' AND "
                f"network-traffic:dst_port = {r['port']}]",
                pattern_type="stix",
                valid_from=r["first_seen"],
            )
            inf = stix2.Infrastructure(name="c2", infrastructure_types=["command-and-control"])
            stix2.Relationship(ind, "indicates", inf).serialize()
        ref = (time.process_time() - c) / k * endpoints
        print(f"{'reference: stix2 objects (scaled)':<36} {'':>15} {ref:8.2f} s CPU")
        print(f"stix export vs stix2 library (CPU): {ref / per_fmt['stix']:.1f}x faster")

        from pymisp import MISPEvent

        c = time.process_time()
        ev = MISPEvent()
        ev.info = "bench"
        for r in rows:
            a = ev.add_attribute(
                "ip-dst|port",
                f"{r['ip']}|{r['port']}",
                category="Network activity",
                to_ids=True,
                first_seen=r["first_seen"],
                last_seen=r["last_seen"],
            )
            a.add_tag('mamori:protocol="tcp"')
        ev.to_json()
        ref = (time.process_time() - c) / k * endpoints
        print(f"{'reference: PyMISP MISPEvent (scaled)':<36} {'':>15} {ref:8.2f} s CPU")
        print(f"misp export vs PyMISP model (CPU): {ref / per_fmt['misp']:.1f}x faster")
        gov.close()


if __name__ == "__main__":
    main()
