"""The audit log's hash chain: any edit, deletion, insertion, reordering or truncation is found,
and verification points at the first broken entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from mamori.governance.audit import AuditLog

ENTRIES = 6


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path / "audit")
    for i in range(ENTRIES):
        log.append(
            actor=f"analyst:{i}",
            event="access",
            measure="M4",
            legal_basis="consent",
            dataset="flows",
            columns=("src_addr", "dst_addr"),
            detail={"n": i},
        )
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def test_untouched_log_verifies(log: AuditLog) -> None:
    result = log.verify()
    assert result.ok and result.entries == ENTRIES
    assert [e.seq for e in log.entries()] == list(range(1, ENTRIES + 1))


def test_empty_log_verifies(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "a").verify().ok


@pytest.mark.slow
def test_every_single_byte_edit_is_detected_at_its_entry(log: AuditLog) -> None:
    original = log.path.read_bytes()
    line_of = []
    for n, line in enumerate(original.splitlines(keepends=True), start=1):
        line_of += [n] * len(line)
    for pos in range(len(original)):
        for replacement in (b"0", b" "):
            if original[pos : pos + 1] == replacement:
                continue
            log.path.write_bytes(original[:pos] + replacement + original[pos + 1 :])
            result = log.verify()
            assert not result.ok, f"edit at byte {pos} went unnoticed"
            assert result.broken_at == line_of[pos], (pos, result)
    log.path.write_bytes(original)
    assert log.verify().ok


@pytest.mark.parametrize("k", range(ENTRIES))
def test_deleting_any_line_is_detected(log: AuditLog, k: int) -> None:
    lines = _lines(log)
    del lines[k]
    log.path.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok
    assert result.broken_at == k + 1


@pytest.mark.parametrize("k", range(ENTRIES - 1))
def test_swapping_adjacent_lines_is_detected(log: AuditLog, k: int) -> None:
    lines = _lines(log)
    lines[k], lines[k + 1] = lines[k + 1], lines[k]
    log.path.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok and result.broken_at == k + 1


def test_duplicated_line_is_detected(log: AuditLog) -> None:
    lines = _lines(log)
    lines.insert(3, lines[2])
    log.path.write_bytes(b"".join(lines))
    assert log.verify().broken_at == 4


def test_truncating_the_end_is_detected_by_head(log: AuditLog) -> None:
    lines = _lines(log)
    log.path.write_bytes(b"".join(lines[:-2]))
    result = log.verify()
    assert not result.ok and "HEAD" in result.reason
    assert result.broken_at == ENTRIES - 1


def test_rewriting_head_is_detected(log: AuditLog) -> None:
    log.head_path.write_text('{"seq": 6, "hash": "' + "f" * 64 + '"}\n')
    assert not log.verify().ok
    log.head_path.unlink()
    assert "missing" in log.verify().reason


def test_appending_continues_the_chain_across_instances(log: AuditLog) -> None:
    again = AuditLog(log.dir)
    entry = again.append(actor="auditor", event="verify")
    assert entry.seq == ENTRIES + 1
    assert entry.prev_hash == list(log.entries())[-2].hash
    assert again.verify().ok


@pytest.mark.parametrize("size", [0, 65_535, 65_536, 200_000])
def test_entries_longer_than_a_read_chunk_chain_on(tmp_path: Path, size: int) -> None:
    # an attribution entry lists every subscriber it resolved: megabytes on one line
    log = AuditLog(tmp_path / "a")
    first = log.append(actor="t", event="attribute", detail={"subscribers": ["x" * size]})
    second = log.append(actor="t", event="attribute", detail={"n": 1})
    assert (first.seq, second.seq) == (1, 2)
    assert second.prev_hash == first.hash
    assert log.verify().ok
