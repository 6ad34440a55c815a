"""The HTTP service (FastAPI) over the engine."""
