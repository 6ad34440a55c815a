"""Floors: engine < features < models < service; each imports only the floors below it.

`make lint` checks the same with import-linter (pyproject.toml, [tool.importlinter]), which also
follows indirect imports; this test keeps the rule inside `make test` with no extra tool.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {
    "engine": {"engine"},
    "features": {"engine", "features"},
    "models": {"engine", "features", "models"},
    "service": {"engine", "features", "models", "service", "rules"},
}
PROJECT = {"engine", "features", "models", "service", "rules"}


def _imports(path: Path) -> set[str]:
    return _external(path) & PROJECT


@pytest.mark.parametrize("floor", sorted(ALLOWED))
def test_a_floor_imports_only_the_floors_below(floor: str) -> None:
    upward = {str(path.relative_to(REPO)): sorted(_imports(path) - ALLOWED[floor])
              for path in (REPO / floor).rglob("*.py")}
    assert {name: bad for name, bad in upward.items() if bad} == {}


def _external(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("package", "allowed"), [
    ("mlflow", {"engine/tracking.py"}),
    ("fastapi", {"service"}),
    ("typer", {"service"}),
])
def test_a_third_party_entry_point_is_imported_in_one_room(package: str, allowed: set[str]) -> None:
    """MLflow only behind engine/tracking.py; FastAPI and typer only on the service floor."""
    users = {str(path.relative_to(REPO)) for floor in ("engine", "features", "models", "service")
             for path in (REPO / floor).rglob("*.py") if package in _external(path)}
    outside = {u for u in users if not any(u == a or u.startswith(a + "/") for a in allowed)}
    assert outside == set()
    assert users, f"nothing imports {package}: the check would pass for the wrong reason"
