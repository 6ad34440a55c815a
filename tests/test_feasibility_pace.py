"""The pace rule, the level-by-level choice against it, the rest-of-period cache and the deals
a scenario shocks (models.feasibility.pace, period.pace_choice, inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine import schemas
from engine.history import export_at
from engine.io import Tables, load_tables
from engine.periods import default_as_of, period_bounds
from engine.schemas import (
    AMOUNT,
    COMPANY_KEY,
    CREATED_AT,
    DS,
    HIERARCHY_LEVELS,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REP,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDERS,
    TARGETS,
)
from features.deals import deal_inputs
from features.hierarchy import attribute_revenue
from models.feasibility import build_inputs, feasibility_with_simulation
from models.feasibility import inputs as feasibility_inputs
from models.feasibility.backtest import earlier_points
from models.feasibility.pace import (
    DEFAULT_PACE_SIGMA,
    PACE,
    SIMULATION,
    choose,
    elapsed,
    pace_mean,
    pace_probability,
    pace_quantiles,
    pace_sigmas,
)
from models.feasibility.period import fit_stage_rates
from models.feasibility.simulation import interval_problems
from models.win import WIN_PROBABILITY


def test_pace_probability_is_a_lognormal_around_the_pace() -> None:
    p = pace_probability(np.array([25.0, 25.0, 25.0, 0.0]),
                         np.array([100.0, 50.0, np.nan, 10.0]), 0.25, 0.3)
    assert p[0] == pytest.approx(0.5)  # on pace exactly
    assert p[1] > 0.98 and np.isnan(p[2]) and p[3] < 1e-6
    # Its distribution never falls below what is closed: a target already closed is reached,
    # however wide the spread; the range has the pace as median and closed as floor.
    assert pace_probability(np.array([95.0]), np.array([90.0]), 0.9, 2.0)[0] == 1.0
    q = pace_quantiles(np.array([25.0, 90.0]), 0.9, 0.8, [0.1, 0.5, 0.9])
    assert q[0].tolist() == [25.0, 90.0] and q[1] == pytest.approx([25 / 0.9, 100.0])
    assert pace_mean(np.array([0.0]), 0.5, 0.3)[0] < 1e-3
    assert elapsed("2017Q3", "2017-06-01") == 0.0 and elapsed("2017Q3", "2017-10-02") == 1.0
    assert elapsed("2017Q3", "2017-08-16") == pytest.approx(46 / 92)


def test_pace_sigmas_measure_log_actual_over_pace_by_level() -> None:
    # Two quarters; rep a brings 10 in the first half and 30 in the second: pace at 1/2 is 20,
    # actual 40, log ratio log 2 in both quarters. Fewer than five ratios: the default.
    days = pd.to_datetime(["2017-01-10", "2017-03-10", "2017-04-10", "2017-06-10"])
    events = pd.DataFrame({DS: days, AMOUNT: [10.0, 30.0, 10.0, 30.0], "rep": "a"})
    sigmas = pace_sigmas(events, ["2017Q1", "2017Q2"], 0.5, [LEVEL_COMPANY, LEVEL_REP])
    assert sigmas == {LEVEL_COMPANY: DEFAULT_PACE_SIGMA, LEVEL_REP: DEFAULT_PACE_SIGMA}
    many = pd.concat([events.assign(rep=str(i)) for i in range(3)], ignore_index=True)
    sigmas = pace_sigmas(many, ["2017Q1", "2017Q2"], 0.5, [LEVEL_REP])
    assert sigmas[LEVEL_REP] == pytest.approx(np.log(2.0))


def test_a_level_keeps_the_simulation_only_where_it_beats_the_pace_rule() -> None:
    cases = pd.DataFrame({
        "level": ["company", "company", "rep", "rep"],
        "p_simulation": [0.9, 0.8, 0.9, 0.1],
        "p_pace": [0.1, 0.2, 0.6, 0.5],
        "outcome": [0.0, 0.0, 1.0, 0.0]})
    choice = choose(cases, ["company", "rep", "team"], ["2017Q2", "2017Q1"])
    assert choice.method("company") == PACE and choice.method("rep") == SIMULATION
    assert choice.levels["company"].brier_simulation == pytest.approx((0.81 + 0.64) / 2)
    assert choice.method("team") == SIMULATION and choice.levels["team"].cases == 0
    assert "2017Q2, 2017Q1" in choice.note and "Not judged (no target then): team" in choice.note
    assert "p_attain is the pace rule's" in choice.note
    nothing = choose(pd.DataFrame(), ["company"], [])
    assert nothing.method("company") == SIMULATION and "not checked" in nothing.note


def test_a_level_whose_earlier_targets_were_all_hit_answers_with_the_pace_rule() -> None:
    """Seeded: every earlier target was hit and the simulation was surer of it than the pace
    rule (lower Brier), yet the check never saw a miss, so the simpler pace rule answers; one
    missed target among the same cases and the Brier decides again."""
    rng = np.random.default_rng(13)
    n = 30
    cases = pd.DataFrame({"level": "rep", "p_simulation": rng.uniform(0.85, 1.0, n),
                          "p_pace": rng.uniform(0.4, 0.9, n), "outcome": 1.0})
    choice = choose(cases, ["rep"], ["2017Q2"])
    score = choice.levels["rep"]
    assert score.brier_simulation < score.brier_pace and score.missed == 0
    assert choice.method("rep") == PACE
    assert "Every earlier target was hit at rep" in choice.note
    assert "30 targets, 0 missed" in choice.note
    one_miss = cases.assign(outcome=np.r_[0.0, np.ones(n - 1)])
    choice = choose(one_miss, ["rep"], ["2017Q2"])
    assert choice.levels["rep"].missed == 1
    assert choice.levels["rep"].brier_simulation < choice.levels["rep"].brier_pace
    assert choice.method("rep") == SIMULATION and "Every earlier target" not in choice.note


# --- crm-sales, targets = each node's revenue of the prior quarter ----------------------------


def _prior_quarter_targets(tables: Tables) -> Tables:
    events = attribute_revenue(tables, columns=[])
    quarter = events[DS].dt.to_period("Q")
    frames = []
    for level in HIERARCHY_LEVELS:
        keys = (pd.Series(COMPANY_KEY, index=events.index) if level == LEVEL_COMPANY
                else events[level].astype(object))
        sums = events[AMOUNT].groupby([quarter, keys]).sum().rename_axis(["q", KEY])
        frames.append(sums.reset_index(name=AMOUNT).assign(**{LEVEL: level}))
    targets = pd.concat(frames, ignore_index=True)
    targets[schemas.PERIOD] = (targets["q"] + 1).astype(str)
    targets = targets[targets[AMOUNT] > 0].drop(columns="q").reset_index(drop=True)
    return Tables(dict(tables.frames) | {TARGETS: targets}, tables.source, tables.derived)


@pytest.mark.shared_data
def test_a_shrinking_crm_falls_back_to_the_pace_rule_where_it_did_better(real_data) -> None:
    """crm-sales at twelve months, each node's target its prior-quarter revenue: revenue fell
    in 2017Q3, and replayed at the same point of 2017Q3 and 2017Q2 the simulation did worse
    than the pace rule at the company level: there p_attain is the pace rule's."""
    tables = _prior_quarter_targets(load_tables(str(real_data("crm-sales", 12))))
    as_of = default_as_of(tables)
    period = "2017Q4"
    assert period_bounds(period)[0] < as_of < period_bounds(period)[1]
    model, _ = fit_stage_rates(tables, as_of)
    frame, simulation = feasibility_with_simulation(tables, period, as_of, draws=1000,
                                                    win_model=model)
    note = next(n for n in frame.attrs["notes"] if n.startswith("p_attain:"))
    assert "2017Q3, 2017Q2" in note and "company: pace rule" in note
    company = frame[frame[LEVEL] == LEVEL_COMPANY].iloc[0]
    draws = simulation.draws[:, simulation.node_index(LEVEL_COMPANY, COMPANY_KEY)]
    # Not the simulation's share of draws: the pace rule's probability.
    assert company["p_attain"] != pytest.approx(float((draws >= company["target"]).mean()),
                                                abs=1e-3)
    assert company["p_attain"] < 0.5  # 2017Q4 fell short of 2017Q3 (2.80M vs 2.98M)
    # The simulation says which levels are paced, so a what-if on another target agrees.
    fraction, sigma = simulation.paced[LEVEL_COMPANY]
    assert fraction == pytest.approx(elapsed(period, as_of))
    assert pace_probability(np.array([company["closed_to_date"]]), np.array([company["target"]]),
                            fraction, sigma)[0] == pytest.approx(company["p_attain"])
    assert LEVEL_REP not in simulation.paced
    # Without the check, the simulation's own share.
    plain, _ = feasibility_with_simulation(tables, period, as_of, draws=1000, win_model=model,
                                           pace_check=False)
    assert plain.loc[0, "p_attain"] == pytest.approx(float((draws >= company["target"]).mean()))
    assert not any(n.startswith("p_attain:") for n in plain.attrs["notes"])


