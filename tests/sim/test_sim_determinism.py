from __future__ import annotations

import hashlib
from pathlib import Path

from mamori.sim import simulate


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    simulate("tiny", tmp_path / "a", seed=11)
    simulate("tiny", tmp_path / "b", seed=11)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b
    assert len(a) >= 15


def test_other_seed_other_bytes(tmp_path: Path) -> None:
    simulate("tiny", tmp_path / "a", seed=1)
    simulate("tiny", tmp_path / "b", seed=2)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a["flows/exports.pcap"] != b["flows/exports.pcap"]
