"""``quotacast serve`` and ``quotacast keys add/revoke/list``.

Mounted by ``service/cli/app.py`` as ``app.command("serve")(serve)`` and
``app.add_typer(keys_app, name="keys")``; both read the settings the root callback put in
``ctx.obj``.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Annotated

import typer

from engine.schemas import ACCOUNT_MANAGER
from service.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    DataOpt,
    WorkspaceDataOpt,
    data_source,
    err,
    print_frame,
    settings_of,
    store_workspace_of,
    workspace_of,
)
from service.http.keys import KeyStore, Role, key_id_of

__all__ = ["RedactKeys", "keys_app", "serve"]

_SHOWN_OWNERS = 20

keys_app = typer.Typer(
    help="API keys of the HTTP service: created once (the key is printed once), revoked by id.",
    no_args_is_help=True,
)


def _store(ctx: typer.Context, *, read: bool = False) -> KeyStore:
    """The API key store of the command's workspace (``--workspace``, else that of its data,
    see :func:`data_source`); a ``read`` never creates the database (a misspelt path is
    said)."""
    settings = settings_of(ctx)
    return KeyStore(settings.database_url, must_exist=read, workspace=store_workspace_of(ctx))


def _known_owners(source: str) -> list[str] | None:
    """The account managers of the customers of ``source`` (None: the data does not load)."""
    from service.usecases.served import load_data

    loaded = load_data(source)
    if loaded.tables is None:
        return None
    customers = loaded.tables.customers
    if ACCOUNT_MANAGER not in customers.columns:
        return None
    return sorted({str(v) for v in customers[ACCOUNT_MANAGER].dropna()})


def _check_owner(owner: str, source: str) -> None:
    """Exit 2 naming the known owners when ``owner`` is not one of them."""
    owners = _known_owners(source)
    if owners is None:
        err.print(f"note: the data {source} could not be loaded, so the owner {owner!r} was not "
                  "checked against its account managers", markup=False, highlight=False)
        return
    if owner in owners:
        return
    shown = ", ".join(owners[:_SHOWN_OWNERS]) if owners else "none"
    more = f" and {len(owners) - _SHOWN_OWNERS} more" if len(owners) > _SHOWN_OWNERS else ""
    err.print(f"Error: no customer in {source} has the account manager {owner!r}; known "
              f"owners: {shown}{more}", markup=False, highlight=False)
    raise typer.Exit(EXIT_BAD_INPUT)


@keys_app.command("add")
def keys_add(
    ctx: typer.Context,
    role: Annotated[Role, typer.Option("--role", help="admin, planner, sales_ops or "
                                       "account_manager.", case_sensitive=False)],
    owner: Annotated[str | None, typer.Option(
        "--owner", help="The account manager's name (as in customers.account_manager); "
        "required for account_manager keys.")] = None,
    data: DataOpt = None,
) -> None:
    """Create an API key of the workspace of the data (--data D, or --workspace); it is printed
    once, as the last word of the last line. The key opens that workspace only.

    An account manager key's owner must be an account manager of the data (checked when the
    data can be loaded; otherwise a note says it was not).
    """
    source = data_source(ctx, data)
    if owner is not None and role is Role.ACCOUNT_MANAGER:
        _check_owner(owner, source)
    store = _store(ctx)
    try:
        key, token = store.create(role, owner)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        store.close()
    opens = f" It opens the service of workspace {workspace_of(ctx)} only."
    err.print(f"Store this key now: only its hash is kept, it cannot be shown again.{opens}",
              markup=False, highlight=False)
    scope = f" for {key.owner}" if key.owner else ""
    typer.echo(f"created {key.role.value} key {key.key_id}{scope}: {token}")


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key id (8 hex digits) or the whole key.")],
    data: WorkspaceDataOpt = None,
) -> None:
    """Revoke a key of the workspace (of --data D, or --workspace): it stops working at
    once."""
    data_source(ctx, data)
    found = key_id_of(key_id)
    if found is None:
        raise typer.BadParameter("expected a key id of 8 hex digits or a whole key qk_...",
                                 param_hint="KEY_ID")
    store = _store(ctx, read=True)
    try:
        done = store.revoke(found)
        owner = None if done else store.workspace_of_key(found)
    finally:
        store.close()
    if not done:
        elsewhere = ""
        if owner is not None and owner != store.workspace:
            name = owner or settings_of(ctx).default_workspace_name()
            elsewhere = (f" (it is a key of workspace {name}: `quotacast --workspace {name} "
                         f"keys revoke {found}`)")
        err.print(f"Error: no active key {found} in workspace {workspace_of(ctx)}{elsewhere}",
                  markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILURE)
    typer.echo(f"revoked key {found}")


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    data: WorkspaceDataOpt = None,
) -> None:
    """Keys of the workspace (of --data D, or --workspace): ids, roles, owners; never the keys
    themselves."""
    import pandas as pd

    data_source(ctx, data)
    store = _store(ctx, read=True)
    try:
        keys = store.list_keys(include_revoked)
    finally:
        store.close()
    frame = pd.DataFrame([{"key_id": k.key_id, "role": k.role.value, "owner": k.owner or "",
                           "created_at": k.created_at.isoformat(timespec="seconds"),
                           "revoked": k.revoked_at is not None} for k in keys],
                         columns=["key_id", "role", "owner", "created_at", "revoked"])
    print_frame(frame, f"{len(frame)} key(s) in workspace {workspace_of(ctx)}")


def _one_blas_thread() -> None:
    """Numerical work per request runs with one BLAS thread.

    With several request threads on two cores, BLAS threads fight the server's threads: a
    numpy-heavy endpoint ran 4.7x faster with OPENBLAS_NUM_THREADS=1 (measured on 2 cores). The
    variable only acts before numpy is loaded, and the CLI has loaded it already, so the limit
    is also applied to the loaded BLAS through threadpoolctl; the variable still reaches any
    child process.
    """
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class RedactKeys(logging.Filter):
    """Hides API keys in access log lines (a dashboard sign-in link carries one as ``?key=``)."""

    _KEY = re.compile(r"qk_[0-9a-f]{8}_[A-Za-z0-9_-]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._KEY.sub("qk_[redacted]", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


ServeDataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        "-d",
        metavar="D",
        help="Data directory or SQLAlchemy URL (default: QUOTACAST_DATA, else ./demo-data). "
        "Repeat it to serve several data sources, one workspace each: a request sees the "
        "data, models and alerts of its API key's workspace only.",
    ),
]


def serve(
    ctx: typer.Context,
    data: ServeDataOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Start the HTTP service (API under /v1, dashboard at /) over data D (--data repeated:
    several data sources, each its own workspace, in one service)."""
    import uvicorn

    from service.http.app import create_app
    from service.http.state import served_settings
    from service.usecases.served import unreadable

    settings = settings_of(ctx)
    sources = list(data or [settings.data])
    # The default workspace stays that of QUOTACAST_DATA, whatever --data serves.
    settings = settings.model_copy(update={"data": sources[0],
                                           "default_workspace": settings.default_workspace_name()})
    for source in sources:
        why = unreadable(source)
        if why is not None:
            err.print(f"Error: cannot serve {source}: {why}", markup=False, highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT)
    try:
        spaces = served_settings(settings, sources)
    except ValueError as exc:
        err.print(f"Error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    data_source(ctx, sources[0])
    # The service's database (API keys, alerts) is opened before the server starts, so a bad
    # QUOTACAST_DATABASE_URL is one plain message (engine.config.SetupError), not a failed start-up.
    _store(ctx).close()
    _one_blas_thread()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    # One data source: the plain call, as before workspaces.
    served_app = create_app(settings, sources=sources) if len(sources) > 1 else create_app(settings)
    config = uvicorn.Config(served_app, host=host, port=port, log_level="info")
    # After Config: it (re)configures uvicorn's loggers.
    logging.getLogger("uvicorn.access").addFilter(RedactKeys())
    served = ", ".join(f"{each.data} (workspace {name})" for name, each in spaces.items())
    err.print(f"serving {served} on http://{host}:{port} (dashboard at /, API docs at /docs)",
              markup=False, highlight=False)
    uvicorn.Server(config).run()
