"""Buy-till-you-die: a BG/NBD model of repeat purchases, fitted by maximum likelihood (scipy).

BG/NBD (Fader, Hardie and Lee, "Counting your customers the easy way", 2005): while alive, a
customer buys as a Poisson process of rate lambda ~ Gamma(r, alpha); after each purchase it
drops out with probability p ~ Beta(a, b). It needs no labels, only each customer's purchase
*days* before as_of: the repeat frequency ``x`` (distinct purchase days minus one), the recency
``t_x`` (days from the first to the last purchase day) and the age ``T`` (days from the first
purchase day to as_of). Time is counted in weeks inside the fit (better-conditioned numbers).

Written here rather than taken from ``lifetimes`` (archived since 2020, no longer maintained):
the likelihood is a dozen lines of ``scipy.special``; identical (x, t_x, T) triples are fitted
once with their count as a weight, so a snapshot of thousands of customers fits in a fraction
of a second; a small ridge on the log-parameters keeps the fit finite when the history is too
short to pin the dropout down (lifetimes then reports no convergence).

Two uses in the churn pipeline:

- :func:`btyd_features`: per customer, ``btyd_p_alive``, ``btyd_p_churn`` (no purchase within
  the horizon) and ``btyd_expected_purchases``, from a BG/NBD fitted on the data before as_of
  only (point-in-time), added to each training snapshot and to the scoring frame, so LightGBM
  can stack on them;
- :class:`BtydChurn`: the BG/NBD churn probability as a candidate model (and the fallback when
  no churn champion exists): it reads ``btyd_p_churn`` from the feature frame and maps it to an
  observed rate with a monotone one-feature logistic fit, so its ranking is BG/NBD's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, logit
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression

from features.customer import CustomerHistory, as_of_day

__all__ = [
    "BTYD_EXPECTED",
    "BTYD_FEATURES",
    "BTYD_P_ALIVE",
    "BTYD_P_CHURN",
    "BgNbd",
    "BtydChurn",
    "BtydSummary",
    "btyd_columns",
    "btyd_features",
    "purchase_summary",
]

BTYD_P_ALIVE = "btyd_p_alive"
BTYD_P_CHURN = "btyd_p_churn"
BTYD_EXPECTED = "btyd_expected_purchases"
BTYD_FEATURES = (BTYD_P_ALIVE, BTYD_P_CHURN, BTYD_EXPECTED)
_WEEK = 7.0
_P_MIN, _P_MAX = 1e-4, 1 - 1e-4
# Ridge on the log-parameters (per customer): negligible with enough data, decisive when the
# history cannot separate a long life from a slow rate.
DEFAULT_PENALTY = 1e-3
# Start values (r, alpha in weeks, a, b): typical fitted values of retail data.
_START = np.log([0.5, 5.0, 0.5, 3.0])
_BOUND = 12.0  # log-parameters stay within e**-12 .. e**12


@dataclass(frozen=True)
class BtydSummary:
    """Per-customer purchase summary in days: repeat frequency, recency, age."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray


def purchase_summary(first: np.ndarray, last: np.ndarray, days: np.ndarray,
                     as_of_day: float) -> BtydSummary:
    """x, t_x, T from first and last purchase day numbers and the count of purchase days."""
    return BtydSummary(np.maximum(np.asarray(days, float) - 1, 0.0),
                       np.asarray(last, float) - np.asarray(first, float),
                       as_of_day - np.asarray(first, float))


def _log_likelihood(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray,
                    T: np.ndarray) -> np.ndarray:
    r, alpha, a, b = np.exp(log_params)
    shared = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    stays = betaln(a, b + x) - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped = np.where(x > 0, betaln(a + 1, b + np.maximum(x, 1) - 1)
                           - (r + x) * np.log(alpha + t_x), -np.inf)
    return shared + np.logaddexp(stays, dropped)


