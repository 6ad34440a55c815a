"""The statsforecast candidates: ``ets``, ``autoets``, ``theta`` and ``arima``.

- ``ets``: statsforecast AutoETS (multiplicative errors on positive data, additive otherwise).
  Its specification (error/trend/season/damping) is chosen once, at the oldest origin with
  enough data for seasonal models, and only re-estimated afterwards: choosing costs ~5x
  estimating, and on the dev data (see benchmarks/forecast.py) re-choosing at every origin
  changed the combination's MASE by less than 0.5%. Fitted per series, in parallel chunks.
- ``autoets``: statsforecast AutoETS as it comes (damped trends included, chosen afresh at every
  fit), over all series at once.
- ``theta``: statsforecast Theta over all series at once (one ``StatsForecast`` call).
- ``arima``: statsforecast AutoARIMA over all series at once; left out at D and W, where its
  seasonal search is too slow, and on panels beyond ``ARIMA_BUDGET`` series-fits (about a
  second per series and fit).

``autoets`` and ``arima`` share one ``StatsForecast`` call per panel (:class:`StatsBatch`): they
always see the same panel, and statsforecast falls back per model and series, so each one's
forecasts are those of a call of its own.

All see at most the last ``max_history`` periods (10 years of months): on long series this
was both faster and more accurate (older regimes mislead them).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.schemas import KEY, LEVEL
from models.backtest import Panel
from models.forecast.base import CandidateContext, parallel_chunks, recent

__all__ = [
    "ARIMA_BUDGET",
    "ArimaForecaster",
    "AutoEtsForecaster",
    "EtsForecaster",
    "EtsSpec",
    "StatsBatch",
    "ThetaForecaster",
    "ets_one",
    "sf_forecast",
    "theta_forecast",
]


def sf_forecast(train: Panel, horizon: int, models: list[Any], max_history: int
                ) -> dict[str, np.ndarray]:
    """statsforecast ``models`` over all series at once: one ``StatsForecast`` call (naive
    where a model cannot fit). Returns each model's alias -> ``(n_series, horizon)``."""
    from statsforecast import StatsForecast
    from statsforecast.models import Naive

    ys = recent(train.values, max_history)
    frame = pd.DataFrame(
        {
            "unique_id": np.repeat(np.arange(len(ys)), [len(y) for y in ys]),
            "ds": np.concatenate([np.arange(len(y)) for y in ys]),
            "y": np.concatenate(ys),
        }
    )
    model = StatsForecast(models=models, freq=1, fallback_model=Naive())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.forecast(df=frame, h=horizon)
    # Integer time stamps continue each series' own length: align on the step instead.
    out["step"] = out.groupby("unique_id").cumcount()
    result = {}
    for m in models:
        wide = out.pivot(index="unique_id", columns="step", values=m.alias)
        result[m.alias] = wide.reindex(np.arange(len(ys))).to_numpy(float)
    return result


def theta_forecast(train: Panel, horizon: int, season: int, max_history: int) -> np.ndarray:
    """statsforecast Theta over all series at once (naive where Theta cannot fit)."""
    from statsforecast.models import Theta

    return sf_forecast(train, horizon, [Theta(season_length=season)], max_history)["Theta"]


EtsSpec = tuple[str, bool | None]
# Most series x fits (backtest origins + 1) AutoARIMA is run on in one ``RevenueForecaster.fit``.
ARIMA_BUDGET = 240


@dataclass
class StatsBatch:
    """The statsforecast models of one ``RevenueForecaster.fit`` (AutoETS, AutoARIMA) in one
    ``StatsForecast`` call per panel and horizon.

    Each candidate joins (:meth:`join`) when it is built, before any forecast; the first one
    asked for forecasts on a panel runs every member's model, and the others read the result.
    Panels are recognised by their values (the deseasonalised panel of each candidate is built
    afresh but holds the same numbers), so a result never serves a different panel.
    """

    season: int
    max_history: int
    members: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._result: dict[str, np.ndarray] = {}

    @classmethod
    def of(cls, context: CandidateContext) -> StatsBatch:
        """The batch of ``context``'s fit (created by the first candidate that asks)."""
        batch = context.shared.setdefault("statsforecast", cls(context.season,
                                                              context.max_history))
        assert isinstance(batch, StatsBatch)
        return batch

    def join(self, alias: str) -> StatsBatch:
        if alias not in self.members:
            self.members.append(alias)
        return self

    def _models(self) -> list[Any]:
        from statsforecast.models import AutoARIMA, AutoETS

        build = {"AutoETS": AutoETS, "AutoARIMA": AutoARIMA}
        return [build[alias](season_length=self.season) for alias in self.members]

    def forecast(self, train: Panel, horizon: int, alias: str) -> np.ndarray:
        """``alias``'s ``(n_series, horizon)`` forecasts of ``train``."""
        values = np.ascontiguousarray(train.values, dtype=float)
        key = (values.shape, horizon, hashlib.blake2b(values.tobytes(), digest_size=16).digest())
        if key != self._key:
            self._result = sf_forecast(train, horizon, self._models(), self.max_history)
            self._key = key
        return self._result[alias]


