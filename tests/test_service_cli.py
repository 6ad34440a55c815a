"""``quotacast keys add/revoke/list`` and ``quotacast serve``."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from engine.config import Settings
from service.cli.serve import RedactKeys, keys_app, serve
from service.http.keys import KeyStore, Role

runner = CliRunner()


def _cli(settings: Settings) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = settings

    app.add_typer(keys_app, name="keys")
    app.command("serve")(serve)
    return app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'quotacast.db'}",
                    data=str(tmp_path / "data"), mlflow_tracking_uri="sqlite:///unused.db")


def _add(settings: Settings, *args: str) -> Any:
    return runner.invoke(_cli(settings), ["keys", "add", *args])


def test_keys_add_prints_the_key_last_and_stores_only_its_hash(settings: Settings) -> None:
    result = _add(settings, "--role", "planner")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1].split()[-1]
    store = KeyStore(settings.database_url)
    try:
        key = store.verify(token)
        assert key is not None and key.role is Role.PLANNER and key.owner is None
    finally:
        store.close()
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("select key_id, key_hash from api_keys")).all()
    engine.dispose()
    assert rows == [(key.key_id, hashlib.sha256(token.encode()).hexdigest())]
    database = Path(settings.database_url.removeprefix("sqlite:///")).read_bytes()
    secret = token.split("_", 2)[-1]  # qk_<id>_<secret>; the secret may itself contain "_"
    assert len(secret) >= 32
    assert token.encode() not in database and secret.encode() not in database


def test_account_manager_key_carries_its_owner(settings: Settings) -> None:
    result = _add(settings, "--role", "account_manager", "--owner", "Dana Rossi")
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert "Dana Rossi" in last
    store = KeyStore(settings.database_url)
    try:
        key = store.verify(last.split()[-1])
        assert key is not None and key.owner == "Dana Rossi"
    finally:
        store.close()


@pytest.mark.parametrize("args", [
    ["--role", "wizard"],
    ["--role", "account_manager"],
    ["--role", "planner", "--owner", "Dana Rossi"],
    [],
])
def test_keys_add_refuses_bad_usage_with_status_2(settings: Settings, args: list[str]) -> None:
    assert _add(settings, *args).exit_code == 2


def test_keys_revoke_stops_the_key(settings: Settings) -> None:
    token = _add(settings, "--role", "admin").stdout.split()[-1]
    key_id = token.split("_")[1]
    revoked = runner.invoke(_cli(settings), ["keys", "revoke", key_id])
    assert revoked.exit_code == 0 and key_id in revoked.stdout
    store = KeyStore(settings.database_url)
    try:
        assert store.verify(token) is None
    finally:
        store.close()
    assert runner.invoke(_cli(settings), ["keys", "revoke", key_id]).exit_code == 1
    assert runner.invoke(_cli(settings), ["keys", "revoke", "nonsense"]).exit_code == 2


def test_keys_revoke_accepts_the_whole_key(settings: Settings) -> None:
    token = _add(settings, "--role", "sales_ops").stdout.split()[-1]
    assert runner.invoke(_cli(settings), ["keys", "revoke", token]).exit_code == 0


def test_keys_list_shows_ids_never_keys(settings: Settings) -> None:
    token = _add(settings, "--role", "admin").stdout.split()[-1]
    listed = runner.invoke(_cli(settings), ["keys", "list"])
    assert listed.exit_code == 0
    assert token.split("_")[1] in listed.output and token not in listed.output


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What serve would start: the settings given to create_app, uvicorn's configuration, the
    BLAS limit (recorded, not applied: it would slow the rest of the test session)."""
    import threadpoolctl
    import uvicorn

    import service.http.app

    seen: dict[str, Any] = {}

    def create_app(settings: Settings) -> str:
        seen["settings"] = settings
        return "the-app"

    def run(server: uvicorn.Server) -> None:
        seen.update(app=server.config.app, host=server.config.host, port=server.config.port)

    monkeypatch.setattr(service.http.app, "create_app", create_app)
    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(threadpoolctl, "threadpool_limits",
                        lambda **kw: seen.update(blas_limits=kw))
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # restored after the test
        monkeypatch.delenv(name, raising=False)
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "filters", list(access.filters))
    return seen


def test_serve_runs_uvicorn_on_the_app_with_one_blas_thread(
        settings: Settings, launched: dict[str, Any], tmp_path: Path) -> None:
    result = runner.invoke(_cli(settings), ["serve", "--data", str(tmp_path / "d"),
                                            "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert launched["app"] == "the-app"
    assert (launched["host"], launched["port"]) == ("127.0.0.1", 8123)
    assert launched["settings"].data == str(tmp_path / "d")
    assert launched["settings"].database_url == settings.database_url
    assert launched["blas_limits"] == {"limits": 1, "user_api": "blas"}
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert any(isinstance(f, RedactKeys) for f in logging.getLogger("uvicorn.access").filters)


def test_serve_defaults_to_the_settings_data(settings: Settings,
                                             launched: dict[str, Any]) -> None:
    assert runner.invoke(_cli(settings), ["serve"]).exit_code == 0
    assert launched["settings"].data == settings.data
    assert (launched["host"], launched["port"]) == ("127.0.0.1", 8000)


def test_access_log_lines_do_not_show_keys() -> None:
    key = "qk_0123abcd_" + "Z" * 43
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", f"/?key={key}", "1.1", 303), None)
    assert RedactKeys().filter(record)
    assert key not in record.getMessage() and "qk_[redacted]" in record.getMessage()


def test_keys_add_refuses_an_owner_nobody_has(settings: Settings, tmp_path: Path) -> None:
    from test_service_support import company_frames

    from engine.io import write_data_dir
    from engine.schemas import ACCOUNT_MANAGER

    frames = company_frames()
    data = write_data_dir(frames, tmp_path / "data")
    owners = sorted(set(frames["customers"][ACCOUNT_MANAGER].dropna().astype(str)))
    refused = _add(settings, "--role", "account_manager", "--owner", "NOBODY",
                   "--data", str(data))
    assert refused.exit_code == 2
    assert "NOBODY" in refused.output and owners[0] in refused.output
    assert "Traceback" not in refused.output
    store = KeyStore(settings.database_url)
    try:
        assert store.list_keys(True) == []
    finally:
        store.close()
    accepted = _add(settings, "--role", "account_manager", "--owner", owners[0],
                    "--data", str(data))
    assert accepted.exit_code == 0, accepted.output


@pytest.mark.parametrize("make", [
    lambda p: f"sqlite:///{_write(p / 'x.db', b'garbage, not a database' * 10)}",
    lambda p: f"sqlite:///{_write(p / 'r.sqlite', bytes(range(256)) * 8)}",
    lambda p: str(_write(p / 'orders.csv', b'order_id\n1\n')),
    lambda p: "nosuchscheme://host/db",
], ids=["text-as-sqlite", "random-bytes-sqlite", "a-file-not-a-directory", "unknown-scheme"])
def test_serve_on_what_cannot_be_data_is_a_plain_exit_2(
        settings: Settings, launched: dict[str, Any], tmp_path: Path, make: Any) -> None:
    result = runner.invoke(_cli(settings), ["serve", "--data", make(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "cannot serve" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "app" not in launched


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path