@pytest.mark.shared_data
def test_a_crm_whose_only_checked_quarter_was_all_hit_answers_with_the_pace_rule(real_data
                                                                                 ) -> None:
    """crm-sales at nine months, targets the prior quarter's revenue: the only earlier quarter
    with targets (2017Q2, targets a third of what came) saw every target hit, so no level keeps
    the unproven simulation; each answers with the pace rule, the lower (safer) P(attain) here,
    and 2017Q3 was indeed missed at the company (2.98M against a 3.09M target)."""
    tables = _prior_quarter_targets(load_tables(str(real_data("crm-sales", 9))))
    as_of = default_as_of(tables)
    period = "2017Q3"
    assert period_bounds(period)[0] < as_of < period_bounds(period)[1]
    model, _ = fit_stage_rates(tables, as_of)
    frame, simulation = feasibility_with_simulation(tables, period, as_of, draws=1000,
                                                    win_model=model)
    note = next(n for n in frame.attrs["notes"] if n.startswith("p_attain:"))
    assert "same point of 2017Q2, " in note and "0 missed" in note
    assert "Every earlier target was hit at company, region, team, rep" in note
    assert set(simulation.paced) == set(frame[LEVEL])
    plain, _ = feasibility_with_simulation(tables, period, as_of, draws=1000, win_model=model,
                                           pace_check=False)
    company = frame[frame[LEVEL] == LEVEL_COMPANY].iloc[0]
    fraction, sigma = simulation.paced[LEVEL_COMPANY]
    assert company["p_attain"] == pytest.approx(pace_probability(
        np.array([company["closed_to_date"]]), np.array([company["target"]]), fraction,
        sigma)[0])
    assert company["p_attain"] < 0.5 < plain.loc[0, "p_attain"]