class BgNbd:
    """The BG/NBD model: ``fit(summary)`` then probabilities for any customers' summaries.

    Args:
        penalty: ridge on the log-parameters, per customer.
    """

    def __init__(self, penalty: float = DEFAULT_PENALTY):
        self.penalty = penalty

    def fit(self, summary: BtydSummary, start: np.ndarray | None = None) -> BgNbd:
        """Maximum likelihood over customers with ``T > 0`` (identical triples pooled).

        Raises:
            ValueError: no customer to fit, or no repeat purchase at all (nothing to learn the
                purchase rate from).
        """
        keep = np.isfinite(summary.T) & (summary.T > 0)
        x, t_x, T = summary.x[keep], summary.t_x[keep], summary.T[keep]
        if x.size == 0 or not (x > 0).any():
            raise ValueError("BG/NBD needs customers with repeat purchases before as_of")
        triples = np.column_stack([x, t_x, T])
        unique, counts = np.unique(triples, axis=0, return_counts=True)
        ux, ut, uT = unique[:, 0], unique[:, 1] / _WEEK, unique[:, 2] / _WEEK
        weights = counts / counts.sum()

        def loss(theta: np.ndarray) -> float:
            ll = _log_likelihood(theta, ux, ut, uT)
            return float(-(weights * ll).sum() + self.penalty * (theta @ theta))

        begin = _START if start is None else np.asarray(start, float)
        found = minimize(loss, begin, method="L-BFGS-B", bounds=[(-_BOUND, _BOUND)] * 4)
        if not np.isfinite(found.fun):
            raise ValueError("BG/NBD did not converge on this history")
        self.log_params_ = np.asarray(found.x, float)
        self.n_customers_ = int(x.size)
        return self

    @property
    def params_(self) -> dict[str, float]:
        """r, alpha (per week), a, b."""
        if not hasattr(self, "log_params_"):
            raise NotFittedError("BgNbd is not fitted yet")
        return dict(zip(("r", "alpha", "a", "b"), np.exp(self.log_params_).tolist(),
                        strict=True))

    def probabilities(self, summary: BtydSummary, horizon_days: float
                      ) -> dict[str, np.ndarray]:
        """P(alive), P(no purchase in the next ``horizon_days``) and expected purchases.

        Customers without a purchase (NaN summary) get NaN.
        """
        r, alpha, a, b = np.exp(self.log_params_)
        x = summary.x
        t_x, T, t = summary.t_x / _WEEK, summary.T / _WEEK, horizon_days / _WEEK
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            odds = np.where(x > 0, a / (b + x - 1) * np.exp(
                (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))), 0.0)
            alive = 1.0 / (1.0 + odds)
            quiet = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
            churn = 1.0 - alive * (1.0 - quiet)
            # Alive and buying at the posterior mean rate; dropout over the horizon ignored.
            expected = alive * (r + x) / (alpha + T) * t
        return {BTYD_P_ALIVE: alive, BTYD_P_CHURN: churn, BTYD_EXPECTED: expected}


def btyd_features(summary: BtydSummary, fit_rows: np.ndarray, rows: np.ndarray,
                  horizon_days: int, start: np.ndarray | None = None
                  ) -> tuple[dict[str, np.ndarray], BgNbd | None]:
    """BTYD features of ``rows`` from a BG/NBD fitted on ``fit_rows`` (NaN when it cannot fit).

    Args:
        summary: every customer's summary at one as_of (NaN for customers without purchases).
        fit_rows: positions fitted on (customers with a purchase before as_of).
        rows: positions returned.
        horizon_days: the churn horizon.
        start: log-parameters to start from (e.g. the previous snapshot's).
    """
    pick = BtydSummary(summary.x[fit_rows], summary.t_x[fit_rows], summary.T[fit_rows])
    try:
        model: BgNbd | None = BgNbd().fit(pick, start)
    except ValueError:
        model = None
    out = BtydSummary(summary.x[rows], summary.t_x[rows], summary.T[rows])
    if model is None:
        return {name: np.full(len(rows), np.nan) for name in BTYD_FEATURES}, None
    return model.probabilities(out, horizon_days), model


