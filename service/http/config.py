"""Settings of the HTTP service only (the engine's live in :mod:`engine.config`).

Read once at the entry point (``quotacast serve``) like the engine's settings, from environment
variables with the same ``QUOTACAST_`` prefix or a ``.env`` file, and overridden in tests by
passing an instance to :func:`service.http.app.create_app`.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    """How the service protects itself and how much work one request may cost.

    Attributes:
        rate_limit_per_minute: requests a key may make per minute, on average (token bucket
            refill rate).
        rate_limit_burst: requests a key may make at once (the bucket's size).
        failed_keys_per_minute: wrong API keys a client (address) may send per minute, on
            average, before it is answered 429 instead of 401.
        failed_keys_burst: wrong API keys a client may send at once.
        max_body_bytes: largest request body accepted; larger ones get 413.
        rules: warning rule file (default: ``rules/default.yaml``, as the CLI).
        draws: Monte Carlo draws of a feasibility request.
        registry_check_seconds: how long a registry reachability answer is reused by /readyz.
        deliver_notifications: send warning notifications right after an evaluation (one
            attempt; the rest stays in the outbox for ``quotacast warnings deliver``).
        cookie_secure: mark the dashboard's key cookie ``Secure`` (behind HTTPS).
        warm_up: compute the current period's simulation and first pages in the background at
            start-up (and after each reload), so the first view does not wait for them.
        first_view_seconds: how long a board page whose simulation is not computed yet waits
            for it before answering 202 "being computed, reload" (its computation goes on in
            the background: :mod:`service.http.board_first`); None: it waits until done. Only
            with ``warm_up`` (no background work without it).
    """

    model_config = SettingsConfigDict(
        env_prefix="QUOTACAST_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    rate_limit_per_minute: float = Field(default=600.0, gt=0)
    rate_limit_burst: int = Field(default=60, ge=1)
    failed_keys_per_minute: float = Field(default=10.0, gt=0)
    failed_keys_burst: int = Field(default=20, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1)
    rules: str | None = None
    draws: int = Field(default=10_000, ge=100)
    registry_check_seconds: float = Field(default=30.0, ge=0)
    deliver_notifications: bool = True
    cookie_secure: bool = False
    warm_up: bool = True
    first_view_seconds: float | None = Field(default=0.1, ge=0)
