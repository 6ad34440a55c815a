"""Floors: engine < features < models < service. features/ and models/ import only downward.

(engine/ still holds entry points that import upward; moving them up is the layered redesign.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {"features": {"engine", "features"}, "models": {"engine", "features", "models"}}
PROJECT = {"engine", "features", "models", "service", "rules"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & PROJECT


@pytest.mark.parametrize("floor", sorted(ALLOWED))
def test_a_floor_imports_only_the_floors_below(floor: str) -> None:
    upward = {str(path.relative_to(REPO)): sorted(_imports(path) - ALLOWED[floor])
              for path in (REPO / floor).rglob("*.py")}
    assert {name: bad for name, bad in upward.items() if bad} == {}
