"""Settings, read once at the entry points (CLI, service) and passed down as plain values."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_WORKSPACE",
    "Settings",
    "SetupError",
    "get_settings",
    "sanitize_workspace",
    "workspace_for",
]


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
        workspace: the workspace (models, alerts, silences, outbox and API keys of one data
            source); unset, it is derived from the data path (:func:`workspace_for`).
        default_workspace: the workspace that owns the models and alert rows of before
            workspaces (unset: the workspace of the ``data`` setting, ``demo-data`` by default).
        engine: where the commands that grow with the data compute: ``pandas`` (one machine)
            or ``spark``.
        spark_master: the Spark master of the ``spark`` engine (``local[*]``: every core here).
        mlflow_artifacts: where MLflow stores model files of new experiments when the tracking
            store is a database URL (unset: the tracking server's own artifact store, or
            ``./mlruns``).
        reload_seconds: the service re-reads its data and records a board snapshot every this
            many seconds (0: load once at start-up).
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
    workspace: str | None = None
    default_workspace: str | None = None
    engine: Literal["pandas", "spark"] = "pandas"
    spark_master: str = "local[*]"
    mlflow_artifacts: str | None = None
    reload_seconds: float = Field(default=0.0, ge=0.0)

    @property
    def data_path(self) -> Path:
        return Path(self.data)

    def workspace_of(self, data: str | None = None) -> str:
        """The workspace of a command on ``data`` (default: the ``data`` setting): the
        ``workspace`` setting when given, else derived from the data path."""
        if self.workspace:
            return sanitize_workspace(self.workspace)
        return workspace_for(data if data is not None else self.data)

    def owns_unscoped(self, workspace: str) -> bool:
        """Whether ``workspace`` is the default one, which keeps the models and alert rows
        stored before workspaces existed."""
        return self.default_workspace_name() == workspace

    def default_workspace_name(self) -> str:
        """The default workspace: ``default_workspace``, else that of the ``data`` setting."""
        return sanitize_workspace(self.default_workspace or workspace_for(self.data))

    def store_workspace(self, data: str | None = None) -> str:
        """The workspace of the rows in the quotacast database (alerts, silences, outbox, API
        keys) of a command on ``data``: the same as its models' (:meth:`workspace_of`: named,
        else derived from the data path), stored as ``''`` for the default workspace, which so
        keeps the rows stored before workspaces existed."""
        space = self.workspace_of(data)
        return "" if self.owns_unscoped(space) else space


DEFAULT_WORKSPACE = "default"


def sanitize_workspace(name: str) -> str:
    """A workspace name usable in registered model names and SQL rows: lower case letters,
    digits, ``-`` and ``_`` (anything else becomes ``-``); ``default`` when nothing is left."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-_")
    return cleaned[:60] or DEFAULT_WORKSPACE


def workspace_for(data: str) -> str:
    """The default workspace of a data source: the data directory's name (``demo-data`` ->
    ``demo-data``), or the database's name of a SQL URL (``sqlite:///crm.db`` -> ``crm``)."""
    text = str(data).strip()
    if "://" in text:
        tail = text.split("://", 1)[1].split("?", 1)[0].rstrip("/")
        name = tail.rsplit("/", 1)[-1]
        name = Path(name).stem if name.endswith((".db", ".sqlite", ".sqlite3")) else name
        return sanitize_workspace(name)
    path = Path(text).expanduser()
    with contextlib.suppress(OSError):
        path = path.resolve()
    name = path.name
    for suffix in (".csv.gz", ".csv", ".parquet", ".db", ".sqlite"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return sanitize_workspace(name)


def get_settings() -> Settings:
    """Read the settings from the environment (call only at an entry point)."""
    return Settings()
