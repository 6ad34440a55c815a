"""One training path for every model kind: :func:`train` and the champion gate it registers.

Every pipeline (:mod:`service.usecases.churn`, :mod:`service.usecases.win`,
:mod:`service.usecases.forecast`) trains with the same signature shape, ``train_<kind>(tables,
*, as_of, seed, progress, **its own options)``, resolves its as-of with :func:`training_as_of`,
and ends the same way: the current champion is scored on the challenger's holdout
(:func:`champion_value`), the version is checked against its kind's simplest baseline
(:func:`beats_baseline`) and registered as ``challenger`` with its gate (:func:`register`).
:func:`engine.tracking.promote` later reads that gate; the kind's metric, direction and baseline
are written once, in :mod:`models.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import numpy as np
import pandas as pd

from engine import tracking
from engine.io import Tables
from engine.periods import default_as_of
from models.base import CHURN, FORECAST, MODEL_KINDS, WIN, Classifier, ModelKind
from models.classification import classification_metrics

if TYPE_CHECKING:
    from service.usecases.churn import ChurnTraining
    from service.usecases.forecast import ForecastTraining
    from service.usecases.win import WinTraining

__all__ = [
    "Progress",
    "Scored",
    "Trained",
    "beats_baseline",
    "champion_value",
    "classifier_score",
    "register",
    "say",
    "train",
    "training_as_of",
]

Progress = Callable[[str], None]
# The champion's value and how it was measured (the end of the note after "champion vN"), or
# None and why it was not compared (same place; empty when there is nothing to say).
Scored = tuple[float | None, str]

_NO_CHAMPION = "no champion yet: the first promotion needs no comparison"
# Where each kind's pipeline lives; imported on demand (each imports this module for the gate,
# and their estimators are heavy for a command that trains one kind).
_TRAINERS = {
    CHURN.name: ("service.usecases.churn", "train_churn"),
    FORECAST.name: ("service.usecases.forecast", "train_forecast"),
    WIN.name: ("service.usecases.win", "train_win"),
}


class Trained(Protocol):
    """What every training run returns (each pipeline adds its own evidence)."""

    run_id: str
    version: str
    model_name: str
    metrics: dict[str, float]
    notes: list[str]


@overload
def train(kind: Literal["churn"], tables: Tables, *, as_of: pd.Timestamp | str | None = ...,
          seed: int = ..., progress: Progress | None = ..., **options: Any) -> ChurnTraining: ...
@overload
def train(kind: Literal["win"], tables: Tables, *, as_of: pd.Timestamp | str | None = ...,
          seed: int = ..., progress: Progress | None = ..., **options: Any) -> WinTraining: ...
@overload
def train(kind: Literal["forecast"], tables: Tables, *, as_of: pd.Timestamp | str | None = ...,
          seed: int = ..., progress: Progress | None = ..., **options: Any
          ) -> ForecastTraining: ...
@overload
def train(kind: str, tables: Tables, *, as_of: pd.Timestamp | str | None = ...,
          seed: int = ..., progress: Progress | None = ..., **options: Any) -> Trained: ...
def train(kind: str, tables: Tables, *, as_of: pd.Timestamp | str | None = None,
          seed: int = 42, progress: Progress | None = None, **options: Any) -> Trained:
    """Train ``kind``, score the champion on the same holdout, register a ``challenger``.

    Args:
        kind: a name of :data:`models.base.MODEL_KINDS`.
        tables: validated tables.
        as_of: only rows dated before it (default the day after the data's last row).
        seed: the random seed.
        progress: called with a short message at each stage.
        options: the kind's own (churn: ``horizon_days``; win: ``snapshot_days``; forecast:
            ``freq``, ``level``, ``horizon``, ``n_windows``, ``n_jobs``, ``candidates``).

    Raises:
        ValueError: an unknown kind, or data the kind cannot learn from (in plain words).
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of "
                         f"{', '.join(MODEL_KINDS)}")
    module, name = _TRAINERS[kind]
    trainer: Callable[..., Trained] = getattr(import_module(module), name)
    return trainer(tables, as_of=as_of, seed=seed, progress=progress, **options)


