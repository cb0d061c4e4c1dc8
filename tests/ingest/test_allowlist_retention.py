"""The people's allowlist under retention: past ``retention.findings`` an entry keeps its address
(the false positive must not come back) and loses who marked it and which finding."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mamori.governance import Governance
from mamori.ingest.reputation.allowlist import add_to_allowlist, people_allowlist, prune_allowlist
from tests.conftest import make_config


@pytest.mark.parametrize(("days_later", "stripped"), [(1, 0), (10_000, 1)])
def test_old_entries_keep_their_address_only(
    tmp_path: Path, days_later: int, stripped: int
) -> None:
    gov = Governance(make_config(tmp_path / "store"))
    try:
        add_to_allowlist(gov, "203.0.113.7", "web:analyst1", finding_id="f-1")
        now = datetime.now(UTC) + timedelta(days=days_later)
        assert prune_allowlist(gov, "test", now=now, dry_run=True) == stripped
        assert prune_allowlist(gov, "test", now=now) == stripped
        [entry] = json.loads((gov.state_dir("reputation") / "allow.json").read_text())
        assert ("actor" in entry, "finding" in entry) == (not stripped, not stripped)
        assert [str(p) for p in people_allowlist(gov)] == ["203.0.113.7/32"]
        [*_, dry, done] = [e for e in gov.audit.entries() if e.event.startswith("purge")]
        assert (dry.event, done.event) == ("purge-dry-run", "purge")
        assert json.loads(done.detail or "{}")["entries_stripped"] == stripped
    finally:
        gov.close()
