"""Structural rules that import-linter cannot express: storage libraries stay behind governance."""

from __future__ import annotations

import ast
from pathlib import Path

import mamori

SRC = Path(mamori.__file__).parent
ALLOWED = {"governance", "store"}
FORBIDDEN = ("pyarrow.parquet", "pyarrow.dataset", "duckdb", "mamori.store")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_only_governance_and_store_touch_storage() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        top = path.relative_to(SRC).parts[0]
        if top in ALLOWED:
            continue
        for name in _imports(path):
            if name.startswith(FORBIDDEN):
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


def test_public_surface_of_governance() -> None:
    import mamori.governance as g

    assert sorted(g.__all__) == sorted(
        [
            "AccessRefused",
            "AuditLog",
            "Catalogue",
            "ConsentChange",
            "ConsentError",
            "ConsentState",
            "Governance",
            "GovernanceError",
            "Grant",
            "LegalBasis",
            "Measure",
            "PurgeReport",
            "Sandbox",
            "Verification",
            "catalogue",
            "purge",
            "retention_status",
        ]
    )


# Governance's own engine and the sandbox's loading hook are the door's inside: no stage may reach
# them from Python (SQL cannot: the sandbox has no files and no other grant to reach).
PRIVATE_DOOR = {"_engine", "_load", "_bounded", "_consent_filter", "_resolved_allocations"}


def test_no_stage_reaches_governance_internals() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        top = path.relative_to(SRC).parts[0]
        if top in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE_DOOR:
                # a class's own private helper of the same name (self._load) is not the door
                if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}:
                    continue
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} uses .{node.attr}")
    assert offenders == []
