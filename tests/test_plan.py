"""``quotacast plan``: top-down targets coherent to the cent, tiers, commits, feasibility reads
the file, point in time, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.history import cut_history
from engine.io import Tables, load_tables, validate_tables, write_data_dir
from engine.schemas import (
    AMOUNT,
    COMMITS,
    KEY,
    LEVEL,
    ORDERS,
    ORG,
    PERIOD,
    REGION,
    REP,
    TARGETS,
    TEAM,
    TIER,
)
from engine.synthetic import generate
from features.hierarchy import node_actuals
from models.feasibility import Simulation, fit_stage_rates
from models.feasibility.plan import round_table, season_shares, split_cents, sub_periods
from service.cli.app import app
from service.usecases.feasibility import run_feasibility
from service.usecases.plan import (
    COMMIT,
    COMMIT_GAP,
    P_ATTAIN_COMMIT,
    coherent_sub_periods,
    run_plan,
)
from service.usecases.request import BadRequest

AS_OF = pd.Timestamp("2026-11-15")  # the demo's data ends on 2026-11-14
DRAWS = 2000
runner = CliRunner()


_RATES: dict[tuple[int, pd.Timestamp], tuple[object, str]] = {}


def _stage_rates(tables: Tables, as_of: pd.Timestamp) -> tuple[object, str]:
    """Stage win rates fitted once per data and date (the slow part of a small plan)."""
    key = (id(tables), pd.Timestamp(as_of))
    if key not in _RATES:
        _RATES[key] = fit_stage_rates(tables, as_of)
    return _RATES[key]


def _plan(tables: Tables, period: str, as_of: pd.Timestamp = AS_OF, **kwargs: object
          ) -> pd.DataFrame:
    args = {"draws": DRAWS, "seed": 3, "models": {}, "stage_rates": _stage_rates, **kwargs}
    return run_plan(tables, period, as_of, **args).frame  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return generate("small")


@pytest.fixture(scope="module")
def tables(frames: dict[str, pd.DataFrame]) -> Tables:
    validated, problems = validate_tables(frames)
    assert not problems
    return validated


@pytest.fixture(scope="module")
def commits(tables: Tables) -> pd.DataFrame:
    reps = tables[ORG][REP].sort_values().to_numpy()[:3]
    return pd.DataFrame({PERIOD: ["2027", "2027", "2027", "2027Q1"], REP: [*reps, reps[0]],
                         AMOUNT: [1_000_000.0, 2_000_000.0, 500_000.0, 300_000.0]})


@pytest.fixture(scope="module")
def year_plan(tables: Tables, commits: pd.DataFrame) -> pd.DataFrame:
    return _plan(tables, "2027", growth=0.1, commits=commits)


def _cents(values: pd.Series) -> np.ndarray:
    return np.round(values.to_numpy(dtype=float) * 100).astype(np.int64)


# --- the pure pieces ----------------------------------------------------------------------------


def test_split_cents_is_exact_and_largest_remainder_first() -> None:
    assert split_cents(100, np.array([1.0, 1.0, 1.0])).tolist() == [34, 33, 33]
    assert split_cents(7, np.array([0.0, -1.0])).tolist() == [4, 3]  # no weight: evenly
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = rng.random(rng.integers(1, 9))
        total = int(rng.integers(0, 10**9))
        parts = split_cents(total, w)
        assert parts.sum() == total and (parts >= 0).all()
        assert np.all(np.abs(parts - total * w / w.sum()) < 1.0)


def test_round_table_keeps_both_margins() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        rows = rng.integers(0, 10**7, rng.integers(1, 8))
        share = rng.random(12)
        cols = split_cents(int(rows.sum()), share)
        ideal = rows[:, None] * (cols / max(cols.sum(), 1))[None, :]
        table = round_table(ideal, rows, cols)
        assert (table.sum(axis=1) == rows).all() and (table.sum(axis=0) == cols).all()
        assert np.all(np.abs(table - ideal) < 1.0)


def test_seasonality_even_per_day_without_a_year_and_shrunk_with_one() -> None:
    months = [f"2027-{m:02d}" for m in range(1, 13)]
    short = pd.Series(1.0, index=pd.date_range("2026-07-01", periods=5, freq="MS"))
    shares, note = season_shares(short, months)
    assert "evenly per day" in note
    assert shares[0] == pytest.approx(31 / 365) and shares[1] == pytest.approx(28 / 365)
    year = pd.Series(np.r_[np.ones(11), 12.0], index=pd.date_range("2026-01-01", periods=12,
                                                                   freq="MS"))
    shares, note = season_shares(year, months)
    observed, even = 12.0 / 23.0, 31 / 365.25
    assert shares[11] == pytest.approx((observed + even) / 2, rel=0.01)  # half-way, 1 year
    assert shares.sum() == pytest.approx(1.0)
    assert sub_periods("2027")[:4] == ["2027Q1", "2027Q2", "2027Q3", "2027Q4"]
    assert sub_periods("2027Q2") == ["2027-04", "2027-05", "2027-06"] and not sub_periods(
        "2027-05")


# --- the demo company: done-when numbers -----------------------------------------------------


def test_year_plan_covers_quarters_months_and_every_node(year_plan: pd.DataFrame,
                                                        tables: Tables) -> None:
    assert set(year_plan[TIER]) == {"must_hit", "plan", "stretch"}
    plan = year_plan[year_plan[TIER] == "plan"]
    assert sorted(plan[PERIOD].unique()) == sorted(
        ["2027", *[f"2027Q{q}" for q in range(1, 5)], *[f"2027-{m:02d}" for m in range(1, 13)]])
    org = tables[ORG]
    for period, rows in plan.groupby(PERIOD):
        nodes = set(zip(rows[LEVEL], rows[KEY], strict=True))
        expected = ({("company", "all")} | {("region", r) for r in org[REGION]}
                    | {("team", t) for t in org[TEAM]} | {("rep", r) for r in org[REP]})
        assert nodes == expected, period
    assert year_plan["p_attain"].between(0, 1).all()


def test_every_sum_holds_to_the_cent(year_plan: pd.DataFrame, tables: Tables) -> None:
    org = tables[ORG].drop_duplicates(REP)
    parents = {("rep", r): ("team", t) for r, t in zip(org[REP], org[TEAM], strict=True)}
    parents |= {("team", t): ("region", g) for t, g in zip(org[TEAM], org[REGION],
                                                           strict=True)}
    parents |= {("region", g): ("company", "all") for g in org[REGION]}
    frame = year_plan.assign(cents=_cents(year_plan[AMOUNT]))
    for (tier, period), rows in frame.groupby([TIER, PERIOD]):
        amount = dict(zip(zip(rows[LEVEL], rows[KEY], strict=True), rows["cents"],
                          strict=True))
        children: dict[tuple[str, str], int] = {}
        for node, parent in parents.items():
            children[parent] = children.get(parent, 0) + int(amount[node])
        for parent, total in children.items():
            assert amount[parent] == total, (tier, period, parent)
    for node, rows in frame.groupby([TIER, LEVEL, KEY]):
        by = dict(zip(rows[PERIOD], rows["cents"], strict=True))
        months = [f"2027-{m:02d}" for m in range(1, 13)]
        assert by["2027"] == sum(by[m] for m in months) == sum(by[f"2027Q{q}"]
                                                               for q in range(1, 5)), node
        for q in range(1, 5):
            assert by[f"2027Q{q}"] == sum(by[m] for m in months[3 * q - 3: 3 * q])
        assert np.allclose(rows[AMOUNT] * 100, np.round(rows[AMOUNT] * 100))  # whole cents


def test_equal_probability_nodes_agree_within_003(year_plan: pd.DataFrame) -> None:
    year = year_plan[(year_plan[PERIOD] == "2027") & (year_plan[TIER] == "plan")]
    for level, rows in year[year[LEVEL] != "company"].groupby(LEVEL):
        spread = rows["p_attain"].max() - rows["p_attain"].min()
        assert spread <= 0.03, (level, spread)


def test_tiers_are_ordered_and_company_tiers_match_their_probabilities(
        year_plan: pd.DataFrame) -> None:
    wide = year_plan.pivot_table(index=[PERIOD, LEVEL, KEY], columns=TIER, values=AMOUNT)
    assert (wide["must_hit"] <= wide["plan"] + 0.011).all()
    assert (wide["plan"] <= wide["stretch"] + 0.011).all()
    company = year_plan[(year_plan[LEVEL] == "company") & (year_plan[PERIOD] == "2027")]
    p = dict(zip(company[TIER], company["p_attain"], strict=True))
    assert p["stretch"] == pytest.approx(0.3, abs=0.01) or p["stretch"] == p["plan"]
    assert p["must_hit"] == pytest.approx(0.9, abs=0.01) or p["must_hit"] == p["plan"]


def test_growth_is_over_the_previous_period(tables: Tables) -> None:
    frame = _plan(tables, "2026Q3", as_of=pd.Timestamp("2026-07-01"), growth=0.12)
    actual = node_actuals(tables, pd.Timestamp("2026-04-01"), pd.Timestamp("2026-07-01"))
    base = float(actual.loc[actual[LEVEL] == "company", AMOUNT].iloc[0])
    company = frame[(frame[LEVEL] == "company") & (frame[PERIOD] == "2026Q3")
                    & (frame[TIER] == "plan")]
    assert float(company[AMOUNT].iloc[0]) == pytest.approx(base * 1.12, abs=0.01)


def test_p_attain_target_is_reached_with_that_probability(tables: Tables) -> None:
    frame = _plan(tables, "2027-02", p_attain=0.6)
    company = frame[(frame[LEVEL] == "company") & (frame[TIER] == "plan")]
    assert float(company["p_attain"].iloc[0]) == pytest.approx(0.6, abs=0.01)
    assert set(frame[PERIOD]) == {"2027-02"}


def test_proportional_split_follows_expected_revenue_and_keeps_sums(tables: Tables) -> None:
    frame = _plan(tables, "2027Q1", company_target=9_000_000.0, method="proportional",
                  draws=500)
    plan = frame[(frame[TIER] == "plan") & (frame[PERIOD] == "2027Q1")]
    regions = plan[plan[LEVEL] == "region"]
    assert _cents(regions[AMOUNT]).sum() == 900_000_000
    even = _plan(tables, "2027Q1", company_target=9_000_000.0, draws=500)
    assert not np.allclose(even[AMOUNT], frame[AMOUNT])  # the two methods differ


def test_a_plan_uses_no_row_dated_at_or_after_its_date(tables: Tables,
                                                      frames: dict[str, pd.DataFrame]
                                                      ) -> None:
    as_of = pd.Timestamp("2026-04-01")
    before = _plan(tables, "2026Q3", as_of=as_of, company_target=9e6, draws=300)
    later = frames[ORDERS].iloc[:50].copy()
    later["order_id"] = [f"late-{i}" for i in range(len(later))]
    later["order_date"] = as_of + pd.Timedelta(days=3)
    appended, problems = validate_tables({**frames, ORDERS: pd.concat([frames[ORDERS],
                                                                        later])})
    assert not problems
    after = _plan(appended, "2026Q3", as_of=as_of, company_target=9e6, draws=300)
    pd.testing.assert_frame_equal(before, after)
    # a date inside the period is taken back to its start
    inside = _plan(tables, "2026Q3", as_of=pd.Timestamp("2026-08-15"), company_target=9e6,
                   draws=300)
    at_start = _plan(tables, "2026Q3", as_of=pd.Timestamp("2026-07-01"),
                     company_target=9e6, draws=300)
    pd.testing.assert_frame_equal(inside, at_start)


# --- bottom-up ------------------------------------------------------------------------------


def test_commits_are_summed_up_and_compared(year_plan: pd.DataFrame, tables: Tables,
                                            commits: pd.DataFrame) -> None:
    plan = year_plan[(year_plan[TIER] == "plan") & (year_plan[PERIOD] == "2027")]
    reps = plan[plan[LEVEL] == "rep"].set_index(KEY)
    for rep, amount in zip(commits[REP][:3], commits[AMOUNT][:3], strict=True):
        assert reps.loc[rep, COMMIT] == amount
        assert reps.loc[rep, COMMIT_GAP] == pytest.approx(amount - reps.loc[rep, AMOUNT])
        assert 0 <= reps.loc[rep, P_ATTAIN_COMMIT] <= 1
        assert reps.loc[rep, P_ATTAIN_COMMIT] >= reps.loc[rep, "p_attain"]  # lower than plan
    company = plan[plan[LEVEL] == "company"]
    assert float(company[COMMIT].iloc[0]) == pytest.approx(3_500_000.0)
    team_of = tables[ORG].drop_duplicates(REP).set_index(REP)[TEAM]
    teams = plan[plan[LEVEL] == "team"].set_index(KEY)[COMMIT]
    expected = commits[:3].groupby(commits[REP][:3].map(team_of))[AMOUNT].sum()
    assert teams.dropna().to_dict() == pytest.approx(expected.to_dict())
    q1 = year_plan[(year_plan[PERIOD] == "2027Q1") & (year_plan[TIER] == "plan")]
    assert q1[COMMIT].notna().sum() == 4  # the rep, its team, region and the company
    assert year_plan.loc[year_plan[TIER] != "plan", COMMIT].isna().all()


# --- the file is a targets table --------------------------------------------------------------


def test_feasibility_reads_the_plan_unchanged(year_plan: pd.DataFrame,
                                             frames: dict[str, pd.DataFrame],
                                             tmp_path: Path) -> None:
    data = write_data_dir({k: v for k, v in frames.items() if k != TARGETS}, tmp_path / "d")
    year_plan.to_csv(data / "targets.csv", index=False)
    tables = load_tables(data)  # validates: exit 2 would raise here
    result = run_feasibility(tables, "2027", AS_OF, draws=DRAWS, seed=3, models={})
    plan = year_plan[(year_plan[TIER] == "plan") & (year_plan[PERIOD] == "2027")]
    merged = result.frame.merge(plan, on=[LEVEL, KEY])
    assert len(merged) == len(plan) == len(result.frame)
    assert np.allclose(merged["target"], merged[AMOUNT])
    assert np.allclose(merged["p_attain_x"], merged["p_attain_y"])  # same draws, same seed


def test_cli_plan_writes_a_valid_targets_file_and_refuses_plainly(
        frames: dict[str, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUOTACAST_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    data = write_data_dir(frames, tmp_path / "d")
    out = tmp_path / "plan.csv"
    args = ["plan", "--data", str(data), "--period", "2027Q1", "--draws", "500"]
    picture = tmp_path / "plan.png"
    result = runner.invoke(app, [*args, "--company-target", "9000000", "--levels", "product",
                                 "--out", str(out), "--plot", str(picture)])
    assert result.exit_code == 0, result.stderr
    assert picture.stat().st_size > 10_000
    written = pd.read_csv(out)
    products = written[(written[LEVEL] == "product") & (written[PERIOD] == "2027Q1")
                       & (written[TIER] == "plan")]
    assert _cents(products[AMOUNT]).sum() == 900_000_000
    both = runner.invoke(app, [*args, "--company-target", "1", "--growth", "0.1"])
    assert both.exit_code == 2 and "exactly one" in both.stderr
    early = runner.invoke(app, ["plan", "--data", str(data), "--period", "2024",
                                "--growth", "0.1"])
    assert early.exit_code == 1 and "Traceback" not in early.stderr
    assert "nothing to plan" in early.stderr


def test_three_months_of_history_split_evenly_and_say_so(tables: Tables) -> None:
    short = cut_history(tables, 3, start="2024-01-01")
    result = run_plan(short, "2024Q2", pd.Timestamp("2024-04-01"), growth=0.05, draws=500,
                      models={})
    assert any("evenly per day" in note for note in result.notes)
    months = result.frame[(result.frame[LEVEL] == "company") & (result.frame[TIER] == "plan")
                          & result.frame[PERIOD].str.contains("-")]
    assert _cents(months[AMOUNT]).tolist() == pytest.approx(
        (_cents(months[AMOUNT]).sum() * np.array([30, 31, 30]) / 91).round(), abs=1)
    assert COMMITS not in short.frames


def _simulation(draws: np.ndarray) -> Simulation:
    nodes = pd.DataFrame({LEVEL: ["company", "region", "region"], KEY: ["all", "N", "S"],
                          "parent": [-1, 0, 0]})
    zero = np.zeros(3)
    return Simulation(nodes, draws, zero, zero, zero, zero, zero, zero, float("nan"))


def test_sub_period_outlooks_are_rescaled_to_add_up_to_the_period() -> None:
    rng = np.random.default_rng(4)
    base = rng.gamma(5.0, 1.0, (400, 2))
    whole = np.c_[base.sum(axis=1), base]
    sims = {"2027Q1": _simulation(whole * 3)}
    for m in ("2027-01", "2027-02", "2027-03"):
        sims[m] = _simulation(whole * 2)  # months ahead: twice too much together
    out = coherent_sub_periods(sims, "2027Q1")
    total = sum(out[m].draws.mean(axis=0) for m in ("2027-01", "2027-02", "2027-03"))
    assert np.allclose(total, out["2027Q1"].draws.mean(axis=0))
    assert out["2027Q1"] is sims["2027Q1"]


def test_growth_accepts_an_export_starting_a_few_days_in_and_refuses_a_real_gap(
        tables: Tables) -> None:
    late = cut_history(tables, 13, start="2024-01-03")
    result = run_plan(late, "2025", pd.Timestamp("2025-01-01"), growth=0.1, draws=300,
                      models={}, stage_rates=_stage_rates)
    assert any("the data starts on" in note for note in result.notes)
    later = cut_history(tables, 13, start="2024-02-01")
    with pytest.raises(BadRequest, match="--growth needs the revenue of 2024"):
        run_plan(later, "2025", pd.Timestamp("2025-01-01"), growth=0.1, draws=300, models={},
                 stage_rates=_stage_rates)
