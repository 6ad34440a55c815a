"""The HTTP service (FastAPI) over the engine: ``create_app`` in :mod:`service.main`.

Only this package imports FastAPI. Routes (:mod:`service.routes`) are thin; the engine calls,
their caches and the HTTP errors live in :mod:`service.operations`; who may do what in
:mod:`service.auth`; the start-up state in :mod:`service.state`.
"""

from __future__ import annotations

__all__: list[str] = []