@pytest.mark.shared_data
def test_a_paced_level_answers_with_the_pace_rules_range(real_data) -> None:
    """Same crm-sales setup: where p_attain is the pace rule's, P10/P50/P90, expected,
    must-hit and stretch come from the same distribution, so P50 reaches the target exactly
    when p_attain is at least one half (the simulation said P50 3.39M for a 2.98M target with
    p_attain 0.09); the other levels keep the simulation's."""
    tables = _prior_quarter_targets(load_tables(str(real_data("crm-sales", 12))))
    as_of = default_as_of(tables)
    model, _ = fit_stage_rates(tables, as_of)
    frame, simulation = feasibility_with_simulation(tables, "2017Q4", as_of, draws=1000,
                                                    win_model=model)
    note = next(n for n in frame.attrs["notes"] if n.startswith("p_attain:"))
    assert "so is the range" in note
    paced = frame[frame[LEVEL].isin(list(simulation.paced))]
    assert LEVEL_COMPANY in set(paced[LEVEL]) and len(paced)
    for row in paced.itertuples():
        assert (row.p50 >= row.target) == (row.p_attain >= 0.5), row
        assert row.closed_to_date <= row.p10 <= row.p50 <= row.stretch <= row.p90
        assert row.must_hit == row.p10 and row.gap == pytest.approx(row.target - row.expected)
        fraction, sigma = simulation.paced[row.level]
        assert row.expected == pytest.approx(
            pace_mean(np.array([row.closed_to_date]), fraction, sigma)[0])
        # What the what-if reads from simulation.paced gives the same range.
        q = pace_quantiles(np.array([row.closed_to_date]), fraction, sigma, [0.1, 0.5, 0.7, 0.9])
        assert q[:, 0] == pytest.approx([row.p10, row.p50, row.stretch, row.p90])
    assert interval_problems(paced) == []
    company = paced[paced[LEVEL] == LEVEL_COMPANY].iloc[0]
    draws = simulation.draws[:, simulation.node_index(LEVEL_COMPANY, COMPANY_KEY)]
    assert company["p50"] < company["target"] and company["p_attain"] < 0.5
    assert company["p50"] != pytest.approx(float(np.quantile(draws, 0.5)), rel=1e-3)
    rep = frame[frame[LEVEL] == LEVEL_REP].iloc[0]
    rep_draws = simulation.draws[:, simulation.node_index(LEVEL_REP, rep[KEY])]
    assert rep["p50"] == pytest.approx(float(np.quantile(rep_draws, 0.5)))


