from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reference_tools: needs softflowd and nfdump (Debian packages); fails if missing",
    )
