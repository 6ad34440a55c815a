"""Win / slip model: the probability that an open deal is won *and* closes inside a period.

A deal that is won after the period ends (it slipped) counts as 0, like a lost one: what a
target needs is revenue inside the period. The model is therefore conditioned on the period:
besides the funnel features it sees how many days are left until the period ends, how far the
period start is, and where the deal's expected close date falls relative to both. The deal
snapshots, period features and labels are built in :mod:`features.deals`
(:func:`features.deals.win_training_rows`); this module holds what learns from them.

Snapshots are paired with calendar periods, and when those cannot be split into training and
holdout slices (a young CRM) also with rolling windows of 7 to 91 days from ``T'``
(:func:`labelled_rows`). The split in time is sized to the history (:func:`sized_split`): three
slices when there is enough, else two.

Two estimators share one interface (``predict_frame(frame) -> DataFrame`` with
``win_probability``): :class:`WinModel` (LightGBM boosted from the stage rates) and
:class:`StageRateWinModel` (historical rates by stage and days left, the fallback and the
baseline the model has to beat).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier, early_stopping
from sklearn.linear_model import LogisticRegression

from engine.schemas import AMOUNT, AS_OF
from features.deals import (
    CATEGORICAL_FEATURES,
    LABEL,
    NUMERIC_FEATURES,
    P_DAYS_LEFT,
    PERIOD_END,
    win_training_rows,
)
from features.funnel import F_STAGE
from models.classification import classification_metrics

__all__ = [
    "COUNT_KEYS",
    "COUNT_ROWS",
    "DAYS_LEFT_EDGES",
    "FLAT_WIN_RATE",
    "ROLLING_WINDOWS",
    "WIN_PROBABILITY",
    "StageRateWinModel",
    "TimeSplit",
    "WinModel",
    "add_counts",
    "conversion_curve",
    "holdout_metrics",
    "labelled_rows",
    "period_spread",
    "sized_split",
    "stage_rate_counts",
    "time_split",
]

WIN_PROBABILITY = "win_probability"
# Buckets of days left in the period, for the stage-rate model and the conversion curve.
DAYS_LEFT_EDGES = (0, 15, 31, 61, 92, 183, 100_000)
EARLY_STOPPING_ROUNDS = 100
# Boosting rounds when there is no calibration slice to stop early on (young histories).
UNSTOPPED_ROUNDS = 150
# Rolling windows (days) paired with every snapshot besides the calendar periods when calendar
# periods alone cannot be split into training and holdout slices (:func:`labelled_rows`): a
# young CRM has hardly a calendar period over. Only then: a model that learned from short
# windows extrapolates their rates to a quarter's days left, and on crm-sales at two months of
# closes that under-predicted the quarter's pipeline wins fivefold.
ROLLING_WINDOWS = (7, 14, 28, 56, 91)
# Past (snapshot, period) groups needed to measure the spread of a period's pipeline wins, and
# the spread assumed below that (log scale; the crm-sales data measures 0.3 to 0.55).
MIN_SPREAD_GROUPS = 4
DEFAULT_PERIOD_SPREAD = 0.5
# In-period win rate assumed when there is no closed history at all.
FLAT_WIN_RATE = 0.2
_EPS = 1e-6


# --- splits in time ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSplit:
    """Rows for fitting, calibrating and judging, split in time without overlap.

    ``train`` rows ended (their period) before ``calibrate_from``; ``calibrate`` rows were seen
    on or after it and ended before ``holdout_from``; ``holdout`` rows were seen on or after
    ``holdout_from``. A row seen before a boundary but ending after it is dropped, so no label
    of a later slice is known when an earlier slice is fitted. A two-slice split (too little
    history for three) has an empty ``calibrate`` and ``calibrate_from == holdout_from``.
    """

    train: pd.DataFrame
    calibrate: pd.DataFrame
    holdout: pd.DataFrame
    calibrate_from: pd.Timestamp
    holdout_from: pd.Timestamp
    notes: tuple[str, ...] = ()

    @property
    def slices(self) -> int:
        """3, or 2 when there is no calibration slice."""
        return 3 if len(self.calibrate) else 2

    def describe(self) -> str:
        cal = (f"calibrate from {self.calibrate_from.date()}, " if self.slices == 3
               else "no calibration slice, ")
        return (f"{cal}holdout from {self.holdout_from.date()} ({len(self.holdout)} rows, "
                f"{int(self.holdout[LABEL].sum()) if LABEL in self.holdout else 0} won)")


# A slice judges or calibrates only with this many rows, won and not won each.
MIN_SLICE_ROWS = 100
MIN_SLICE_CLASS = 10
# Shares of the snapshot dates (calibrate, holdout) tried in turn; then two slices.
SPLIT_SHARES = ((0.2, 0.2), (0.25, 0.25), (0.3, 0.3))
TWO_SLICE_SHARES = (0.2, 0.3, 0.4)


def _usable(frame: pd.DataFrame, min_rows: int = MIN_SLICE_ROWS) -> bool:
    """Enough rows, won and not won, to fit or judge on."""
    if len(frame) < min_rows:
        return False
    won = int(frame[LABEL].sum())
    return min(won, len(frame) - won) >= MIN_SLICE_CLASS


def _split_at(rows: pd.DataFrame, cal_from: pd.Timestamp, hold_from: pd.Timestamp
              ) -> TimeSplit:
    seen, ended = rows[AS_OF], rows[PERIOD_END]
    calibrate = rows[(seen >= cal_from) & (ended <= hold_from)]
    if cal_from == hold_from:
        calibrate = rows.iloc[:0]
    return TimeSplit(train=rows[ended <= cal_from], calibrate=calibrate,
                     holdout=rows[seen >= hold_from], calibrate_from=cal_from,
                     holdout_from=hold_from)


def time_split(
    rows: pd.DataFrame, calibrate_share: float = 0.2, holdout_share: float = 0.2
) -> TimeSplit:
    """Split training rows by snapshot date into train / calibrate / holdout."""
    dates = np.sort(rows[AS_OF].unique())
    if len(dates) < 3:
        raise ValueError("too few snapshot dates with a known outcome to train the win model")
    cal_from = pd.Timestamp(dates[int(len(dates) * (1 - calibrate_share - holdout_share))])
    hold_from = pd.Timestamp(dates[int(len(dates) * (1 - holdout_share))])
    return _split_at(rows, cal_from, hold_from)


def sized_split(rows: pd.DataFrame) -> tuple[TimeSplit, list[str]]:
    """The first time split whose slices can each do their job, and notes on any fallback.

    Tries :func:`time_split` at :data:`SPLIT_SHARES` (train, calibrate and holdout each need
    :data:`MIN_SLICE_ROWS` rows with won and not-won ones); with too little history for three
    slices, a two-slice split (no separate calibration, said in a note).

    Raises:
        ValueError: not even two usable slices (too few closed deals).
    """
    dates = np.sort(rows[AS_OF].unique()) if len(rows) else np.array([])
    if len(dates) >= 3:
        for cal_share, hold_share in SPLIT_SHARES:
            split = time_split(rows, cal_share, hold_share)
            if all(_usable(f) for f in (split.train, split.calibrate, split.holdout)):
                notes = ([] if (cal_share, hold_share) == SPLIT_SHARES[0] else [
                    f"split sized to the history: calibration and holdout slices each take "
                    f"{hold_share:.0%} of the snapshot dates"])
                return replace(split, notes=tuple(notes)), notes
    if len(dates) >= 2:
        for hold_share in TWO_SLICE_SHARES:
            hold_from = pd.Timestamp(dates[min(int(len(dates) * (1 - hold_share)),
                                               len(dates) - 1)])
            split = _split_at(rows, hold_from, hold_from)
            if _usable(split.train) and _usable(split.holdout):
                notes = [
                    "too little closed history for a separate calibration slice: the model "
                    f"is fitted on the older rows and judged on the latest {hold_share:.0%} of "
                    "snapshot dates, with a fixed number of boosting rounds and no Platt map"]
                return replace(split, notes=tuple(notes)), notes
    raise ValueError(
        f"too little closed history to train the win model: {len(rows):,} labelled deal "
        f"snapshots over {len(dates)} snapshot dates do not give a training and a later "
        f"holdout slice with at least {MIN_SLICE_ROWS} rows and {MIN_SLICE_CLASS} won and "
        f"not-won each; feasibility uses historical stage win rates until more deals close")


def labelled_rows(snapshots: pd.DataFrame, opportunities: pd.DataFrame,
                  as_of: pd.Timestamp | str) -> tuple[pd.DataFrame, TimeSplit, list[str]]:
    """Training rows and their split: calendar periods, or with rolling windows when needed.

    Calendar periods are what feasibility asks about; when they cannot be split into usable
    slices (:func:`sized_split`), rolling windows of :data:`ROLLING_WINDOWS` days are added
    and a note says so.

    Raises:
        ValueError: not even the rolling windows give a training and a holdout slice.
    """
    rows = win_training_rows(snapshots, opportunities, as_of)
    try:
        split, notes = sized_split(rows)
        return rows, split, notes
    except ValueError:
        pass
    rows = win_training_rows(snapshots, opportunities, as_of, ROLLING_WINDOWS)
    split, notes = sized_split(rows)
    note = ("too few calendar periods have ended to learn from: rolling windows of "
            f"{', '.join(str(d) for d in ROLLING_WINDOWS)} days after each snapshot are "
            "labelled too (longer periods are extrapolated from them: treat the win "
            "probabilities of a whole quarter with care)")
    return rows, replace(split, notes=(note, *split.notes)), [note, *notes]


# --- shared pieces of both estimators ---------------------------------------------------------


def _days_left_bucket(days_left: pd.Series) -> np.ndarray:
    return np.digitize(days_left.to_numpy(dtype=float), DAYS_LEFT_EDGES[1:-1])


def conversion_curve(rows: pd.DataFrame) -> pd.Series:
    """Amount-weighted share of open pipeline won inside the period, by days-left bucket."""
    amount = rows[AMOUNT].to_numpy(dtype=float)
    return _conversion(pd.DataFrame({_AMOUNT: amount, _WON_AMOUNT: amount * rows[LABEL]
                                     .to_numpy()}, index=_days_left_bucket(rows[P_DAYS_LEFT])))


def _conversion(amounts: pd.DataFrame) -> pd.Series:
    """:func:`conversion_curve` from amounts and won amounts indexed by days-left bucket."""
    won = amounts[_WON_AMOUNT].groupby(level=0).sum()
    total = amounts[_AMOUNT].groupby(level=0).sum()
    rate = (won / total.where(total > 0)).reindex(range(len(DAYS_LEFT_EDGES) - 1))
    overall = float(won.sum() / total.sum()) if total.sum() > 0 else 0.0
    # Buckets never observed borrow the nearest observed one (days left only grow conversion).
    return rate.ffill().bfill().fillna(overall)


def period_spread(rows: pd.DataFrame, p: np.ndarray, min_expected: float = 5.0) -> float:
    """How far a period's won amount strays from its expectation beyond the luck of the draw.

    Deals of one period share fortunes (a strong quarter-end push, a budget freeze), which
    independent per-deal draws miss. For every (snapshot, period) group of labelled rows,
    ``r = won amount / expected amount``; with independent deals ``E[(r - 1)^2]`` would be
    ``v = sum p(1-p)a^2 / (sum p a)^2``, so the shared part is estimated as the mean of
    ``(r - 1)^2 - v`` (method of moments, at least 0), on groups expecting at least
    ``min_expected`` wins. Returns its square root: the spread of a common multiplicative
    factor on the period's pipeline wins; NaN with fewer than :data:`MIN_SPREAD_GROUPS` such
    groups (too little history to measure it).
    """
    if rows.empty or LABEL not in rows.columns or len(p) != len(rows):
        return math.nan
    amount = rows[AMOUNT].to_numpy(dtype=float).clip(min=0.0)
    return _spread(pd.DataFrame({
        AS_OF: rows[AS_OF].to_numpy(), PERIOD_END: rows[PERIOD_END].to_numpy(),
        "exp": p * amount, "won": rows[LABEL].to_numpy(dtype=float) * amount,
        "var": p * (1 - p) * amount**2, "n": p,
    }), min_expected)


def _spread(terms: pd.DataFrame, min_expected: float = 5.0) -> float:
    """:func:`period_spread` from per-row (or per-cell) ``exp, won, var, n`` terms with their
    snapshot and period end."""
    groups = terms.groupby([AS_OF, PERIOD_END])[["exp", "won", "var", "n"]].sum()
    groups = groups[(groups["n"] >= min_expected) & (groups["exp"] > 0)]
    if len(groups) < MIN_SPREAD_GROUPS:
        return math.nan
    excess = (groups["won"] / groups["exp"] - 1.0) ** 2 - groups["var"] / groups["exp"] ** 2
    return float(math.sqrt(max(float(excess.mean()), 0.0)))


# What the stage-rate model learns from, summed per (snapshot, period end, stage, days-left
# bucket) cell (stage_rate_counts): all StageRateWinModel.fit needs, and sums of disjoint sets
# of rows add up (buckets of deals summed elsewhere: fit_counts of their sum).
STAGE_KEY = "stage_key"
DAYS_LEFT_BUCKET = "days_left_bucket"
COUNT_KEYS = (AS_OF, PERIOD_END, STAGE_KEY, DAYS_LEFT_BUCKET)
COUNT_ROWS, _WINS, _AMOUNT, _WON_AMOUNT = "rows", "wins", "amount", "won_amount"
_CLIPPED, _CLIPPED_WON, _CLIPPED_SQUARED = "amount_clipped", "won_clipped", "clipped_squared"
COUNT_SUMS = (COUNT_ROWS, _WINS, _AMOUNT, _WON_AMOUNT, _CLIPPED, _CLIPPED_WON, _CLIPPED_SQUARED)


def stage_rate_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """The sums :meth:`StageRateWinModel.fit_counts` learns from, per :data:`COUNT_KEYS` cell
    of labelled rows (:func:`features.deals.win_training_rows`): rows, wins, amount, won
    amount, and the amount clipped at 0 with its won part and square (the period spread's).
    Counts of disjoint rows add up: :func:`add_counts`."""
    if rows.empty or LABEL not in rows.columns:
        return _no_counts()
    stage, bucket = StageRateWinModel._keys(rows)
    y = rows[LABEL].to_numpy(dtype=float)
    amount = rows[AMOUNT].to_numpy(dtype=float)
    clipped = amount.clip(min=0.0)
    frame = pd.DataFrame({
        AS_OF: rows[AS_OF].to_numpy(dtype="datetime64[ns]"),
        PERIOD_END: rows[PERIOD_END].to_numpy(dtype="datetime64[ns]"),
        STAGE_KEY: stage, DAYS_LEFT_BUCKET: bucket.astype(np.int64),
        COUNT_ROWS: 1.0, _WINS: y, _AMOUNT: amount, _WON_AMOUNT: amount * y,
        _CLIPPED: clipped, _CLIPPED_WON: clipped * y, _CLIPPED_SQUARED: clipped**2})
    return add_counts(frame)


def add_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """:func:`stage_rate_counts` of several sets of rows (stacked), summed per cell."""
    if counts.empty:
        return _no_counts()
    return counts.groupby(list(COUNT_KEYS), sort=True, as_index=False)[list(COUNT_SUMS)].sum()


def _no_counts() -> pd.DataFrame:
    return pd.DataFrame({AS_OF: pd.Series(dtype="datetime64[ns]"),
                         PERIOD_END: pd.Series(dtype="datetime64[ns]"),
                         STAGE_KEY: pd.Series(dtype=object),
                         DAYS_LEFT_BUCKET: pd.Series(dtype=np.int64),
                         **{c: pd.Series(dtype=float) for c in COUNT_SUMS}})


class _Converts:
    """Mixin: the historical conversion of pipeline into in-period revenue, by days left, and
    the spread of a period's pipeline wins around their expectation (:func:`period_spread`)."""

    conversion_: pd.Series

    def conversion_at(self, days_left: float) -> float:
        """Share of pipeline amount that historically closed as won within ``days_left`` days."""
        bucket = int(np.digitize([days_left], DAYS_LEFT_EDGES[1:-1])[0])
        return float(self.conversion_.iloc[bucket])

    def period_spread(self) -> float:
        """Spread of the common factor of a period's pipeline wins: as measured, else (too
        little history) :data:`DEFAULT_PERIOD_SPREAD`; 0 for models fitted before it was
        measured."""
        value = float(getattr(self, "period_spread_", 0.0))
        return DEFAULT_PERIOD_SPREAD if math.isnan(value) else value

    def period_spread_measured(self) -> bool:
        """False when :meth:`period_spread` is the default (too little history to measure)."""
        return not math.isnan(float(getattr(self, "period_spread_", 0.0)))


def _check_fitted(model: object, attribute: str) -> None:
    if not hasattr(model, attribute):
        raise RuntimeError(f"{type(model).__name__} is not fitted: call fit() first")


# --- the baseline: historical rates by stage ---------------------------------------------------


class StageRateWinModel(_Converts):
    """Historical in-period win rate by (stage, days-left bucket), shrunk to the bucket's rate.

    The fallback when no champion win model is registered, and the baseline the LightGBM
    model is compared with. Without ``stage_history`` every past stage is unknown and the model
    reduces to rates by days left.

    Args:
        prior_strength: pseudo-rows of the bucket rate that a (stage, bucket) rate is shrunk to.
    """

    def __init__(self, prior_strength: float = 20.0):
        self.prior_strength = prior_strength

    @staticmethod
    def _keys(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        stage = frame[F_STAGE].astype(object).where(frame[F_STAGE].notna(), "(unknown)")
        return stage.astype(str).to_numpy(), _days_left_bucket(frame[P_DAYS_LEFT])

    def fit(self, rows: pd.DataFrame) -> StageRateWinModel:
        """Learn the rates from training rows (:func:`features.deals.win_training_rows`).

        With no rows at all every deal gets :data:`FLAT_WIN_RATE`.
        """
        return self.fit_counts(stage_rate_counts(rows))

    def fit_counts(self, counts: pd.DataFrame) -> StageRateWinModel:
        """Learn the rates from the training rows' :func:`stage_rate_counts` (summed over
        buckets of deals with :func:`add_counts`): the same rates as :meth:`fit` on the rows."""
        if counts.empty or counts[COUNT_ROWS].sum() == 0:
            self.overall_ = FLAT_WIN_RATE
            self.bucket_rate_ = pd.Series(dtype=float)
            self.cell_rate_ = pd.Series(dtype=float)
            self.conversion_ = pd.Series([FLAT_WIN_RATE] * (len(DAYS_LEFT_EDGES) - 1))
            self.period_spread_ = math.nan
            return self
        stage = counts[STAGE_KEY].to_numpy(dtype=object)
        bucket = counts[DAYS_LEFT_BUCKET].to_numpy(dtype=np.int64)
        sums = counts[[_WINS, COUNT_ROWS]]
        self.overall_ = float((sums[_WINS].sum() + 1.0) / (sums[COUNT_ROWS].sum() + 2.0))
        by_bucket = sums.groupby(bucket).sum()
        self.bucket_rate_ = (by_bucket[_WINS] + self.overall_ * self.prior_strength) / (
            by_bucket[COUNT_ROWS] + self.prior_strength
        )
        by_cell = sums.groupby([stage, bucket]).sum()
        prior = self.bucket_rate_.reindex(by_cell.index.get_level_values(1)).to_numpy()
        self.cell_rate_ = (by_cell[_WINS] + prior * self.prior_strength) / (
            by_cell[COUNT_ROWS] + self.prior_strength
        )
        self.conversion_ = _conversion(counts[[_AMOUNT, _WON_AMOUNT]].set_axis(bucket))
        p = self._rates(stage, bucket)
        self.period_spread_ = _spread(pd.DataFrame({
            AS_OF: counts[AS_OF].to_numpy(), PERIOD_END: counts[PERIOD_END].to_numpy(),
            "exp": p * counts[_CLIPPED].to_numpy(), "won": counts[_CLIPPED_WON].to_numpy(),
            "var": p * (1 - p) * counts[_CLIPPED_SQUARED].to_numpy(),
            "n": p * counts[COUNT_ROWS].to_numpy()}))
        return self

    def _rates(self, stage: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """The rate of each (stage, days-left bucket): the cell's, else the bucket's, else
        the overall one."""
        cells = pd.MultiIndex.from_arrays([stage, bucket])
        p = self.cell_rate_.reindex(cells).to_numpy()
        fallback = self.bucket_rate_.reindex(bucket).fillna(self.overall_).to_numpy()
        return np.where(np.isnan(p), fallback, p)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``win_probability`` per row (a deal seen at a date, with period features)."""
        _check_fitted(self, "cell_rate_")
        stage, bucket = self._keys(frame)
        return pd.DataFrame({WIN_PROBABILITY: self._rates(stage, bucket)}, index=frame.index)


# --- the model: LightGBM boosted from the stage rates, stopped on a later slice -------------


def _lgbm_params(seed: int) -> dict[str, Any]:
    # Small trees and large leaves: a few thousand deal snapshots are typical. One thread: on a
    # shared two-core machine OpenMP threads fighting other work made fits ten times slower.
    return {
        "n_estimators": 400,
        "learning_rate": 0.05,
        "num_leaves": 7,
        "min_child_samples": 100,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "n_jobs": 1,
        "verbose": -1,
        "random_state": seed,
    }


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


class WinModel(_Converts):
    """LightGBM on funnel + period features, boosted from the stage rates' log-odds.

    ``fit(train, calibrate)`` takes two row sets from :func:`time_split`: the booster learns on
    ``train`` and stops when the log loss on ``calibrate`` (a later slice) stops falling, so it
    keeps only what holds up on data it has not learned from. It is fitted twice, once starting
    from the log-odds of :class:`StageRateWinModel` (fitted on both slices: the trees learn
    what the rates miss) and once from nothing, and the one with the lower log loss on
    ``calibrate`` is kept. Categorical columns are encoded with the
    categories seen in training; unseen values become missing. A Platt map fitted on
    ``calibrate`` is applied on top only where it holds up later in that slice
    (:func:`_platt_map`).

    Args:
        seed: LightGBM's random state.
        params: overrides of the LightGBM parameters.
    """

    base_: StageRateWinModel | None = None

    def __init__(self, seed: int = 42, params: dict[str, Any] | None = None):
        self.seed = seed
        self.params = params

    def _matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        columns: dict[str, Any] = {}
        for name in self.numeric_:
            values = frame[name] if name in frame.columns else pd.Series(np.nan, frame.index)
            columns[name] = pd.to_numeric(values, errors="coerce").astype(float)
        for name, categories in self.categories_.items():
            values = frame[name] if name in frame.columns else pd.Series(np.nan, frame.index)
            columns[name] = pd.Categorical(values.astype(object), categories=categories)
        return pd.DataFrame(columns, index=frame.index)

    def _learn_encoding(self, rows: pd.DataFrame) -> None:
        self.numeric_ = [c for c in NUMERIC_FEATURES if c in rows.columns]
        self.categories_ = {
            c: sorted(rows[c].dropna().astype(str).unique())
            for c in CATEGORICAL_FEATURES
            if c in rows.columns and rows[c].notna().any()
        }

    def raw_probability(self, frame: pd.DataFrame) -> np.ndarray:
        """The uncalibrated probability: the stage rates' log-odds plus the booster's."""
        _check_fitted(self, "booster_")
        margin = np.asarray(self.booster_.predict(self._matrix(frame), raw_score=True),
                            dtype=float)
        base = self.base_  # None: boosted from nothing (and models fitted before base_ existed)
        if base is not None:
            margin = margin + _logit(base.predict_frame(frame)[WIN_PROBABILITY].to_numpy())
        return 1.0 / (1.0 + np.exp(-margin))

    def _base_logit(self, frame: pd.DataFrame) -> np.ndarray:
        if self.base_ is None:
            return np.zeros(len(frame))
        return _logit(self.base_.predict_frame(frame)[WIN_PROBABILITY].to_numpy(dtype=float))

    def _boost(self, params: dict[str, Any], train: pd.DataFrame, calibrate: pd.DataFrame,
               fit_args: dict[str, Any]) -> LGBMClassifier:
        """Fit a booster from the current start (``base_``, or none) and set it."""
        args = dict(fit_args)
        if "eval_X" in args:
            args["eval_init_score"] = [self._base_logit(calibrate)]
        self.booster_ = LGBMClassifier(**params).fit(
            self._matrix(train), train[LABEL], init_score=self._base_logit(train), **args)
        return self.booster_

    def _score_with(self, booster: LGBMClassifier, base: StageRateWinModel | None,
                    frame: pd.DataFrame, y: np.ndarray) -> float:
        """Log loss on ``frame`` of the raw probability of ``booster`` started from ``base``."""
        kept = self.booster_, self.base_
        self.booster_, self.base_ = booster, base
        try:
            return float(classification_metrics(y, self.raw_probability(frame))["log_loss"])
        finally:
            self.booster_, self.base_ = kept

    def fit(self, train: pd.DataFrame, calibrate: pd.DataFrame) -> WinModel:
        """Fit the booster on ``train``, stopped early on ``calibrate`` (log loss).

        ``calibrate`` may also fit a Platt map (:func:`_platt_map`); neither ever sees the
        holdout. Without a calibration slice the booster runs :data:`UNSTOPPED_ROUNDS` rounds.
        """
        if train[LABEL].nunique() < 2:
            raise ValueError("the win model needs won and not-won rows in its training slice")
        self._learn_encoding(train)
        both = len(calibrate) > 0 and calibrate[LABEL].nunique() == 2
        # Without a later slice to stop on, a fixed, shorter boosting run.
        fixed = {} if both else {"n_estimators": UNSTOPPED_ROUNDS}
        params = _lgbm_params(self.seed) | fixed | dict(self.params or {})
        fit_args: dict[str, Any] = {}
        if both:
            fit_args = {
                "eval_X": self._matrix(calibrate),
                "eval_y": calibrate[LABEL],
                "callbacks": [early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
            }
        # Two starts: from the stage rates' log-odds (the trees learn what the rates miss) or
        # from nothing; with a later slice, the one with the lower log loss there is kept.
        self.base_ = StageRateWinModel().fit(pd.concat([train, calibrate]))
        boosted = self._boost(params, train, calibrate, fit_args)
        if both:
            booster, base = boosted, self.base_
            self.base_ = None
            plain = self._boost(params, train, calibrate, fit_args)
            y = calibrate[LABEL].to_numpy()
            if (classification_metrics(y, self.raw_probability(calibrate))["log_loss"]
                    >= self._score_with(booster, base, calibrate, y)):
                self.booster_, self.base_ = booster, base
            else:
                self.booster_ = plain
        self.calibrator_ = _platt_map(self, calibrate) if both else None
        if both:
            self.calibrated_days_left_ = (float(calibrate[P_DAYS_LEFT].min()),
                                          float(calibrate[P_DAYS_LEFT].max()))
        self.conversion_ = conversion_curve(pd.concat([train, calibrate]))
        # Measured on the later slice, where the booster's probabilities are out of sample
        # (on the training rows when there is none: in sample, so rather too narrow).
        judged = calibrate if len(calibrate) else train
        self.period_spread_ = period_spread(
            judged, self.predict_frame(judged)[WIN_PROBABILITY].to_numpy(dtype=float))
        self.feature_importance_ = pd.Series(
            self.booster_.booster_.feature_importance("gain"),
            index=self.booster_.booster_.feature_name(),
        ).sort_values(ascending=False)
        return self

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Calibrated ``win_probability`` per row."""
        raw = self.raw_probability(frame)
        if self.calibrator_ is None:
            return pd.DataFrame({WIN_PROBABILITY: raw}, index=frame.index)
        mapped = self.calibrator_.predict_proba(_logit(raw).reshape(-1, 1))[:, 1]
        # The map is only applied inside the days-left range it was fitted on: a map fitted on
        # short horizons (few wins left) would drag longer-horizon probabilities far down.
        low, high = getattr(self, "calibrated_days_left_", (-np.inf, np.inf))
        days_left = frame[P_DAYS_LEFT].to_numpy(dtype=float)
        p = np.where((days_left >= low) & (days_left <= high), mapped, raw)
        return pd.DataFrame({WIN_PROBABILITY: p}, index=frame.index)


def _fit_platt(model: WinModel, rows: pd.DataFrame) -> LogisticRegression:
    logit = _logit(model.raw_probability(rows)).reshape(-1, 1)
    return LogisticRegression(C=1e4).fit(logit, rows[LABEL])


def _platt_map(model: WinModel, calibrate: pd.DataFrame) -> LogisticRegression | None:
    """A Platt map on ``calibrate``, kept only where it holds up later in that slice.

    The booster already starts from calibrated stage rates, and a map fitted on the later
    slice can carry that slice's base rate into the future (on the demo company: holdout log
    loss 0.404 with it, 0.384 without). So the map is fitted on the first half of the slice's
    snapshot dates and kept (refitted on the whole slice) only if it lowers the log loss of the
    second half; with too little to check (one snapshot date), it is kept.
    """
    dates = np.sort(calibrate[AS_OF].unique())
    first = calibrate[calibrate[AS_OF] < dates[len(dates) // 2]]
    second = calibrate[calibrate[AS_OF] >= dates[len(dates) // 2]]
    if len(dates) >= 2 and first[LABEL].nunique() == 2 and second[LABEL].nunique() == 2:
        trial = _fit_platt(model, first)
        raw = model.raw_probability(second)
        mapped = trial.predict_proba(_logit(raw).reshape(-1, 1))[:, 1]
        y = second[LABEL].to_numpy()
        if classification_metrics(y, mapped)["log_loss"] >= classification_metrics(y, raw)[
                "log_loss"]:
            return None
    return _fit_platt(model, calibrate)


def holdout_metrics(model: object, holdout: pd.DataFrame) -> dict[str, float]:
    """Classification metrics of ``model`` (anything with ``predict_frame``) on ``holdout``."""
    p = model.predict_frame(holdout)[WIN_PROBABILITY].to_numpy()  # type: ignore[attr-defined]
    return classification_metrics(holdout[LABEL].to_numpy(), p)
