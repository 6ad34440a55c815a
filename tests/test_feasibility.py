"""Target feasibility: simulation, coherence, point in time, recalibration (models.feasibility)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import schemas, tracking
from engine.history import export_at
from engine.io import Tables, load_tables, validate_tables
from engine.periods import default_as_of, period_of
from engine.schemas import (
    ACCOUNT_MANAGER,
    AMOUNT,
    CLOSE_DATE,
    COMPANY_KEY,
    CREATED_AT,
    CUSTOMER_ID,
    CUSTOMERS,
    DS,
    ENTERED_AT,
    KEY,
    LEVEL,
    LEVEL_COMPANY,
    LEVEL_REGION,
    LEVEL_REP,
    LEVEL_TEAM,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDER_ID,
    ORDERS,
    ORG,
    OWNER,
    PRODUCT,
    REGION,
    REP,
    STAGE,
    STAGE_HISTORY,
    STATUS,
    STATUS_LOST,
    STATUS_OPEN,
    STATUS_WON,
    TARGETS,
    TEAM,
)
from features.deals import LABEL, PERIOD_END
from models.feasibility import (
    DEFAULT_COMMON_SIGMA,
    DEFAULT_REP_SIGMA,
    FEASIBILITY_COLUMNS,
    HALF_LIFE_GRID,
    MIN_INDEPENDENT_WINDOWS,
    RECALIBRATION_COLUMNS,
    RestOfPeriod,
    Simulation,
    build_inputs,
    choose_half_life,
    churn_adjustment,
    day_number,
    estimate_run_rate,
    feasibility,
    feasibility_with_simulation,
    interval_problems,
    recalibrate,
    simulate,
    simulate_deals,
)
from models.feasibility.backtest import MAX_SCALE, earlier_points, rest_scale
from models.feasibility.inputs import _pipeline_matured, rest_of_period_scale
from models.feasibility.run_rate import _error_model
from models.feasibility.simulation import scaled_odds
from models.win import WIN_PROBABILITY, period_spread
from service.usecases.feasibility import run_feasibility, run_recalibration

PERIOD = "2024Q3"
AS_OF = pd.Timestamp("2024-08-15")
REPS = {"r1": ("A", "North"), "r2": ("A", "North"), "r3": ("B", "South"), "r4": ("B", "South")}
BIG_LATE_DEAL = "D-late"


class FixedWin:
    """A win model stub: a fixed probability per deal (0.5 for any other)."""

    def __init__(self, p: dict[str, float] | None = None):
        self.p = p or {}

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        p = frame[OPPORTUNITY_ID].map(self.p).fillna(0.5).to_numpy(dtype=float)
        return pd.DataFrame({WIN_PROBABILITY: p}, index=frame.index)

    def conversion_at(self, days_left: float) -> float:
        return 0.25


def _orders(rng: np.random.Generator, until: pd.Timestamp) -> pd.DataFrame:
    """Weekly orders of two customers per rep for two years, amounts by rep size."""
    rows = []
    for i in range(len(REPS)):
        for c in range(2):
            days = pd.date_range("2022-09-05", until - pd.Timedelta(days=1), freq="7D")
            amounts = (100.0 * (i + 1)) * rng.lognormal(0, 0.3, len(days))
            rows.append(pd.DataFrame({CUSTOMER_ID: f"c{i}{c}", ORDER_DATE: days,
                                      AMOUNT: amounts.round(2)}))
    orders = pd.concat(rows, ignore_index=True)
    return orders.assign(**{ORDER_ID: [f"o{i}" for i in range(len(orders))]})


def _deal(did: str, owner: str, created: str, close: str, status: str, amount: float
          ) -> dict[str, object]:
    return {OPPORTUNITY_ID: did, OWNER: owner, CREATED_AT: created, CLOSE_DATE: close,
            STAGE: "closed" if status != STATUS_OPEN else "proposal", STATUS: status,
            AMOUNT: amount}


def _deals() -> pd.DataFrame:
    rows = [
        _deal("D1", "r1", "2024-06-01", "2024-07-20", STATUS_WON, 5000.0),  # closed in period
        _deal("D2", "r3", "2024-05-01", "2024-06-15", STATUS_LOST, 3000.0),
        _deal("D3", "r1", "2024-07-01", "2024-09-10", STATUS_OPEN, 8000.0),
        _deal("D4", "r2", "2024-07-10", "2024-09-20", STATUS_OPEN, 6000.0),
        _deal("D5", "r3", "2024-06-20", "2024-08-30", STATUS_OPEN, 4000.0),
        _deal("D6", "r4", "2024-08-01", "2024-09-25", STATUS_OPEN, 9000.0),
        _deal(BIG_LATE_DEAL, "r4", "2024-07-01", "2024-11-15", STATUS_OPEN, 1e6),
    ]
    return pd.DataFrame(rows)


def _history(deals: pd.DataFrame) -> pd.DataFrame:
    """One stage change at creation (with the expected close recorded then), and the close."""
    opened = deals.assign(**{STAGE: "proposal", ENTERED_AT: deals[CREATED_AT]})
    closed = deals[deals[STATUS] != STATUS_OPEN]
    closed = closed.assign(**{ENTERED_AT: closed[CLOSE_DATE], STAGE: "closed"})
    both = pd.concat([opened, closed], ignore_index=True)
    return both[[OPPORTUNITY_ID, STAGE, ENTERED_AT, CLOSE_DATE]]


def _targets() -> pd.DataFrame:
    rows = [(LEVEL_REP, r, 14_000.0 * (i + 1)) for i, r in enumerate(REPS)]
    rows += [(LEVEL_TEAM, "A", 42_000.0), (LEVEL_TEAM, "B", 98_000.0),
             (LEVEL_REGION, "North", 42_000.0), (LEVEL_REGION, "South", 98_000.0),
             (LEVEL_COMPANY, COMPANY_KEY, 140_000.0)]
    return pd.DataFrame(rows, columns=[LEVEL, KEY, AMOUNT]).assign(**{schemas.PERIOD: PERIOD})


def _frames(until: pd.Timestamp = AS_OF) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    orders = _orders(rng, until)
    deals = _deals()
    won = deals[deals[STATUS] == STATUS_WON]
    orders = pd.concat([orders, pd.DataFrame({
        ORDER_ID: "o-" + won[OPPORTUNITY_ID], CUSTOMER_ID: "c00",
        ORDER_DATE: won[CLOSE_DATE], AMOUNT: won[AMOUNT],
        OPPORTUNITY_ID: won[OPPORTUNITY_ID]})], ignore_index=True)
    customers = pd.DataFrame({CUSTOMER_ID: [f"c{i}{c}" for i in range(4) for c in range(2)]})
    customers[ACCOUNT_MANAGER] = [f"r{int(c[1]) + 1}" for c in customers[CUSTOMER_ID]]
    org = pd.DataFrame([(r, t, g) for r, (t, g) in REPS.items()],
                       columns=[REP, TEAM, REGION])
    return {ORDERS: orders.astype({ORDER_DATE: str}), CUSTOMERS: customers,
            OPPORTUNITIES: deals, STAGE_HISTORY: _history(deals), ORG: org,
            TARGETS: _targets()}


def _tables(frames: dict[str, pd.DataFrame]) -> Tables:
    tables, problems = validate_tables(frames)
    assert not problems, problems
    return tables


@pytest.fixture(scope="module")
def tables() -> Tables:
    return _tables(_frames())


def _run(tables: Tables, as_of: pd.Timestamp = AS_OF, seed: int = 1, draws: int = 4000,
         model: FixedWin | None = None) -> tuple[pd.DataFrame, Simulation]:
    return feasibility_with_simulation(tables, PERIOD, as_of, draws=draws, seed=seed,
                                          win_model=model or FixedWin())


def test_output_columns_and_ranges(tables: Tables) -> None:
    frame, _ = _run(tables)
    assert list(frame.columns[: len(FEASIBILITY_COLUMNS)]) == list(FEASIBILITY_COLUMNS)
    assert len(frame) == 9  # every node with a target
    assert frame["p_attain"].between(0, 1).all()
    assert (frame["p10"] <= frame["p50"]).all() and (frame["p50"] <= frame["p90"]).all()
    assert (frame["must_hit"] == frame["p10"]).all() and (frame["stretch"] >= frame["p50"]).all()
    np.testing.assert_allclose(frame["gap"], frame["target"] - frame["expected"])
    assert (frame["expected"] > frame["closed_to_date"]).all()


def test_parent_draws_are_the_sum_of_children_draws(tables: Tables) -> None:
    frame, sim = _run(tables)
    nodes = sim.nodes
    for parent in range(len(nodes)):
        children = np.flatnonzero((nodes["parent"] == parent).to_numpy()
                                  & (nodes[LEVEL] != nodes[LEVEL].iloc[parent]).to_numpy())
        if children.size == 0:
            continue
        np.testing.assert_allclose(sim.draws[:, children].sum(axis=1), sim.draws[:, parent],
                                   rtol=1e-12)
    by = frame.set_index([LEVEL, KEY])
    company = by.loc[(LEVEL_COMPANY, COMPANY_KEY)]
    regions = by.loc[LEVEL_REGION]
    # Targets add up here, so the company's expected equals the regions' exactly.
    assert company["expected"] == pytest.approx(regions["expected"].sum(), rel=1e-12)
    assert company["closed_to_date"] == pytest.approx(regions["closed_to_date"].sum(), rel=1e-12)
    # Quantiles are not additive: the company's p10 is more than the sum of the regions' p10.
    assert company["p10"] > regions["p10"].sum()


def test_a_period_that_is_over_gives_the_actual(tables: Tables) -> None:
    frames = _frames(until=pd.Timestamp("2024-10-05"))
    late = _tables(frames)
    frame, _ = _run(late, as_of=pd.Timestamp("2024-10-05"))
    orders = late.orders
    in_q3 = orders[(orders[ORDER_DATE] >= "2024-07-01") & (orders[ORDER_DATE] < "2024-10-01")]
    company = frame[frame[LEVEL] == LEVEL_COMPANY].iloc[0]
    assert company["closed_to_date"] == pytest.approx(in_q3[AMOUNT].sum())
    for column in ("expected", "p10", "p50", "p90", "must_hit", "stretch"):
        np.testing.assert_allclose(frame[column], frame["closed_to_date"])
    assert set(frame["p_attain"]) <= {0.0, 1.0}
    assert (frame["p_attain"] == (frame["closed_to_date"] >= frame["target"])).all()


def test_before_the_period_it_is_a_plan_check(tables: Tables) -> None:
    frame, _ = _run(tables, as_of=pd.Timestamp("2024-06-10"))
    assert (frame["closed_to_date"] == 0).all()
    assert (frame["expected_run_rate"] > 0).all() and (frame["expected"] > 0).all()


def test_a_deal_expected_after_the_period_is_never_counted(tables: Tables) -> None:
    certain = FixedWin({BIG_LATE_DEAL: 1.0})
    frame, sim = _run(tables, model=certain)
    without = Tables({**tables.frames, OPPORTUNITIES: tables[OPPORTUNITIES][
        tables[OPPORTUNITIES][OPPORTUNITY_ID] != BIG_LATE_DEAL]})
    _, sim_without = _run(without, model=certain)
    np.testing.assert_array_equal(sim.draws, sim_without.draws)
    assert frame["p90"].max() < 1e6  # the million-dollar deal never shows up


def test_same_seed_same_numbers_other_seed_other_numbers(tables: Tables) -> None:
    a, _ = _run(tables, seed=3)
    b, _ = _run(tables, seed=3)
    c, _ = _run(tables, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["p50"], c["p50"])


def test_rows_dated_after_as_of_change_nothing(tables: Tables) -> None:
    frames = _frames()
    after = AS_OF + pd.Timedelta(days=3)
    frames[ORDERS] = pd.concat([frames[ORDERS], pd.DataFrame({
        ORDER_ID: ["late1", "late2"], CUSTOMER_ID: ["c00", "c31"],
        ORDER_DATE: [str(after.date())] * 2, AMOUNT: [1e5, 2e5]})], ignore_index=True)
    new_deal = pd.DataFrame([_deal("D-new", "r2", str(after.date()), "2024-09-01",
                                   STATUS_WON, 7e4)])
    frames[OPPORTUNITIES] = pd.concat([frames[OPPORTUNITIES], new_deal], ignore_index=True)
    frames[STAGE_HISTORY] = pd.concat([frames[STAGE_HISTORY], pd.DataFrame({
        OPPORTUNITY_ID: ["D3", "D-new"], STAGE: ["negotiation", "proposal"],
        ENTERED_AT: [after, after], CLOSE_DATE: ["2024-12-01", "2024-09-01"]})],
        ignore_index=True)
    a, _ = _run(tables)
    b, _ = _run(_tables(frames))
    pd.testing.assert_frame_equal(a, b)


def test_recalibration_keeps_parent_totals_and_evens_probabilities(tables: Tables) -> None:
    frame, sim = _run(tables)
    out = recalibrate(frame, sim, method="even_probability")
    assert list(out.columns) == list(RECALIBRATION_COLUMNS)
    by = out.set_index([LEVEL, KEY])["recalibrated_target"]
    assert by[(LEVEL_COMPANY, COMPANY_KEY)] == 140_000.0
    assert by[LEVEL_REGION].sum() == pytest.approx(140_000.0, rel=1e-12)
    assert by[(LEVEL_TEAM, "A")] == pytest.approx(by[(LEVEL_REGION, "North")], rel=1e-12)
    assert by[("rep", "r3")] + by[("rep", "r4")] == pytest.approx(by[(LEVEL_TEAM, "B")],
                                                                  rel=1e-12)
    reps = out[out[LEVEL] == LEVEL_REP].set_index(KEY)
    for pair in (["r1", "r2"], ["r3", "r4"]):
        after = reps.loc[pair, "p_attain_after"]
        assert after.max() - after.min() <= 0.02
    before = reps["p_attain_before"]
    assert before.max() - before.min() > 0.2  # there was something to even out
    # Closed revenue stays credited: no rep is asked for less than it already has.
    closed = frame.set_index([LEVEL, KEY])["closed_to_date"]
    assert (by.loc[LEVEL_REP] >= closed.loc[LEVEL_REP]).all()


def test_proportional_recalibration_keeps_totals(tables: Tables) -> None:
    frame, sim = _run(tables)
    out = recalibrate(frame, sim, method="proportional_p50").set_index([LEVEL, KEY])
    revised = out["recalibrated_target"]
    assert revised.loc[LEVEL_REGION].sum() == pytest.approx(140_000.0, rel=1e-12)
    assert revised.loc[[("rep", "r1"), ("rep", "r2")]].sum() == pytest.approx(
        revised[(LEVEL_TEAM, "A")], rel=1e-12)
    with pytest.raises(ValueError, match="unknown method"):
        recalibrate(frame, sim, method="nonsense")  # type: ignore[arg-type]


def test_simulate_deals_mean_and_thread_invariance() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    p, amount = rng.random(n), rng.lognormal(8, 1, n)
    cell = rng.integers(0, 7, n)
    one = simulate_deals(p, amount, cell, 8, 2000, seed=5, threads=1, chunk_elements=50_000)
    two = simulate_deals(p, amount, cell, 8, 2000, seed=5, threads=2, chunk_elements=50_000)
    np.testing.assert_array_equal(one, two)
    expected = np.bincount(cell, p * amount, 8)
    sd = np.sqrt(np.bincount(cell, p * (1 - p) * amount**2, 8))
    assert np.all(np.abs(one.mean(axis=0) - expected) < 5 * sd / np.sqrt(2000) + 1e-9)
    assert (one[:, 7] == 0).all()  # an empty cell stays empty
    certain = simulate_deals(np.array([1.0, 0.0]), np.array([3.0, 5.0]), np.array([0, 0]),
                                1, 10, seed=1)
    assert (certain == 3.0).all()


def test_run_rate_of_a_steady_stream() -> None:
    days = pd.date_range("2022-01-03", "2024-06-30", freq="D")
    events = pd.DataFrame({DS: days, AMOUNT: 10.0,
                           CREATED_AT: pd.Series(pd.NaT, index=range(len(days)),
                                                   dtype="datetime64[ns]")})
    as_of = pd.Timestamp("2024-07-01")
    window = RestOfPeriod(day_number(as_of), day_number("2024-07-01"), day_number("2024-10-01"))
    rate = estimate_run_rate(events, np.zeros(len(days), dtype=np.int64), 1, window,
                                day_number(days[0]))
    assert rate.mean[0] == pytest.approx(920.0, rel=0.01)  # 92 days x 10
    assert rate.backtests >= 4 and rate.expected()[0] == pytest.approx(920.0, rel=0.05)


def test_churn_adjustment_moves_revenue_between_customers_only() -> None:
    scores = pd.DataFrame({CUSTOMER_ID: ["a", "b", "c"], "churn_probability": [0.9, 0.1, 0.1]})
    revenue = pd.Series([1000.0, 1000.0, 2000.0], index=["a", "b", "c"])
    adjust = churn_adjustment(scores, revenue, window_days=60, horizon_days=90)
    assert adjust.sum() == pytest.approx(0.0, abs=1e-9)
    assert adjust["a"] < 0 < adjust["b"]


def test_extra_levels_are_coherent_with_the_company(tables: Tables) -> None:
    frames = dict(tables.frames)
    orders = frames[ORDERS].copy()
    orders[PRODUCT] = np.where(np.arange(len(orders)) % 3 == 0, "gadget", "widget")
    product_targets = pd.DataFrame({schemas.PERIOD: PERIOD, LEVEL: PRODUCT,
                                    KEY: ["gadget", "widget"], AMOUNT: [50_000.0, 90_000.0]})
    frames[ORDERS] = orders
    frames[TARGETS] = pd.concat([frames[TARGETS], product_targets], ignore_index=True)
    frame, sim = _run(Tables(frames))
    products = np.flatnonzero((sim.nodes[LEVEL] == PRODUCT).to_numpy())
    company = sim.node_index(LEVEL_COMPANY, COMPANY_KEY)
    # Deals without a product land in "unassigned"; all product nodes add up to the company.
    np.testing.assert_allclose(sim.draws[:, products].sum(axis=1), sim.draws[:, company],
                               rtol=1e-12)
    assert set(frame.loc[frame[LEVEL] == PRODUCT, KEY]) == {"gadget", "widget"}
    out = recalibrate(frame, sim).set_index([LEVEL, KEY])["recalibrated_target"]
    assert out.loc[PRODUCT].sum() == pytest.approx(140_000.0, rel=1e-12)


def test_pipeline_falls_back_without_champions(tables: Tables, tmp_path: Path) -> None:
    import mlflow

    previous = mlflow.get_tracking_uri()
    tracking.configure(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        result = run_feasibility(tables, PERIOD, AS_OF, draws=500)
    finally:
        tracking.configure(previous)
    text = " ".join(result.notes)
    assert "no champion registered" in text and "churn adjustment skipped" in text
    assert len(result.frame) == 9 and result.frame["p_attain"].between(0, 1).all()


def _weekly_sums(level: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """One rep's run-rate sums over ``len(level)`` windows, oldest last (as _window_sums)."""
    rng = np.random.default_rng(seed)
    return (level * rng.lognormal(0, noise, len(level)))[None, :]