class BtydChurn:
    """BG/NBD's churn probability as a candidate model: ranks by ``btyd_p_churn``.

    The BG/NBD itself is refitted on the data before every as_of by the feature step
    (:func:`btyd_features`); this estimator only maps its probability to the observed churn
    rate with a one-feature logistic fit on the log-odds (increasing, so BG/NBD's ranking
    stands). Unfitted (``fit`` never called) it returns BG/NBD's probability as it is.

    Args:
        horizon_days: the horizon ``btyd_p_churn`` was computed for.
    """

    horizon_days_: int | None = None  # set by the pipeline, like ChurnModel's

    def __init__(self, horizon_days: int = 90):
        self.horizon_days = horizon_days

    def _score(self, frame: pd.DataFrame) -> np.ndarray:
        if BTYD_P_CHURN not in frame.columns:
            raise ValueError(f"the feature frame lacks column {BTYD_P_CHURN}")
        p = frame[BTYD_P_CHURN].to_numpy(dtype=float)
        # A customer BG/NBD could not score (no purchase): as much at risk as can be.
        return np.asarray(logit(np.clip(np.nan_to_num(p, nan=_P_MAX), _P_MIN, _P_MAX)))

    def log_odds(self, frame: pd.DataFrame) -> np.ndarray:
        """BG/NBD's churn log-odds per row, before the calibration map (its ranking)."""
        return self._score(frame)

    def fit(self, X: pd.DataFrame, y: object) -> BtydChurn:
        """Learn the monotone map from BG/NBD's log-odds to the observed churn rate."""
        labels = np.asarray(y, dtype=int)
        if labels.min() == labels.max():
            raise ValueError("the calibration rows need both churners and non-churners")
        self.link_ = LogisticRegression(C=1e6, max_iter=1000).fit(
            self._score(X).reshape(-1, 1), labels)
        if self.link_.coef_[0, 0] <= 0:  # an inverted map would reverse BG/NBD's ranking
            del self.link_
        return self

    def predict_proba_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``churn_probability`` per row of a feature frame with the BTYD columns."""
        score = self._score(frame)
        if hasattr(self, "link_") and len(frame):
            p = self.link_.predict_proba(score.reshape(-1, 1))[:, 1]
        else:
            p = expit(score)
        return pd.DataFrame({"churn_probability": np.clip(p, _P_MIN, _P_MAX)},
                            index=frame.index)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``churn_probability`` and ``reasons`` (BG/NBD's P(alive) and the recency)."""
        out = self.predict_proba_frame(frame)
        out["reasons"] = _btyd_reasons(frame)
        return out

    def describe(self) -> Mapping[str, Any]:
        return {"model": "BG/NBD", "horizon_days": self.horizon_days,
                "calibrated": hasattr(self, "link_")}


def _btyd_reasons(frame: pd.DataFrame) -> list[str]:
    alive = (frame[BTYD_P_ALIVE].to_numpy(dtype=float) if BTYD_P_ALIVE in frame
             else np.full(len(frame), np.nan))
    recency = (frame["hist_recency_days"].to_numpy(dtype=float)
               if "hist_recency_days" in frame else np.full(len(frame), np.nan))
    cycle = (frame["hist_cycle_median_days"].to_numpy(dtype=float)
             if "hist_cycle_median_days" in frame else np.full(len(frame), np.nan))
    out = []
    for p, days, gap in zip(alive, recency, cycle, strict=True):
        parts = []
        if np.isfinite(days):
            parts.append(f"no order for {days:.0f} days" + (
                f", usual cycle {gap:.0f} days" if np.isfinite(gap) else ", no repeat order yet"))
        if np.isfinite(p) and p < 0.9:
            parts.append(f"buying pattern says {p:.0%} likely still a customer")
        out.append("; ".join(parts))
    return out


def btyd_columns(history: CustomerHistory, as_of: pd.Timestamp | str, horizon_days: int,
                 rows: np.ndarray) -> dict[str, np.ndarray]:
    """``btyd_p_alive``, ``btyd_p_churn``, ``btyd_expected_purchases`` of customers ``rows``.

    The BG/NBD is fitted on every customer with a purchase day before as_of (and nothing
    later); its columns are NaN when it cannot be fitted (no repeat purchase yet).
    """
    _, day = as_of_day(as_of)
    purchases = history.orders.purchases
    days = purchases.count(purchases.day0, day)
    summary = purchase_summary(purchases.first_before(day), purchases.last_before(day), days,
                               day)
    columns, _ = btyd_features(summary, np.flatnonzero(days > 0), rows, horizon_days)
    return columns
