"""Wiring only: data -> features -> models -> tracking, one module per model kind."""
