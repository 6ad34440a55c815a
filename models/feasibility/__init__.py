"""Target feasibility: a Monte Carlo of the period's revenue for every node, and recalibration.

The revenue of a period, for every node of the hierarchy, is simulated as the sum of

1. **closed to date**: revenue dated in the period before ``as_of`` (known, no uncertainty);
2. **open pipeline**: each deal open at ``as_of`` is won *inside the period* with its calibrated
   probability (the win / slip model, :mod:`models.win`), independently per deal and draw, and
   then brings its amount. A deal expected to close after the period end is never counted (it
   is the next period's pipeline);
3. **revenue not yet in the pipeline** (the run rate): unlinked repeat orders plus deals that
   will be created and won before the period ends, estimated per rep by a backtested trailing
   rate with a lognormal error measured on the same estimator's past errors;
4. **churn**, where revenue recurs: only as a deviation from the usual churn the run rate
   already holds, so nothing is counted twice.

Pipeline wins and run rate are then checked together against what the rest of each of the
last few periods brought, seen from the same point of those periods (with what was known then):
the mean log ratio of realised to expected, shrunk, scales the run rate and the odds of every
deal's win, and its spread is the least spread the company's rest of period is given.

Finally the whole p_attain procedure is replayed at the same point of those periods and
compared with the pace rule (closed to date / share elapsed): a level where the simulation did
not beat it there reports the pace rule's p_attain, and the notes say so.

The package, one concern a module:

- ``run_rate``: the run-rate forecaster and its own backtest (:func:`estimate_run_rate`);
- ``inputs``: the tables as of a date, gathered by cell (:func:`build_inputs`), with the churn
  adjustment;
- ``backtest``: the rest of a period judged at the same point of earlier periods
  (:func:`models.feasibility.backtest.rest_scale`; the tables side is
  :func:`models.feasibility.inputs.rest_of_period_scale`);
- ``simulation``: the Monte Carlo (:func:`simulate`) and its summary: P(attain)
  (:func:`attained`), quantiles, must-hit and stretch (:func:`summarise`);
- ``period``: all of it for one period in one call (:func:`feasibility`), with historical stage
  rates when no win model is given (:func:`fit_stage_rates`), and the p_attain backtest
  (:func:`models.feasibility.period.pace_choice`);
- ``pace``: the pace rule (closed to date / share elapsed) and the choice, level by level,
  between its p_attain and the simulation's by how each did at the same point of earlier
  periods;
- ``recalibration``: revised targets that keep every parent's total (:func:`recalibrate`).
"""

from models.feasibility.inputs import CHURN_HORIZON_DAYS, build_inputs, churn_adjustment
from models.feasibility.period import (
    feasibility,
    feasibility_with_simulation,
    fit_stage_rates,
    simulate_period,
)
from models.feasibility.recalibration import RECALIBRATION_COLUMNS, Method, recalibrate
from models.feasibility.run_rate import (
    DEFAULT_COMMON_SIGMA,
    DEFAULT_REP_SIGMA,
    HALF_LIFE_GRID,
    MIN_INDEPENDENT_WINDOWS,
    RestOfPeriod,
    RunRate,
    choose_half_life,
    day_number,
    estimate_run_rate,
)
from models.feasibility.simulation import (
    EXTRA_COLUMNS,
    FEASIBILITY_COLUMNS,
    MUST_HIT_QUANTILE,
    P_ATTAIN,
    STRETCH_QUANTILE,
    TARGET,
    BlockRunner,
    CellInputs,
    Simulation,
    attained,
    interval_problems,
    local_blocks,
    simulate,
    simulate_deals,
    summarise,
)

__all__ = [
    "CHURN_HORIZON_DAYS",
    "DEFAULT_COMMON_SIGMA",
    "DEFAULT_REP_SIGMA",
    "EXTRA_COLUMNS",
    "FEASIBILITY_COLUMNS",
    "HALF_LIFE_GRID",
    "MIN_INDEPENDENT_WINDOWS",
    "MUST_HIT_QUANTILE",
    "P_ATTAIN",
    "RECALIBRATION_COLUMNS",
    "STRETCH_QUANTILE",
    "TARGET",
    "BlockRunner",
    "CellInputs",
    "Method",
    "RestOfPeriod",
    "RunRate",
    "Simulation",
    "attained",
    "build_inputs",
    "choose_half_life",
    "churn_adjustment",
    "day_number",
    "estimate_run_rate",
    "feasibility",
    "feasibility_with_simulation",
    "fit_stage_rates",
    "interval_problems",
    "local_blocks",
    "recalibrate",
    "simulate",
    "simulate_deals",
    "simulate_period",
    "summarise",
]
