"""The HTTP service (FastAPI): ``create_app`` in :mod:`service.http.app`.

Routes (:mod:`service.http.routes`) are thin; the engine calls, their caches and the HTTP errors
live in :mod:`service.http.operations`; who may do what in :mod:`service.http.auth`; the start-up
state in :mod:`service.http.state`.
"""
