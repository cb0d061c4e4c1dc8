from __future__ import annotations

import pytest

from mamori.sim import SimSummary, simulate


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimSummary:
    return simulate("tiny", tmp_path_factory.mktemp("tiny"), seed=7)


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> SimSummary:
    return simulate("small", tmp_path_factory.mktemp("small"), seed=3)
