"""The HTTP service (FastAPI): ``create_app`` in :mod:`service.http.app`.

One router per resource in :mod:`service.http.routes` (mounted from ``ROUTERS``); each route
calls one use case of :mod:`service.usecases` and builds the response body. The use cases raise
plain exceptions that :mod:`service.http.errors` maps to status codes; who may do what is in
:mod:`service.http.auth`; the start-up state in :mod:`service.http.state`.
"""
