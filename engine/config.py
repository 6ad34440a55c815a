"""Settings, read once at the entry points (CLI, service) and passed down as plain values."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SetupError", "get_settings"]


class SetupError(Exception):
    """A fault of the environment, not of the code: a setting that names no usable database, a
    registry file that is not one, a path that cannot be written. Its message says, in plain
    words, which setting or file and what to do; the CLI prints it and exits with
    :attr:`exit_code` (1, or 2 for a setting that is bad input)."""

    exit_code = 1


class Settings(BaseSettings):
    """quotacast settings: environment variables with prefix ``QUOTACAST_`` or a ``.env`` file.

    Attributes:
        mlflow_tracking_uri: MLflow tracking store; a ``sqlite:///`` file or a server URL.
        database_url: SQLAlchemy URL of the alert and API-key store.
        data: default data directory (or SQL URL) for commands that read data.
        seed: seed for everything random (generators, simulations, model training).
        n_jobs: worker processes for work that runs in parallel.
        warnings_webhook_url: where warning notifications are POSTed (besides the rule file's
            receivers).
        warnings_notify_file: a JSON-lines file that receives every warning notification.
    """

    model_config = SettingsConfigDict(
        env_prefix="QUOTACAST_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    database_url: str = "sqlite:///quotacast.db"
    data: str = "demo-data"
    seed: int = 42
    n_jobs: int = 2
    warnings_webhook_url: str | None = None
    warnings_notify_file: str | None = None

    @property
    def data_path(self) -> Path:
        return Path(self.data)


def get_settings() -> Settings:
    """Read the settings from the environment (call only at an entry point)."""
    return Settings()
