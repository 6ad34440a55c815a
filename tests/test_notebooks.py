"""The walkthrough notebooks are committed clean: no outputs, no execution counts, one kernel.

They are *executed* by ``pytest --nbmake notebooks/`` (see notebooks/README.md); this only
checks, in milliseconds, what the default test run can check without running them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook_for_each_user() -> None:
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code, "a notebook without code"
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert dirty == [], f"code cells {dirty} carry outputs: clear them (notebooks/README.md)"
    # nbmake runs the kernel the notebook names; python3 is the one ipykernel installs.
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