@pytest.mark.shared_data
def test_the_choice_reads_only_rows_dated_before_as_of(real_data) -> None:
    full = load_tables(str(real_data("crm-sales")))
    as_of, cut = pd.Timestamp("2017-08-10"), pd.Timestamp("2017-08-20")
    base = _prior_quarter_targets(export_at(full, cut))
    frames = dict(base.frames)
    for name, column in ((ORDERS, ORDER_DATE), (OPPORTUNITIES, CREATED_AT)):
        later = full.frames[name].loc[full.frames[name][column] >= cut]
        assert len(later) > 100
        frames[name] = pd.concat([base.frames[name], later], ignore_index=True)
    appended = Tables(frames, base.source, base.derived)
    model, _ = fit_stage_rates(base, as_of)
    runs = [feasibility_with_simulation(t, "2017Q3", as_of, draws=500, win_model=model)[0]
            for t in (base, appended)]
    assert any(n.startswith("p_attain: replayed") for n in runs[0].attrs["notes"])
    pd.testing.assert_frame_equal(runs[0], runs[1])


# --- the rest-of-period cache and the deals a scenario shocks ----------------------------------


class CountingWin:
    """A win model stub (0.3 for every deal) that counts the deals it was asked about."""

    def __init__(self) -> None:
        self.asked: list[pd.DataFrame] = []

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.asked.append(frame)
        return pd.DataFrame({WIN_PROBABILITY: np.full(len(frame), 0.3)}, index=frame.index)


@pytest.mark.shared_data
def test_earlier_points_are_replayed_once_per_tables_and_model(real_data) -> None:
    tables = load_tables(str(real_data("crm-sales", 12)))
    as_of = default_as_of(tables)
    model = CountingWin()
    first = feasibility_inputs.rest_of_period_scale(tables, "2017Q4", as_of, model)
    asked = len(model.asked)
    assert asked >= 2 and first.periods
    # The same points again: nothing is asked again.
    again = feasibility_inputs.rest_of_period_scale(tables, "2017Q4", as_of, model)
    assert again == first and len(model.asked) == asked
    # Another model, or another tables object, replays them.
    other = CountingWin()
    feasibility_inputs.rest_of_period_scale(tables, "2017Q4", as_of, other)
    assert len(other.asked) == asked
    copy = Tables(dict(tables.frames), tables.source, tables.derived)
    feasibility_inputs.rest_of_period_scale(copy, "2017Q4", as_of, model)
    assert len(model.asked) == 2 * asked
    assert len(earlier_points("2017Q4", as_of)) == 4


@pytest.mark.shared_data
def test_the_inputs_keep_the_open_deals_the_simulation_uses(real_data) -> None:
    """Whatever the win model was asked before (the earlier periods of the rest-of-period
    check), the inputs carry the deals open at as_of, row for row with their probabilities."""
    tables = load_tables(str(real_data("crm-sales", 12)))
    as_of = default_as_of(tables)
    model = CountingWin()
    inputs = build_inputs(tables, "2017Q4", as_of, model)
    assert len(model.asked) > 1  # earlier points were asked about too
    assert inputs.deal_frame is not None and len(inputs.deal_frame) == len(inputs.deal_p) > 0
    open_now = deal_inputs(tables, as_of)[OPPORTUNITY_ID]
    assert list(inputs.deal_frame[OPPORTUNITY_ID]) == list(open_now)
