"""The default warning rule pack (``default.yaml``) and its unit tests, shipped with the package.

A working directory's own ``rules/default.yaml`` takes precedence (:func:`default_rules_path`);
this copy is what an installed quotacast falls back to.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["default_rules_path"]


def default_rules_path() -> Path:
    """``rules/default.yaml`` of the working directory, else the pack installed with quotacast
    (the ``rules`` package's data)."""
    local = Path("rules") / "default.yaml"
    if local.is_file():
        return local
    return Path(str(resources.files("rules").joinpath("default.yaml")))
