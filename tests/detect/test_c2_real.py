"""C&C discovery on real labelled flow logs, replayed as IPFIX through the collector with default
parameters (tests/data/labelled-flows/PROVENANCE.md): nothing is tuned to these files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.detect.flowlog_replay import replay_and_detect

DATA = Path(__file__).parent.parent / "data" / "labelled-flows"
SIMDA_CC = {"23.253.126.58", "104.239.157.210"}
ZEEK_005_OPEN = 1526315251.0  # 2018-05-14 16:27:31 UTC, the log's #open
SALITY_SHIFT = 1_400_000_000.0


def _run(tmp_path: Path, name: str, plan: str, shift: float) -> list[dict[str, Any]]:
    sent, stored, findings = replay_and_detect(DATA / name, plan, tmp_path / "store",
                                               shift_s=shift)  # fmt: skip
    assert sent > 0 and stored == sent, (sent, stored)
    return findings


def test_simda_rat_ranks_first(tmp_path: Path) -> None:
    """One infected host, its DGA C&C servers called hundreds of times an hour: first, and
    nothing multicast (the capture holds SSDP and LLMNR) or private is reported."""
    f = _run(tmp_path, "simda-conn.log.gz", "192.168.1.0/24", ZEEK_005_OPEN)
    top = [r["ip"] for r in f[:3]]
    assert top[0] in SIMDA_CC, top
    assert set(top) >= SIMDA_CC, top
    assert not {r["ip"] for r in f} & {"239.255.255.250", "224.0.0.252", "192.168.1.255"}


@pytest.mark.parametrize(
    ("name", "plan", "shift", "max_score"),
    [
        # a scanner is not a C&C: nothing at all
        ("portscan-conn.log.gz", "172.16.1.0/24", 0.0, None),
        # a normal user's day (web, BitTorrent, XMPP keep-alives): nothing more likely than not
        ("normal7.binetflow.gz", "10.0.0.0/24", 0.0, 0.5),
        # a P2P botnet's peers are not a C&C: never with high confidence
        ("sality.binetflow.gz", "192.168.1.0/24", SALITY_SHIFT, 0.5),
    ],
)
def test_no_confident_finding(tmp_path: Path, name: str, plan: str, shift: float,
                              max_score: float | None) -> None:  # fmt: skip
    f = _run(tmp_path, name, plan, shift)
    if max_score is None:
        assert f == []
    else:
        assert all(r["score"] < max_score for r in f), [(r["ip"], r["score"]) for r in f[:5]]