def ets_one(
    y: np.ndarray, horizon: int, season: int, spec: EtsSpec | None
) -> tuple[np.ndarray, EtsSpec | None]:
    """One AutoETS forecast: re-estimate ``spec`` if given, else choose one.

    Multiplicative errors need positive data (and backtested better than additive ones on
    positive revenue), so the search space depends on the sign of the data.
    """
    from statsforecast.models import AutoETS

    positive = bool(np.all(y > 0))
    if spec is not None and not positive and "M" in spec[0]:
        spec = None  # the data turned non-positive since the spec was chosen
    # Damped trends are left out of the choice: that halves its cost, and on the dev data
    # (ABS retail, 2014-2016) it moved ETS's MASE by under 1% either way.
    model_spec, damped = spec if spec is not None else ("MZZ" if positive else "AZZ", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fitted = AutoETS(season_length=season, model=model_spec, damped=damped).fit(y)
            mean = fitted.predict(h=horizon)["mean"]
        except (ValueError, KeyError, IndexError, NotImplementedError, ZeroDivisionError,
                np.linalg.LinAlgError):
            # statsforecast fails in several ways on a handful of points (KeyError 'fitted'
            # on three quarters); the combination then falls back for that series.
            return np.full(horizon, np.nan), None
    components = fitted.model_["components"]
    return np.asarray(mean, float), ("".join(components[:3]), components[3] == "D")


def _ets_chunk(
    ys: list[np.ndarray], specs: list[EtsSpec | None], horizon: int, season: int
) -> list[tuple[np.ndarray, EtsSpec | None]]:
    """ETS for a chunk of series (the unit of work of a parallel job)."""
    return [ets_one(y, horizon, season, spec) for y, spec in zip(ys, specs, strict=True)]


@dataclass
class EtsForecaster:
    """``ets``: AutoETS whose specification is chosen on the oldest data it is given, then
    re-estimated.

    Backtests call it oldest origin first, so every later origin and the final fit reuse the
    specification chosen before them: no choice ever depends on data after a cutoff. A series
    too short for seasonal models keeps choosing until it is long enough.
    """

    season: int
    max_history: int
    n_jobs: int = 1

    def __post_init__(self) -> None:
        self.specs: dict[tuple[str, str], EtsSpec] = {}

    @classmethod
    def build(cls, context: CandidateContext) -> EtsForecaster:
        return cls(context.season, context.max_history, context.n_jobs)

    def fit(self, train: Panel) -> EtsForecaster:
        self.train_ = train
        return self

    def predict(self, horizon: int) -> np.ndarray:
        train = self.train_
        keys = list(zip(train.ids[LEVEL], train.ids[KEY], strict=True))
        ys = recent(train.values, self.max_history)
        specs = [self.specs.get(k) for k in keys]
        results = parallel_chunks(_ets_chunk, [ys, specs], self.n_jobs, horizon, self.season)
        # A specification is kept only once it was chosen with seasonal models in the running
        # (statsforecast needs more than two seasons); until then it is chosen afresh.
        seasonal_enough = [len(y) > 2 * self.season + 1 for y in ys]
        for key, (_, spec), enough in zip(keys, results, seasonal_enough, strict=True):
            if spec is not None and enough and key not in self.specs:
                self.specs[key] = spec
        return np.array([mean for mean, _ in results]).reshape(len(keys), horizon)


@dataclass
class ThetaForecaster:
    """``theta``: statsforecast Theta over all series at once."""

    season: int
    max_history: int

    @classmethod
    def build(cls, context: CandidateContext) -> ThetaForecaster:
        return cls(context.season, context.max_history)

    def fit(self, train: Panel) -> ThetaForecaster:
        self.train_ = train
        return self

    def predict(self, horizon: int) -> np.ndarray:
        return theta_forecast(self.train_, horizon, self.season, self.max_history)


@dataclass
class ArimaForecaster:
    """``arima``: statsforecast AutoARIMA over all series at once (in the fit's
    :class:`StatsBatch`)."""

    batch: StatsBatch

    @classmethod
    def build(cls, context: CandidateContext) -> ArimaForecaster | None:
        """None at D and W (a seasonal search over 7 or 52 lags) and beyond
        :data:`ARIMA_BUDGET` series-fits: AutoARIMA costs about a second per series and fit,
        far more than the other candidates together."""
        if context.letter in ("D", "W"):
            context.notes.append(f"arima left out at freq {context.letter} (its seasonal "
                                 "search is too slow there)")
            return None
        fits = len(context.ids) * context.n_fits
        if fits > ARIMA_BUDGET:
            context.notes.append(f"arima left out: {fits} series-fits would exceed its budget "
                                 f"of {ARIMA_BUDGET}")
            return None
        return cls(StatsBatch.of(context).join("AutoARIMA"))

    def fit(self, train: Panel) -> ArimaForecaster:
        self.train_ = train
        return self

    def predict(self, horizon: int) -> np.ndarray:
        return self.batch.forecast(self.train_, horizon, "AutoARIMA")


@dataclass
class AutoEtsForecaster:
    """``autoets``: statsforecast AutoETS as it comes (every error, trend, season and damping
    it can choose, re-chosen at every fit), over all series at once (in the fit's
    :class:`StatsBatch`)."""

    batch: StatsBatch

    @classmethod
    def build(cls, context: CandidateContext) -> AutoEtsForecaster:
        return cls(StatsBatch.of(context).join("AutoETS"))

    def fit(self, train: Panel) -> AutoEtsForecaster:
        self.train_ = train
        return self

    def predict(self, horizon: int) -> np.ndarray:
        return self.batch.forecast(self.train_, horizon, "AutoETS")