def test_half_life_follows_a_step_and_smooths_a_steady_book() -> None:
    weeks, lag = 110, 4
    stepped = np.where(np.arange(weeks) < 20, 2000.0, 1000.0)  # doubled 20 weeks ago
    steady = np.full(weeks, 1000.0)
    active = np.array([True])
    fast = choose_half_life(_weekly_sums(stepped, 0.02, 1), lag, weeks, 100.0, active)
    slow = choose_half_life(_weekly_sums(steady, 0.30, 2), lag, weeks, 100.0, active)
    assert fast == min(HALF_LIFE_GRID)
    assert slow >= 13.0


def test_a_lasting_drift_shifts_the_run_rate_and_noise_does_not() -> None:
    """The company's backtested mean error is kept only when it stands out from its noise."""
    weeks, lag = 110, 4
    # Revenue falling 1% a week: the trailing mean keeps over-predicting (a lasting bias).
    falling = 1000.0 * 0.99 ** -np.arange(weeks)[None, :]
    active = np.array([True])
    drift = _error_model(falling, lag, weeks, 10.0, [], active, 26.0)
    assert drift.bias_common < -0.02
    noisy = _weekly_sums(np.full(weeks, 1000.0), 0.3, 3)
    flat = _error_model(noisy, lag, weeks, 10.0, [], active, 26.0)
    assert abs(flat.bias_common) < abs(drift.bias_common) / 2


