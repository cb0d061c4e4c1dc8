"""``engine = "spark"`` and ``[spark]``: validated, shown by ``config check``, secrets masked;
and the engine's pure parts (dialect rewriting, partition pruning expressions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mamori.cli import app
from mamori.config import ConfigError, load_config
from mamori.store.spark import SparkEngine, spark_sql, spark_type


def _load(tmp_path: Path, text: str) -> object:
    f = tmp_path / "mamori.toml"
    f.write_text(f'store = "{tmp_path / "store"}"\n' + text, encoding="utf-8")
    return load_config(f)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('engine = "spark"\n[spark]\nmaster = "local"\n', None),
        ('engine = "spark"\n[spark]\nmaster = "local[2]"\n', None),
        ('engine = "spark"\n[spark]\nmaster = "spark://10.0.0.5:7077"\n', None),
        ('engine = "spark"\n[spark]\nmaster = "k8s://https://api:6443"\n', None),
        ('engine = "spark"\n[spark]\nstore_url = "s3a://bucket/mamori"\n', None),
        ('[spark]\nmaster = "mesos://x"\n', ["spark.master", "mesos://x", "k8s://"]),
        ('[spark]\nstore_url = "ftp://x/y"\n', ["store_url", "ftp://x/y", "s3a://"]),
        ('[spark.conf]\n"executor.memory" = "4g"\n', ["executor.memory", "spark."]),
        ('engine = "oracle"\n', ["engine", "'oracle'", "duckdb", "spark"]),
    ],
)
def test_spark_settings_are_validated(tmp_path: Path, text: str, words: list[str] | None) -> None:
    if words is None:
        assert _load(tmp_path, text).engine == "spark"  # type: ignore[attr-defined]
        return
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    for w in words:
        assert w in str(info.value)


def test_config_check_shows_what_will_run_and_masks_secrets(tmp_path: Path) -> None:
    f = tmp_path / "mamori.toml"
    f.write_text(
        f'store = "{tmp_path / "store"}"\nengine = "spark"\n[spark]\nmaster = "spark://h:7077"\n'
        'store_url = "s3a://isp-flows/mamori"\n[spark.conf]\n'
        '"spark.hadoop.fs.s3a.secret.key" = "hunter2"\n"spark.executor.memory" = "8g"\n',
        encoding="utf-8",
    )
    r = CliRunner().invoke(app, ["--config", str(f), "config", "check", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["engine"] == "spark"
    assert "spark://h:7077" in data["engine_plan"]["reads"]
    assert "s3a://isp-flows/mamori" in data["engine_plan"]["reads"]
    assert data["spark"]["conf"] == {
        "spark.hadoop.fs.s3a.secret.key": "***",
        "spark.executor.memory": "8g",
    }
    assert "hunter2" not in r.output
    f.write_text(f'store = "{tmp_path / "store"}"\n', encoding="utf-8")
    duck = CliRunner().invoke(app, ["--config", str(f), "config", "check"])
    assert duck.exit_code == 0, duck.output
    assert "DuckDB in this process" in duck.output


@pytest.mark.parametrize(
    ("duck", "spark"),
    [
        ("x >= TIMESTAMPTZ '9999-12-31 00:00:00+00'", "x >= TIMESTAMP '9999-12-31 00:00:00+00'"),
        (
            "SELECT addr, NULL::USMALLINT, NULL::USMALLINT",
            "SELECT addr, CAST(NULL AS INT), CAST(NULL AS INT)",
        ),
        ('SELECT "end" FROM t', 'SELECT "end" FROM t'),  # both read "…" as a name (ANSI)
    ],
)
def test_duckdb_spellings_are_rewritten(duck: str, spark: str) -> None:
    assert spark_sql(duck) == spark


@pytest.mark.parametrize(
    ("start", "end", "expect"),
    [
        (None, None, ""),
        (
            datetime(2026, 11, 2, 1, 30, tzinfo=UTC),
            datetime(2026, 11, 2, 3, 0, tzinfo=UTC),
            "(`date` > '2026-11-02' OR (`date` = '2026-11-02' AND `hour` >= '01')) AND "
            "(`date` < '2026-11-02' OR (`date` = '2026-11-02' AND `hour` <= '02'))",
        ),
        (  # an end inside an hour keeps that hour; across midnight
            None,
            datetime(2026, 11, 3, 0, 0, 1, tzinfo=UTC),
            "(`date` < '2026-11-03' OR (`date` = '2026-11-03' AND `hour` <= '00'))",
        ),
    ],
)
def test_window_prunes_by_partition_names(
    start: datetime | None, end: datetime | None, expect: str
) -> None:
    assert SparkEngine("/nowhere", spark=None).window_filter(start, end) == expect


def test_every_stored_type_has_a_spark_type() -> None:
    from mamori.schemas import DATASETS

    for ds in DATASETS.values():
        for f in ds.arrow:
            assert spark_type(f.type)
