"""Partitioned Parquet writes: layout, atomicity, schema enforcement; the DuckDB engine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mamori.schemas import FLOWS
from mamori.store import DuckDBEngine, SchemaMismatch
from mamori.store import parquet as store_parquet
from mamori.store.parquet import clean_temporary, write_partitioned
from tests.conftest import HOUR, T0, flow, table


def test_layout_one_file_per_hour(tmp_path: Path) -> None:
    rows = [flow("10.0.0.1", "203.0.113.1", T0 + timedelta(minutes=m)) for m in range(0, 180, 20)]
    files = write_partitioned(tmp_path, FLOWS, table(rows))
    rel = sorted(f.relative_to(tmp_path).parent.as_posix() for f in files)
    assert rel == [
        "flows/date=2026-11-01/hour=10",
        "flows/date=2026-11-01/hour=11",
        "flows/date=2026-11-01/hour=12",
    ]
    assert sum(pq.read_metadata(f).num_rows for f in files) == 9
    assert all(f.name.startswith("part-") and f.suffix == ".parquet" for f in files)
    assert pq.read_schema(files[0]) == FLOWS.arrow


def test_midnight_and_day_boundary(tmp_path: Path) -> None:
    t = T0.replace(hour=23, minute=59)
    files = write_partitioned(
        tmp_path, FLOWS, table([flow("a", "b", t), flow("a", "b", t + timedelta(minutes=2))])
    )
    assert {f.parent.relative_to(tmp_path).as_posix() for f in files} == {
        "flows/date=2026-11-01/hour=23",
        "flows/date=2026-11-02/hour=00",
    }


def test_schema_enforced(tmp_path: Path) -> None:
    with pytest.raises(SchemaMismatch, match="not in the schema"):
        write_partitioned(tmp_path, FLOWS, table([{**flow("a", "b", T0), "payload": "x"}]))
    with pytest.raises(SchemaMismatch, match="required column src_addr"):
        write_partitioned(tmp_path, FLOWS, pa.table({"time_start": [T0], "time_end": [T0]}))
    with pytest.raises(SchemaMismatch, match="null value"):
        write_partitioned(tmp_path, FLOWS, table([flow(None, "b", T0)]))  # type: ignore[arg-type]
    with pytest.raises(SchemaMismatch, match="cannot store"):
        write_partitioned(tmp_path, FLOWS, table([{**flow("a", "b", T0), "src_port": 70000}]))
    assert not list(tmp_path.rglob("*.parquet"))


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(tbl: pa.Table, where: object, **kw: object) -> None:
        where.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(store_parquet.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_partitioned(tmp_path, FLOWS, table([flow("a", "b", T0)]))
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_killed_writer_leaves_no_visible_half_file(tmp_path: Path) -> None:
    """A process killed (SIGKILL) in the middle of a write leaves at most a hidden temporary
    file, which readers ignore and clean_temporary removes."""
    script = textwrap.dedent(f"""
        import os, signal, pyarrow.parquet as pq
        from datetime import datetime, UTC
        import pyarrow as pa
        from mamori.schemas import FLOWS
        from mamori.store import parquet
        real = pq.write_table
        def dying(t, fh, **kw):
            fh.write(b"PAR1 partial")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        parquet.pq.write_table = dying
        t0 = datetime(2026, 11, 1, 10, tzinfo=UTC)
        rows = [dict(time_start=t0, time_end=t0, src_addr="a", dst_addr="b")]
        parquet.write_partitioned(__import__("pathlib").Path({str(tmp_path)!r}), FLOWS,
                                  pa.Table.from_pylist(rows))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert proc.returncode == -9
    assert list(tmp_path.rglob("part-*.parquet")) == []
    assert DuckDBEngine(tmp_path).scan(FLOWS).to_arrow_table().num_rows == 0
    assert clean_temporary(tmp_path) == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_engine_scan_window_and_columns(tmp_path: Path) -> None:
    rows = [flow("10.0.0.1", "203.0.113.1", T0 + timedelta(minutes=m)) for m in range(0, 240, 30)]
    write_partitioned(tmp_path, FLOWS, table(rows))
    eng = DuckDBEngine(tmp_path)
    assert len(eng.files(FLOWS, T0 + HOUR, T0 + 2 * HOUR)) == 1
    got = eng.scan(FLOWS, ["time_start", "dst_addr"], T0 + HOUR, T0 + 2 * HOUR).to_arrow_table()
    assert got.column_names == ["time_start", "dst_addr"]
    assert got.column("time_start").to_pylist() == [T0 + HOUR, T0 + HOUR + timedelta(minutes=30)]
    empty = DuckDBEngine(tmp_path / "none").scan(FLOWS, ["src_addr"]).to_arrow_table()
    assert empty.num_rows == 0 and empty.column_names == ["src_addr"]
    with pytest.raises(KeyError, match="no column 'nope'"):
        eng.scan(FLOWS, ["nope"])


def test_files_are_not_world_writable(tmp_path: Path) -> None:
    files = write_partitioned(tmp_path, FLOWS, table([flow("a", "b", T0)]))
    assert not os.stat(files[0]).st_mode & 0o002