def test_run_rate_windows_wait_for_the_pipeline_to_mature() -> None:
    """An export that starts with its first deal: early wins would all look like run rate."""
    deals = pd.DataFrame({
        OPPORTUNITY_ID: ["a", "b", "c"], CREATED_AT: pd.to_datetime(
            ["2024-01-01", "2024-02-01", "2024-03-01"]),
        CLOSE_DATE: pd.to_datetime(["2024-03-01", "2024-03-01", "2024-03-31"]),
        STATUS: [STATUS_WON, STATUS_WON, STATUS_LOST]})
    tables = Tables({OPPORTUNITIES: deals})
    matured = _pipeline_matured(tables, pd.Timestamp("2024-06-01"))
    cycle = np.quantile([60, 29], 0.9)  # created-to-won days of the two wins
    assert matured == day_number("2024-01-01") + int(cycle)
    before_any_win = _pipeline_matured(tables, pd.Timestamp("2024-02-15"))
    assert before_any_win == day_number("2024-01-01")


def test_period_spread_measures_shared_fortunes_only() -> None:
    rng = np.random.default_rng(0)
    groups, deals = 80, 200
    p = rng.uniform(0.1, 0.5, (groups, deals))
    amount = rng.lognormal(8, 0.5, (groups, deals))
    dates = np.repeat(pd.date_range("2024-01-01", periods=groups, freq="7D"), deals)

    def rows(won: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({schemas.AS_OF: dates, PERIOD_END: pd.Timestamp("2030-01-01"),
                             AMOUNT: amount.ravel(), LABEL: won.ravel().astype(int)})

    independent = rng.random((groups, deals)) < p
    assert period_spread(rows(independent), p.ravel()) < 0.1  # the estimate's noise floor
    # A period-wide factor on the odds: good quarters win more of everything.
    shift = rng.normal(0, 0.5, (groups, 1))
    odds = p / (1 - p) * np.exp(shift)
    shared = rng.random((groups, deals)) < odds / (1 + odds)
    assert 0.2 < period_spread(rows(shared), p.ravel()) < 0.6


def test_pipeline_factor_widens_the_company_keeps_mean_and_coherence(tables: Tables) -> None:
    inputs = build_inputs(tables, PERIOD, AS_OF, FixedWin())
    plain = simulate(inputs, draws=20_000, seed=4)
    inputs.pipeline_sigma = 0.4
    shared = simulate(inputs, draws=20_000, seed=4)
    company = plain.node_index(LEVEL_COMPANY, COMPANY_KEY)
    reps = np.flatnonzero((plain.nodes[LEVEL] == LEVEL_REP).to_numpy())
    assert shared.draws[:, company].std() > plain.draws[:, company].std()
    assert shared.draws[:, company].mean() == pytest.approx(plain.draws[:, company].mean(),
                                                            rel=0.01)
    np.testing.assert_allclose(shared.draws[:, reps].sum(axis=1), shared.draws[:, company],
                               rtol=1e-12)


def _stream(rep_amounts: dict[int, float], start: str, end: str) -> tuple[pd.DataFrame,
                                                                          np.ndarray]:
    """Daily unlinked revenue of each rep (rep index -> amount a day), with small noise."""
    rng = np.random.default_rng(11)
    days = pd.date_range(start, end, freq="D")
    frames, codes = [], []
    for rep, amount in rep_amounts.items():
        frames.append(pd.DataFrame({DS: days, AMOUNT: amount * rng.lognormal(
            0, 0.3, len(days))}))
        codes.append(np.full(len(days), rep, dtype=np.int64))
    events = pd.concat(frames, ignore_index=True)
    events[CREATED_AT] = pd.Series(pd.NaT, index=events.index, dtype="datetime64[ns]")
    return events, np.concatenate(codes)


def _quarter(as_of: str = "2024-07-01") -> RestOfPeriod:
    return RestOfPeriod(day_number(as_of), day_number("2024-07-01"), day_number("2024-10-01"))


def test_a_small_book_beside_big_ones_never_goes_negative() -> None:
    """One shift for all reps, from the median rep, once gave a tiny book P50 -10, P10 -228."""
    events, reps = _stream({0: 1000.0, 1: 800.0, 2: 1200.0, 3: 0.5}, "2022-01-03", "2024-06-30")
    rate = estimate_run_rate(events, reps, 4, _quarter(), day_number("2022-01-03"))
    draws = rate.draw(20_000, np.random.default_rng(0))
    assert (draws >= 0).all()
    small = np.quantile(draws[:, 3], [0.1, 0.5, 0.9])
    assert 0 < small[0] < small[1] < small[2] < 5 * 46  # around 92 days x 0.5
    assert np.asarray(rate.shift)[3] < np.asarray(rate.shift)[0] / 100


def test_returns_let_a_rep_fall_only_as_low_as_its_history() -> None:
    events, reps = _stream({0: 1000.0, 1: 50.0}, "2022-01-03", "2024-06-30")
    # Rep 1 once had a quarter of returns: net -3,000.
    events = pd.concat([events, pd.DataFrame({DS: [pd.Timestamp("2023-05-02")],
                                              AMOUNT: [-8000.0], CREATED_AT: [pd.NaT]})],
                       ignore_index=True)
    reps = np.append(reps, 1)
    rate = estimate_run_rate(events, reps, 2, _quarter(), day_number("2022-01-03"))
    floor = np.asarray(rate.floor)
    assert floor[0] == 0.0 and floor[1] < -2000
    draws = rate.draw(20_000, np.random.default_rng(1))
    assert draws[:, 0].min() >= 0 and draws[:, 1].min() >= floor[1] - 1e-9


def test_few_backtest_windows_widen_the_spread_and_say_so() -> None:
    steady = {0: 100.0, 1: 100.0}
    long_events, reps = _stream(steady, "2022-01-03", "2024-06-30")
    long_rate = estimate_run_rate(long_events, reps, 2, _quarter(), day_number("2022-01-03"))
    # 32 weeks of history: a few backtests of a 13-week window, well under 2 independent.
    short_events, reps = _stream(steady, "2023-11-20", "2024-06-30")
    short_rate = estimate_run_rate(short_events, reps, 2, _quarter(), day_number("2023-11-20"))
    assert 4 <= short_rate.backtests < 2 * 13
    assert "widened" in short_rate.notes[0] and "widened" not in long_rate.notes[0]
    # Pulled towards the defaults by the share of missing windows (here most of them).
    share = 1 - short_rate.backtests / 13 / MIN_INDEPENDENT_WINDOWS
    assert short_rate.sigma_common >= np.sqrt(share) * DEFAULT_COMMON_SIGMA
    total = np.sqrt(short_rate.sigma**2 + sum(g**2 for g in short_rate.group_sigmas))
    assert (total >= np.sqrt(share) * DEFAULT_REP_SIGMA).all()
    assert long_rate.sigma_common < short_rate.sigma_common
    assert (long_rate.sigma < total).all()


def test_interval_problems_are_named() -> None:
    frame = pd.DataFrame({LEVEL: ["rep", "rep", "rep"], KEY: ["a", "b", "c"],
                          "closed_to_date": [100.0, 100.0, 100.0],
                          "p10": [120.0, 90.0, 130.0], "p50": [150.0, 150.0, 120.0],
                          "p90": [200.0, 200.0, 210.0]})
    problems = interval_problems(frame)
    assert len(problems) == 2
    assert "out of order for rep=c" in problems[0] and "P10 below" in problems[1]
    assert "rep=b" in problems[1] and "rep=a" not in " ".join(problems)
    # Rep b's history has returns that could take 20 off what it closed: that is possible.
    assert len(interval_problems(frame, lowest=np.array([100.0, 80.0, 100.0]))) == 1


def _sane(frame: pd.DataFrame, simulation: Simulation) -> None:
    """The sanity properties every written interval has (crm-sales has no returns)."""
    q = frame[["p10", "p50", "p90"]]
    assert (q["p10"] <= q["p50"]).all() and (q["p50"] <= q["p90"]).all()
    assert (q["p10"] >= frame["closed_to_date"] - 1e-6).all() and (q.to_numpy() >= 0).all()
    assert frame["p_attain"].dropna().between(0, 1).all()
    assert not any(n.startswith("interval check") for n in frame.attrs["notes"])
    nodes = simulation.nodes
    for parent in np.flatnonzero((nodes[LEVEL] != LEVEL_REP).to_numpy()):
        children = np.flatnonzero((nodes["parent"] == parent).to_numpy())
        if children.size:
            np.testing.assert_allclose(simulation.draws[:, children].sum(axis=1),
                                       simulation.draws[:, parent], rtol=1e-9)


def _crm_targets(tables: Tables, period: str) -> pd.DataFrame:
    """A target of 20,000 per rep of the org chart, summed up the hierarchy."""
    org = tables[ORG]
    reps = pd.DataFrame({LEVEL: LEVEL_REP, KEY: org[REP], AMOUNT: 20_000.0})
    teams = org.groupby(TEAM).size().mul(20_000.0).rename(AMOUNT).reset_index()
    regions = org.groupby(REGION).size().mul(20_000.0).rename(AMOUNT).reset_index()
    frames = [reps, teams.rename(columns={TEAM: KEY}).assign(**{LEVEL: LEVEL_TEAM}),
              regions.rename(columns={REGION: KEY}).assign(**{LEVEL: LEVEL_REGION}),
              pd.DataFrame({LEVEL: [LEVEL_COMPANY], KEY: [COMPANY_KEY],
                            AMOUNT: [20_000.0 * len(org)]})]
    return pd.concat(frames, ignore_index=True).assign(**{schemas.PERIOD: period})


@pytest.mark.shared_data
def test_a_three_month_old_crm_answers_with_sane_intervals(real_data) -> None:
    """crm-sales cut to three months: deals, no closed deal and no order yet, no targets."""
    tables = load_tables(str(real_data("crm-sales", 3)))
    as_of = default_as_of(tables)
    result = run_feasibility(tables, "2017Q1", as_of, draws=1000, all_nodes=True,
                             use_churn=False, models={})
    win_notes = [n for n in result.notes if n.startswith("win model:")]
    assert len(win_notes) == 1 and "flat 20%" in win_notes[0]
    assert any("wide default spread" in n for n in result.notes)
    frame = result.frame
    company = frame[frame[LEVEL] == LEVEL_COMPANY].iloc[0]
    assert company["closed_to_date"] == 0 and company["p10"] > 0
    assert company["p90"] > 1.5 * company["p10"]  # a guessed win rate: a wide interval
    _sane(frame, result.simulation)
    # With targets written for the quarter, recalibration keeps every parent's total.
    targeted = Tables(dict(tables.frames) | {TARGETS: _crm_targets(tables, "2017Q1")},
                      tables.source, tables.derived)
    planned = run_feasibility(targeted, "2017Q1", as_of, draws=1000, use_churn=False,
                              models={})
    out = recalibrate(planned.frame, planned.simulation).set_index([LEVEL, KEY])
    revised = out["recalibrated_target"]
    assert revised[(LEVEL_COMPANY, COMPANY_KEY)] == 20_000.0 * len(tables[ORG])
    assert revised.loc[LEVEL_REGION].sum() == pytest.approx(
        revised[(LEVEL_COMPANY, COMPANY_KEY)], rel=1e-12)
    assert out["p_attain_after"].between(0, 1).all()


@pytest.mark.shared_data
@pytest.mark.parametrize("months", [6, 9])
def test_young_crm_intervals_are_sane(real_data, months: int) -> None:
    tables = load_tables(str(real_data("crm-sales", months)))
    as_of = default_as_of(tables)
    period = period_of(as_of - pd.Timedelta(days=1), "Q")
    result = run_feasibility(tables, period, as_of, draws=1000, all_nodes=True,
                             use_churn=False, models={})
    _sane(result.frame, result.simulation)
    company = result.frame[result.frame[LEVEL] == LEVEL_COMPANY].iloc[0]
    assert company["p10"] > company["closed_to_date"]  # open deals and run rate add revenue


@pytest.mark.shared_data
def test_later_rows_of_a_real_crm_change_nothing_as_of_t(real_data) -> None:
    full = load_tables(str(real_data("crm-sales")))
    as_of, cut = pd.Timestamp("2017-05-15"), pd.Timestamp("2017-06-01")
    base = export_at(full, cut)
    # The same export with every later row appended: orders and new deals dated after the cut.
    frames = dict(base.frames)
    for name, column in ((ORDERS, ORDER_DATE), (OPPORTUNITIES, CREATED_AT)):
        later = full.frames[name].loc[full.frames[name][column] >= cut]
        assert len(later) > 100
        frames[name] = pd.concat([base.frames[name], later], ignore_index=True)
    appended = Tables(frames, base.source, base.derived)
    runs = [feasibility(t, "2017Q2", as_of, draws=500, all_nodes=True)
            for t in (base, appended)]
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_recalibration_without_targets_says_so(tables: Tables, registry: Path) -> None:
    untargeted = Tables({k: v for k, v in tables.frames.items() if k != TARGETS})
    frame, notes = run_recalibration(untargeted, PERIOD, AS_OF, draws=200, use_churn=False)
    assert frame.empty and "no node has a target in 2024Q3" in notes[-1]


# --- the rest of the period, judged at the same point of earlier periods ------------------------


def test_earlier_points_are_the_same_day_of_periods_already_over() -> None:
    points = earlier_points("2017Q3", "2017-07-20")
    assert [(p.period, p.as_of) for p in points] == [
        ("2017Q2", pd.Timestamp("2017-04-20")), ("2017Q1", pd.Timestamp("2017-01-20")),
        ("2016Q4", pd.Timestamp("2016-10-20")), ("2016Q3", pd.Timestamp("2016-07-20"))]
    # A plan check 30 days before the quarter: earlier quarters seen 30 days before theirs;
    # 2017Q2 is not over on 2017-06-01, so it is not one of them.
    plan = earlier_points("2017Q3", "2017-06-01")
    assert plan[0].period == "2017Q1" and plan[0].as_of == pd.Timestamp("2016-12-02")
    assert all(p.end <= pd.Timestamp("2017-06-01") for p in plan)
    # A day past a short month's end is its last day; a period over has no rest.
    assert earlier_points("2017-03", "2017-03-31")[0].as_of == pd.Timestamp("2017-02-28")
    assert earlier_points("2017Q2", "2017-07-01") == []


def test_rest_scale_is_the_shrunk_mean_log_ratio_with_its_spread() -> None:
    scale = rest_scale(np.array([200.0, 200.0]), np.array([100.0, 100.0]), ["b", "a"])
    assert scale.factor == pytest.approx(2.0 ** (2 / 3))
    assert scale.sigma > 0 and "b 2.00, a 2.00" in scale.note
    # Periods without revenue or outlook say nothing; none at all: no correction.
    assert rest_scale(np.array([0.0]), np.array([100.0]), ["a"]).factor == 1.0
    assert rest_scale(np.array([1e9]), np.array([1.0]), ["a"]).factor == MAX_SCALE


def test_scaled_odds_keep_certain_and_impossible_deals() -> None:
    p = np.array([0.0, 0.01, 0.5, 1.0])
    out = scaled_odds(p, 3.0)
    assert out[0] == 0.0 and out[3] == 1.0
    assert out[1] == pytest.approx(0.03, rel=0.03) and out[2] == pytest.approx(0.75)
    np.testing.assert_array_equal(scaled_odds(p, 1.0), p)


class ScaledWin:
    """A win model stub: the same small probability for every deal."""

    def __init__(self, p: float):
        self.p = p

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({WIN_PROBABILITY: np.full(len(frame), self.p)}, index=frame.index)


@pytest.mark.shared_data
def test_a_win_model_that_under_predicts_is_corrected_by_earlier_quarters(real_data) -> None:
    """crm-sales at nine months: a win model giving every open deal 4% (a young model's
    extrapolation does much the same) is scaled up by what 2017Q2 brought at the same point,
    and the company outlook moves towards the quarter's actual revenue."""
    full = load_tables(str(real_data("crm-sales")))
    tables = load_tables(str(real_data("crm-sales", 9)))
    as_of = default_as_of(tables)
    period = period_of(as_of - pd.Timedelta(days=1), "Q")
    model = ScaledWin(0.04)
    scale = rest_of_period_scale(tables, period, as_of, model)
    assert scale.periods and scale.periods[0] == "2017Q2" and scale.factor > 1.2
    # Before the period starts (a plan, a plan check) the outlook is left as estimated.
    start = pd.Period(period, freq="Q").start_time
    assert rest_of_period_scale(tables, period, start, model).factor == 1.0
    sims = [simulate(build_inputs(tables, period, as_of, model, rest_backtest=on), draws=2000,
                     seed=3) for on in (False, True)]
    company = [s.draws[:, s.node_index(LEVEL_COMPANY, COMPANY_KEY)] for s in sims]
    orders = full[ORDERS]
    start, end = pd.Period(period, freq="Q").start_time, pd.Period(period, freq="Q").end_time
    actual = orders.loc[orders[ORDER_DATE].between(start, end), AMOUNT].sum()
    before, after = (abs(float(np.median(c)) / actual - 1) for c in company)
    assert after < before
    assert any(n.startswith("rest of period:") for n in sims[1].notes)
    # Coherent still: the company's draws are the sum of its regions'.
    regions = sims[1].nodes[LEVEL] == LEVEL_REGION
    np.testing.assert_allclose(sims[1].draws[:, regions.to_numpy()].sum(axis=1), company[1],
                               rtol=1e-9)


def test_rest_scale_ignores_outlooks_that_are_not_finite() -> None:
    scale = rest_scale(np.array([100.0, 100.0]), np.array([np.inf, 50.0]), ["b", "a"])
    assert scale.periods == ("a",) and np.isfinite(scale.sigma)
    assert scale.factor == pytest.approx(2.0 ** 0.5)