def say(progress: Progress | None, message: str) -> None:
    """Tell ``progress`` (if any) what the pipeline is doing."""
    if progress is not None:
        progress(message)


def training_as_of(tables: Tables, as_of: pd.Timestamp | str | None, *,
                   after: tuple[str, pd.Timestamp] | None = None) -> pd.Timestamp:
    """The as-of a pipeline trains or scores at: the one given, at midnight, else the day after
    the data's last row (:func:`engine.periods.default_as_of`).

    Args:
        tables: validated tables.
        as_of: what the caller gave, or None.
        after: ``(what, day)``: an as-of not after that day is refused, as having no history
            before it (churn: the first order).

    Raises:
        ValueError: ``after`` given and the as-of is not after its day.
    """
    stamp = (pd.Timestamp(as_of) if as_of is not None else default_as_of(tables)).normalize()
    if after is not None and stamp <= after[1]:
        raise ValueError(f"as_of {stamp.date()} is not after {after[0]} ({after[1].date()}): "
                         "there is no history before it")
    return stamp


def beats_baseline(kind: ModelKind, value: float, baseline: float) -> bool:
    """Whether a version's gate metric strictly beats its simplest baseline's."""
    return tracking.beats(value, baseline, greater_is_better=kind.greater_is_better)


def champion_value(registered: str, score: Callable[[tracking.LoadedModel], Scored],
                   notes: list[str], *, no_champion: str = _NO_CHAMPION
                   ) -> tuple[float | None, str | None]:
    """The champion's gate metric on the challenger's holdout and its version, with a note.

    Args:
        registered: the registered kind (``churn``, ``forecast-W-company``...).
        score: the champion's value on this holdout and how it was measured (the note after
            ``champion vN``); KeyError, ValueError or AttributeError (a champion trained on
            features that are gone) mean it could not score it: promotion then needs --force.
        notes: where the note goes.
        no_champion: the note when there is no champion yet.

    Returns:
        ``(value, version)``; ``(None, None)`` when there is no champion or no comparison.
    """
    try:
        champion = tracking.load_champion(registered)
    except tracking.ChampionMissingError:
        notes.append(no_champion)
        return None, None
    try:
        value, how = score(champion)
    except (KeyError, ValueError, AttributeError) as exc:
        notes.append(f"champion v{champion.version} could not score this holdout ({exc}); "
                     "promotion will need --force")
        return None, None
    if how:
        notes.append(f"champion v{champion.version}{how}")
    return (None, None) if value is None else (float(value), champion.version)


def classifier_score(kind: ModelKind, holdout: pd.DataFrame, labels: np.ndarray,
                     probabilities: Callable[[Classifier, pd.DataFrame], np.ndarray]
                     ) -> Callable[[tracking.LoadedModel], Scored]:
    """How :func:`champion_value` scores a classifier champion: its gate metric on ``holdout``."""

    def score(champion: tracking.LoadedModel) -> Scored:
        p = probabilities(champion.estimator, holdout)
        value = classification_metrics(labels, p)[kind.gate_metric]
        return value, f": {kind.gate_metric} {value:.4f} on the same holdout"

    return score


def register(kind: ModelKind, model: tracking.FramePredictor, *,
             input_example: pd.DataFrame, params: Mapping[str, Any],
             metrics: Mapping[str, float], holdout: str, champion_value: float | None,
             baseline: tuple[str, float] | None,
             artifacts: Mapping[str, Path | pd.DataFrame | dict[str, Any]],
             registered: str | None = None) -> tracking.RegisteredRun:
    """Log ``model`` with its evidence and register it as ``challenger`` under its kind's gate.

    ``registered`` is the registered kind when it is not ``kind.name`` (a forecast at another
    frequency or level has its own, :func:`service.usecases.forecast.forecast_kind`).
    """
    return tracking.log_and_register(
        registered or kind.name, model, input_example=input_example, params=params, metrics=metrics,
        gate_metric=kind.gate_metric, greater_is_better=kind.greater_is_better,
        holdout=holdout, champion_value=champion_value, baseline=baseline,
        artifacts=artifacts,
    )
