"""The top floor: every entry point and the only wiring.

:mod:`service.usecases` (train, score, forecast, feasibility: shared by CLI and HTTP),
:mod:`service.cli` (the ``quotacast`` command line) and :mod:`service.http` (the FastAPI app).
Only this package imports FastAPI and typer.
"""

from __future__ import annotations

__all__: list[str] = []