def test_length_limit_counts_characters_not_bytes_and_respects_slices(tmp_path: Path) -> None:
    from mamori.schemas import CONSENT
    from mamori.store.parquet import conform

    note = "同意を撤回します" * 120  # 960 characters, 2,880 bytes: within the 1,024 limit
    rows = pa.Table.from_pylist(
        [
            {
                "changed": T0,
                "subscriber_id": "s",
                "measure": "M4",
                "state": "out",
                "actor": "s",
                "channel": "web",
                "note": n,
            }
            for n in ("x" * 2000, note, "ok")
        ]
    )
    with pytest.raises(SchemaMismatch, match="2000 characters"):
        conform(CONSENT, rows)
    assert conform(CONSENT, rows.slice(1)).num_rows == 2  # the long row sliced away


@pytest.mark.parametrize(
    ("older_columns", "same"),
    [
        (None, True),  # every file written with today's schema: read without union_by_name
        (["time_start", "src_addr", "dst_addr"], False),  # a file from before a column existed
    ],
)
def test_engine_scan_reads_files_of_older_schemas(
    tmp_path: Path, older_columns: list[str] | None, same: bool
) -> None:
    files = write_partitioned(tmp_path, FLOWS, table([flow("10.0.0.1", "203.0.113.1", T0)]))
    later = write_partitioned(
        tmp_path, FLOWS, table([flow("10.0.0.2", "203.0.113.2", T0 + 5 * HOUR)])
    )
    if older_columns is not None:  # rewrite the first file as an older writer left it
        pq.write_table(pq.read_table(files[0], columns=older_columns), files[0])
    assert store_parquet.same_columns([*files, *later]) is same
    got = DuckDBEngine(tmp_path).scan(FLOWS, ["src_addr", "src_port"]).to_arrow_table()
    assert sorted(got.column("src_addr").to_pylist()) == ["10.0.0.1", "10.0.0.2"]
    assert got.column("src_port").null_count == (0 if same else 1)


def test_engine_scan_reads_a_column_no_file_has_yet_as_nulls(tmp_path: Path) -> None:
    files = write_partitioned(tmp_path, FLOWS, table([flow("10.0.0.1", "203.0.113.1", T0)]))
    pq.write_table(pq.read_table(files[0], columns=["time_start", "src_addr"]), files[0])
    got = DuckDBEngine(tmp_path).scan(FLOWS, ["src_addr", "src_port", "time_end"]).to_arrow_table()
    assert got.column("src_addr").to_pylist() == ["10.0.0.1"]
    assert got.column("src_port").to_pylist() == [None]
    # the type a file that has the column reads as
    full = write_partitioned(tmp_path / "b", FLOWS, table([flow("10.0.0.2", "203.0.113.2", T0)]))
    assert full
    want = DuckDBEngine(tmp_path / "b").scan(FLOWS, ["time_end"]).to_arrow_table()
    assert got.schema.field("time_end").type == want.schema.field("time_end").type


def test_stream_writer_keeps_at_most_max_open_files_open(tmp_path: Path) -> None:
    writer = store_parquet.StreamWriter(tmp_path, FLOWS, max_open=3)
    hours = [T0 + timedelta(hours=h) for h in range(10)]
    for h in hours:
        writer.write(table([flow("10.0.0.1", "203.0.113.1", h)]))
        assert writer.open_files <= 3
    writer.write(table([flow("10.0.0.1", "203.0.113.1", hours[0])]))  # closed early: a new file
    assert writer.closed_early == 8
    assert list(tmp_path.rglob("part-*.parquet")) == []  # nothing visible before the commit
    files, rows = writer.commit()
    assert rows == 11 and len(files) == 11
    assert sorted(f.parent.name for f in files).count("hour=10") == 2
    assert sum(pq.read_metadata(f).num_rows for f in files) == 11
    assert list(tmp_path.rglob("*.tmp")) == [] and list(tmp_path.rglob(".writer-*")) == []


def test_remove_stale_streams_spares_running_writers_and_other_files(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        from datetime import datetime, UTC
        import pyarrow as pa
        from mamori.schemas import FLOWS
        from mamori.store.parquet import StreamWriter
        w = StreamWriter(__import__("pathlib").Path({str(tmp_path)!r}), FLOWS)
        t0 = datetime(2026, 11, 1, 10, tzinfo=UTC)
        w.write(pa.Table.from_pylist([dict(time_start=t0, time_end=t0, src_addr="a",
                                           dst_addr="b")]))
        print("written", flush=True)
        sys.stdin.read()  # until told to go
        if sys.argv[1:] == ["commit"]:
            w.commit()
        else:
            os._exit(0)  # as if killed: the hidden file stays
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def writer(*args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert p.stdout is not None and p.stdout.readline() == "written\n"
        return p

    dead = writer()
    assert dead.communicate("") is not None and dead.returncode == 0
    (stale,) = tmp_path.rglob(".part-*.tmp")
    live = writer("commit")
    other = stale.parent / ".someone-elses.tmp"
    other.write_text("x")
    assert store_parquet.remove_stale_streams(tmp_path, "flows") == 1
    assert not stale.exists() and other.exists()
    assert len(list(tmp_path.rglob(".part-*.tmp"))) == 1  # the live writer's
    live.communicate("")
    assert live.returncode == 0
    assert list(tmp_path.rglob(".part-*.tmp")) == []
    assert len(list(tmp_path.rglob("part-*.parquet"))) == 1
    assert store_parquet.remove_stale_streams(tmp_path, "flows") == 0
    assert list(tmp_path.rglob(".writer-*")) == []
