"""The collector against the simulated ISP's routers: every exported record arrives, per exporter,
with the sampling rate each router announced (NetFlow v9 and IPFIX options, sFlow samples)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mamori.config import load_config
from mamori.governance import Governance
from mamori.ingest.collector import Collector
from mamori.sim import RouterSpec, scenario_config, simulate

ROUTERS = (
    RouterSpec(name="v9", protocol="netflow9", sampling=100, exporter_ip="127.0.1.1", port=2055),
    RouterSpec(
        name="ipfix",
        protocol="ipfix",
        sampling=1000,
        exporter_ip="127.0.1.2",
        source_id=5,
        port=4739,
    ),
    RouterSpec(name="sflow", protocol="sflow5", sampling=50, exporter_ip="127.0.1.3", port=6343),
    RouterSpec(
        name="v9-unsampled",
        protocol="netflow9",
        sampling=1,
        exporter_ip="127.0.1.4",
        port=2055,
        role="dc",
    ),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("sim")
    cfg = scenario_config("small", routers=ROUTERS)
    summary = simulate(cfg, out, seed=11)
    return out, summary.model_dump()


def test_every_exported_record_is_stored_with_its_routers_rate(
    world: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    out, summary = world
    gov = Governance(load_config(overrides={"store": tmp_path / "store"}))
    try:
        stats = Collector(gov).replay_pcap(out / "flows" / "exports.pcap")
    finally:
        gov.close()
    files = sorted((tmp_path / "store" / "flows").rglob("part-*.parquet"))
    rows: Counter[tuple[str, int | None]] = Counter()
    for f in files:
        t = pq.read_table(f, columns=["exporter", "sampling_rate"])
        rows.update(
            zip(
                t.column("exporter").to_pylist(), t.column("sampling_rate").to_pylist(), strict=True
            )
        )
    expected: Counter[tuple[str, int | None]] = Counter()
    routers = summary["routers"]
    assert isinstance(routers, list)
    by_name = {r.name: r for r in ROUTERS}
    for r in routers:
        spec = by_name[r["name"]]
        exported = r["samples"] if spec.protocol == "sflow5" else r["records"]
        assert exported > 0, r
        expected[(spec.exporter_ip, spec.sampling)] += exported
    assert rows == expected
    assert stats.counters["records.sampling_unknown"] == 0
    assert not [k for k in stats.counters if k.startswith("errors.")]
