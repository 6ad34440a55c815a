"""Revenue forecasting: backtested candidates, a weighted combination, conformal intervals.

- ``forecaster``: :class:`RevenueForecaster`, the orchestration (panel, backtest, combination,
  reconciliation, intervals; the method is described there).
- ``base``: the :class:`~models.forecast.base.Forecaster` protocol every candidate follows
  (``fit(train) -> self``, ``predict(horizon) -> (n_series, horizon)``).
- ``candidates``: the candidates by name, one registry entry each; their families in
  ``naive``, ``statistical`` (statsforecast: ETS, Theta), ``prophet`` and ``lgbm``, and
  ``season`` (one observed season for series too short for the seasonal models).
- ``combine``: the backtest-weighted combination; ``conformal``: the intervals and the checks
  every forecast row passes; ``reconciliation``: coherence across the hierarchy.
"""

from models.forecast.base import COMBINED, RECONCILED, Forecaster
from models.forecast.candidates import CANDIDATES
from models.forecast.combine import COMBINATIONS
from models.forecast.conformal import MIN_WINDOWS, sane_intervals
from models.forecast.forecaster import RevenueForecaster, short_min_history
from models.forecast.reconciliation import RECONCILIATIONS

__all__ = [
    "CANDIDATES",
    "COMBINATIONS",
    "COMBINED",
    "MIN_WINDOWS",
    "RECONCILED",
    "RECONCILIATIONS",
    "Forecaster",
    "RevenueForecaster",
    "sane_intervals",
    "short_min_history",
]
