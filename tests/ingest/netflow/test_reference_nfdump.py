"""Record-for-record equality with nfdump, on softflowd's v5, v9 and IPFIX export of a real
botnet capture (Hide'n'Seek, StratosphereIPS test7-malicious.pcap)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mamori.ingest.netflow import Datagram, FlowDecoder
from tests.ingest.reference_tools import mamori_key, nfdump_decode, nfdump_key, softflowd_export

CAPTURE = Path(__file__).resolve().parents[2] / "data" / "captures" / "test7-malicious.pcap"

pytestmark = [pytest.mark.reference_tools, pytest.mark.slow]


@pytest.mark.parametrize("version", [5, 9, 10])
def test_softflowd_export_equals_nfdump(version: int) -> None:
    exported = softflowd_export(CAPTURE, version)
    reference = nfdump_decode(exported)
    result = FlowDecoder().decode([Datagram("127.0.0.1", p, 0.0) for p in exported])
    name = {5: "v5", 9: "v9", 10: "ipfix"}[version]
    assert result.counters[f"packets.{name}"] == len(exported)
    assert not [k for k in result.counters if k.startswith(("errors.", "templates.unknown"))]
    ours = Counter(mamori_key(r) for r in result.flows.to_pylist())
    theirs = Counter(nfdump_key(r) for r in reference)
    assert len(reference) > 300
    assert ours == theirs
    if version != 5:  # v5 carries no IPv6
        # Neighbour solicitation to a solicited-node group: ICMPv6 type 135, code 0.
        nd = [r for r in result.flows.to_pylist() if r["dst_addr"] == "ff02::1:ff8e:c3d1"]
        assert [(r["protocol"], r["dst_port"]) for r in nd] == [(58, 135 * 256)]
