"""The champions a running service serves, loaded at start-up and on reload only (the
service's models resource).

A request never looks the registry up: an unreachable registry changes nothing for the
requests that follow, and a reload that cannot reach it keeps what is served.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine import tracking
from models.base import FORECAST
from service.usecases.served import Served, probe_registry

__all__ = ["load_champions", "served_models"]


def _load_one(served: Served, kind: str, space: tracking.Workspace) -> None:
    try:
        loaded = tracking.load_champion(kind, workspace=space)
    except tracking.ChampionMissingError as exc:
        if kind not in served.models:
            served.model_problems[kind] = str(exc)
        else:
            served.model_problems[kind] = f"kept v{served.models[kind].version}: {exc}"
        return
    # Any failure to unpickle or fetch a model (MLflow, I/O, a class that moved) must not take
    # the service down: the model is left out (or the old one kept) and /readyz says why.
    except Exception as exc:
        kept = f"kept v{served.models[kind].version}: " if kind in served.models else ""
        served.model_problems[kind] = (f"{kept}cannot load the champion: "
                                       f"{type(exc).__name__}: {exc}")
        return
    served.models[kind] = loaded
    served.model_problems.pop(kind, None)


def load_champions(served: Served, kinds: Iterable[str]) -> bool:
    """(Re)load the champion of every kind; keep what is served when the registry does not
    answer. The caches are cleared when a served version changed.

    Returns:
        whether the registry was reachable.
    """
    kinds = list(kinds)
    with served.models_lock:
        # The champions of the workspace served only (its data's, or QUOTACAST_WORKSPACE),
        # named on every call: the process may serve several workspaces.
        space = served.registry_workspace()
        if not probe_registry(served, max_age=0):
            for kind in kinds:
                held = served.models.get(kind)
                served.model_problems[kind] = (
                    f"registry unreachable: kept v{held.version}" if held
                    else "registry unreachable: not loaded")
            return False
        before = {k: m.version for k, m in served.models.items()}
        # Every forecaster with a champion is served (one per frequency and level family), not
        # only the monthly company one.
        kinds += [k for k in tracking.champion_kinds(FORECAST.name, space) if k not in kinds]
        for kind in kinds:
            _load_one(served, kind, space)
        if before != {k: m.version for k, m in served.models.items()}:
            served.clear_caches()
        return True


def served_models(served: Served, kinds: Iterable[str]) -> dict[str, tracking.LoadedModel | None]:
    """The model served per kind (None for a kind without one), in the order of ``kinds``,
    then the other forecasters served (``forecast-W-company``...)."""
    kinds = list(kinds)
    extra = sorted(k for k in served.models if k not in kinds)
    return {kind: served.model(kind) for kind in [*kinds, *extra]}
