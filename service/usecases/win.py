"""Win / slip wiring: tables -> deal snapshots -> labelled rows -> model -> MLflow.

The training rows for ``as_of`` are deals open at weekly past dates, each paired with the
periods that date can ask about, and with rolling windows when a young history has too few
calendar periods over (:func:`models.win.labelled_rows`); a row is kept only
when its period ended before ``as_of``, so every label was known then. The rows are split by
time, sized to the history (:func:`models.win.sized_split`): the booster learns on the oldest
(starting from the stage rates' log-odds or from nothing, whichever does better on the later
slice), stops early on a later slice (a fixed number of rounds, with a note, when the history
is too short for three slices) and the model, the historical stage-rate baseline and the
current champion are all scored on the latest slice, so the promotion gate (log loss, lower
is better) compares like with like, and a model that does not beat stage rates is never
promoted.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.io import Tables
from engine.schemas import (
    AS_OF,
    CLOSE_DATE,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    STAGE_HISTORY,
    STATUS,
    STATUS_OPEN,
    STATUS_WON,
)
from features.deals import (
    CATEGORICAL_FEATURES,
    LABEL,
    NUMERIC_FEATURES,
    ORIGINAL_CLOSE_DATE,
    PERIOD_END,
    deal_snapshot_dates,
    deal_snapshots,
)
from features.funnel import funnel_notes
from models.base import WIN
from models.classification import (
    plot_calibration,
    plot_feature_importance,
    reliability_table,
)
from models.win import (
    DAYS_LEFT_EDGES,
    FLAT_WIN_RATE,
    WIN_PROBABILITY,
    StageRateWinModel,
    TimeSplit,
    WinModel,
    holdout_metrics,
    labelled_rows,
    sized_split,
)
from service.usecases.train import (
    Progress,
    beats_baseline,
    champion_value,
    classifier_score,
    register,
    say,
    training_as_of,
)

__all__ = [
    "WinTraining",
    "fit_win_model",
    "serving_example",
    "train_win",
]

MIN_ROWS = 200


@dataclass
class WinTraining:
    """What :func:`train_win` produced.

    Attributes:
        run_id: the MLflow run.
        version: the registered version (alias ``challenger``).
        model_name: the registered model name.
        metrics: everything logged (ours unprefixed, the baseline and champion prefixed).
        comparison: holdout metrics, one row per model.
        notes: plain-word remarks (data, split, fallbacks, champion comparison).
        model: the fitted :class:`models.win.WinModel`.
        champion_value: the champion's log loss on the same holdout, if there is one.
    """

    run_id: str
    version: str
    model_name: str
    metrics: dict[str, float]
    comparison: pd.DataFrame
    notes: list[str]
    model: WinModel
    champion_value: float | None = None
    split: TimeSplit | None = field(default=None, repr=False)


def _win_as_of(tables: Tables, as_of: pd.Timestamp | str | None) -> pd.Timestamp:
    """The as-of of training; there must be opportunities to learn from."""
    opps = tables.get(OPPORTUNITIES)
    if opps is None or opps.empty:
        raise ValueError("no opportunities table: there is no pipeline to learn wins from")
    return training_as_of(tables, as_of)


def fit_win_model(rows: pd.DataFrame, seed: int = 42, split: TimeSplit | None = None
                  ) -> tuple[WinModel, TimeSplit, pd.DataFrame]:
    """Split rows by time, fit the model and the baseline, compare them on the holdout.

    Args:
        rows: labelled rows (:func:`models.win.labelled_rows`).
        seed: LightGBM's seed.
        split: their split (default :func:`models.win.sized_split`).

    Returns:
        The model, the split and the holdout metrics (rows ``win_model``, ``stage_rates``).

    Raises:
        ValueError: too few rows, or no won / not-won rows to learn from.
    """
    if len(rows) < MIN_ROWS or rows[LABEL].nunique() < 2:
        raise ValueError(f"too little closed history to train the win model: {len(rows)} "
                         f"labelled deal snapshots (at least {MIN_ROWS}, won and not won); "
                         "feasibility uses historical stage win rates until more deals close")
    split = split or sized_split(rows)[0]
    model = WinModel(seed=seed).fit(split.train, split.calibrate)
    baseline = StageRateWinModel().fit(pd.concat([split.train, split.calibrate]))
    comparison = pd.DataFrame.from_dict(
        {"win_model": holdout_metrics(model, split.holdout),
         WIN.baseline: holdout_metrics(baseline, split.holdout)}, orient="index")
    return model, split, comparison.rename_axis("model")


def _fingerprint(holdout: pd.DataFrame) -> str:
    """Names the holdout: first snapshot, size and a hash of which deals and outcomes."""
    digest = hashlib.sha1(usedforsecurity=False)
    for values in (holdout[OPPORTUNITY_ID].astype(str), holdout[AS_OF].astype(str),
                   holdout[PERIOD_END].astype(str), holdout[LABEL].astype(str)):
        digest.update("\n".join(values).encode())
    first = pd.Timestamp(holdout[AS_OF].min()).date() if len(holdout) else "none"
    return f"{first}/{len(holdout)} deal-periods/{digest.hexdigest()[:12]}"


def _probabilities(model: Any, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_frame(frame)[WIN_PROBABILITY].to_numpy(dtype=float)


def serving_example(rows: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """A few input rows as the served model receives them (features, no label or dates)."""
    columns = [c for c in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES) if c in rows.columns]
    example = rows[columns].head(n).copy()
    for column in CATEGORICAL_FEATURES:
        if column in example.columns:
            values = example[column].astype(object)
            example[column] = values.where(values.notna(), np.nan)
    return example


def _metrics(comparison: pd.DataFrame, champion: float | None) -> dict[str, float]:
    metrics = {str(k): float(v) for k, v in comparison.loc["win_model"].items()
               if np.isfinite(v)}
    metrics |= {f"{WIN.baseline}_{k}": float(v)
                for k, v in comparison.loc[WIN.baseline].items() if np.isfinite(v)}
    if champion is not None:
        metrics[f"champion_{WIN.gate_metric}"] = champion
    return metrics


def _artifacts(model: WinModel, holdout: pd.DataFrame, comparison: pd.DataFrame, tmp: Path
               ) -> dict[str, Path | pd.DataFrame | dict[str, Any]]:
    p = model.predict_frame(holdout)[WIN_PROBABILITY].to_numpy()
    reliability = reliability_table(holdout[LABEL].to_numpy(), p)
    return {
        "calibration.png": plot_calibration(reliability, tmp / "calibration.png",
                                            "Win in period: calibration on the holdout"),
        "feature_importance.png": plot_feature_importance(model.feature_importance_,
                                                          tmp / "feature_importance.png"),
        "reliability.csv": reliability,
        "comparison.csv": comparison.reset_index(),
        "conversion.json": {"days_left_edges": list(DAYS_LEFT_EDGES),
                            "conversion": [float(x) for x in model.conversion_]},
    }


def _data_notes(tables: Tables, rows: pd.DataFrame, split: TimeSplit) -> list[str]:
    notes = list(funnel_notes(tables))
    if not tables.has(STAGE_HISTORY):
        notes.append("without stage_history the model cannot see a past deal's stage: it "
                     "learns from age, amount, owner and segment win rates and period timing "
                     "only (an honest fallback, weaker than with stage history)")
    opps = tables[OPPORTUNITIES]
    history = tables.get(STAGE_HISTORY)
    recorded = history is not None and CLOSE_DATE in history.columns
    if ORIGINAL_CLOSE_DATE in opps.columns and not recorded:
        notes.append(f"expected close dates at past dates fall back to {ORIGINAL_CLOSE_DATE} "
                     "(the expectation recorded at creation)")
    notes.append(f"{len(rows):,} deal-period rows, {rows[LABEL].mean():.1%} won in period; "
                 f"{split.describe()}")
    return notes + list(split.notes)


def _check_closed(opps: pd.DataFrame, cutoff: pd.Timestamp) -> None:
    """Raise a plain ValueError when no deal was won, or none lost, before ``cutoff``."""
    closed = opps[(opps[STATUS] != STATUS_OPEN) & (opps[CLOSE_DATE] < cutoff)]
    won = int((closed[STATUS] == STATUS_WON).sum())
    if won == 0 or won == len(closed):
        raise ValueError(
            f"{len(closed):,} deals closed before {cutoff.date()} ({won:,} won): the win model "
            "needs won and lost deals to learn from; until then feasibility counts open deals "
            "at historical stage win rates (a flat "
            f"{FLAT_WIN_RATE:.0%} while nothing has closed)")


def train_win(tables: Tables, *, as_of: pd.Timestamp | str | None = None, seed: int = 42,
              progress: Progress | None = None, snapshot_days: int = 7) -> WinTraining:
    """Train the win / slip model, evaluate on a later slice, log and register a challenger.

    The stage-rate baseline's log loss on the same holdout is registered with the version: a
    model that does not beat it is registered but never promoted (:func:`engine.tracking
    .promote`), and feasibility keeps using stage rates.

    Args:
        tables: validated tables with ``opportunities``.
        as_of: training date (default: the day after the last date in the data); rows dated
            on or after it are not used and only periods that ended before it are labelled.
        seed: LightGBM's seed.
        progress: called with a short message at each stage.
        snapshot_days: days between two snapshots of the open pipeline.

    Raises:
        ValueError: no opportunities, or too little closed history.
    """
    cutoff = _win_as_of(tables, as_of)
    _check_closed(tables[OPPORTUNITIES], cutoff)
    dates = deal_snapshot_dates(tables, cutoff, every_days=snapshot_days)
    say(progress, f"reconstructing the pipeline at {len(dates)} past dates")
    snapshots = deal_snapshots(tables, dates)
    rows, split, _ = labelled_rows(snapshots, tables[OPPORTUNITIES], cutoff)
    say(progress, f"training LightGBM on {len(rows):,} deal-period rows")
    model, split, comparison = fit_win_model(rows, seed, split)
    notes = _data_notes(tables, rows, split)
    champion, _ = champion_value(WIN.name, classifier_score(
        WIN, split.holdout, split.holdout[LABEL].to_numpy(), _probabilities), notes)
    gate = comparison[WIN.gate_metric].astype(float)
    baseline_value, own_value = float(gate[WIN.baseline]), float(gate["win_model"])
    if not beats_baseline(WIN, own_value, baseline_value):
        notes.append(f"the model's {WIN.gate_metric} {own_value:.4f} does not beat stage rates' "
                     f"{baseline_value:.4f} on the holdout: it is registered but will not be "
                     "promoted, and feasibility keeps using stage rates")
    metrics = _metrics(comparison, champion)
    params = {"as_of": str(cutoff.date()), "seed": seed, "snapshot_days": snapshot_days,
              "snapshots": len(dates), "rows": len(rows), "gate_metric": WIN.gate_metric,
              "calibrate_from": str(split.calibrate_from.date()),
              "holdout_from": str(split.holdout_from.date()), "slices": split.slices,
              "rolling_windows": any("rolling windows" in n for n in split.notes),
              "features": model.numeric_ + list(model.categories_)}
    say(progress, "logging to MLflow")
    with tempfile.TemporaryDirectory() as tmp:
        run = register(
            WIN, model, input_example=serving_example(split.holdout), params=params,
            metrics=metrics, holdout=_fingerprint(split.holdout), champion_value=champion,
            artifacts=_artifacts(model, split.holdout, comparison, Path(tmp)),
            baseline=(WIN.baseline, baseline_value),
        )
    return WinTraining(run.run_id, run.version, run.model_name, run.metrics, comparison, notes,
                       model, champion, split)
