"""A simulated ISP's store (scenario ``small``) read by both engines, and one Spark session.

The store holds what the demo loads: subscribers (with opt-outs), RADIUS, Kea and CGNAT
allocations, the routers' flows, resolver queries and the feeds, so the consent filter meets
every case it handles. Spark starts once per test session (seconds) in ``local[2]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mamori.config import MamoriConfig, load_config
from mamori.governance import Governance

MASTER = "local[2]"


def build_store(out: Path, scenario: str = "small", seed: int = 3) -> Path:
    """Simulate ``scenario`` into ``out/sim``, load it into ``out/store``; returns the config
    file (DuckDB engine)."""
    from mamori.demo import demo_config
    from mamori.ingest.allocations import SubscriberMap, load_allocations
    from mamori.ingest.collector import Collector, replaying
    from mamori.ingest.dns import ingest_dnstap_file
    from mamori.ingest.reputation import load_feed
    from mamori.ingest.subscribers import load_subscribers
    from mamori.sim import simulate

    sim = out / "sim"
    summary = simulate(scenario, sim, seed=seed)
    files = {k: sim / v for k, v in summary.files.items()}
    cfg = demo_config(MamoriConfig(), out, sim, "127.0.0.1", 25)
    actor = "parity"
    with Governance(cfg) as gov:
        load_subscribers(gov, files["subscribers"], actor=actor, opted_out_column="opted_out")
        by_user = SubscriberMap.from_csv(files["subscribers"], "user_name")
        load_allocations(gov, files["radius_detail"], "radius", actor=actor, subscribers=by_user)
        load_allocations(
            gov,
            files["kea_leases"],
            "kea",
            actor=actor,
            kea_key="hostname",
            subscribers=SubscriberMap(pattern=r"^host-0*(\d+)$"),
        )
        load_allocations(gov, files["cgnat_syslog"], "cgnat-syslog", actor=actor)
        Collector(gov, replaying(gov.config.collector)).replay_pcap(files["pcap"])
        for key in sorted(k for k in files if k.startswith("dnstap_")):
            ingest_dnstap_file(gov, files[key], actor)
        for key, fmt in (("feodo", "feodo"), ("urlhaus", "urlhaus"), ("threatfox", "threatfox")):
            load_feed(gov, files[key], fmt, actor=actor, source=key)
    return write_config(cfg, out / "duckdb.toml", detect=SIM_INTERNET)


#: the simulator's Internet is the documentation ranges, which C&C discovery otherwise never reports
SIM_INTERNET = {"c2": {"report_documentation": True}}


def write_config(cfg: MamoriConfig, path: Path, **extra: Any) -> Path:
    """``cfg``'s store and address plan as a TOML file, plus top-level ``extra`` lines."""
    q = json.dumps
    lines = [f"store = {q(str(cfg.store.resolve()))}"]
    lines += [f"{k} = {q(v)}" for k, v in extra.items() if not isinstance(v, dict)]
    for p in cfg.address_plan:
        lines += [
            "[[address_plan]]",
            f"name = {q(p.name)}",
            f"kind = {q(p.kind)}",
            f"prefixes = {q([str(n) for n in p.prefixes])}",
        ]
    for k, v in extra.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {q(vv)}" for kk, vv in v.items() if not isinstance(vv, dict)]
            for kk, vv in v.items():
                if isinstance(vv, dict):
                    lines.append(f"[{k}.{kk}]")
                    lines += [f"{q(k3)} = {q(v3)}" for k3, v3 in vv.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(DuckDB config file, Spark config file) over the same ``small`` store."""
    out = tmp_path_factory.mktemp("parity")
    duck = build_store(out)
    cfg = load_config(duck)
    spark = write_config(
        cfg,
        out / "spark.toml",
        engine="spark",
        spark={"master": MASTER, "conf": {"spark.sql.shuffle.partitions": "4"}},
        detect=SIM_INTERNET,
    )
    return duck, spark


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """The one Spark session of the test run (``local[2]``)."""
    pytest.importorskip("pyspark")
    from mamori.store.spark import session

    yield session(MASTER, {"spark.sql.shuffle.partitions": "4"})
