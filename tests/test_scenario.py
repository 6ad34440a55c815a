"""Market-shock scenarios (models.feasibility.scenario, quotacast scenario, POST /v1/scenario):
the file format, the shocks through the same simulation, exact baseline, the CLI and the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    StubWin,
    company_frames,
    fresh_registry,
    make_company,
    quiet_options,
    quiet_registry,
    register_stubs,
    settings_for,
)
from typer.testing import CliRunner

from engine.history import export_at
from engine.io import Tables, load_tables, write_data_dir
from engine.periods import period_bounds
from engine.schemas import (
    CLOSE_DATE,
    CREATED_AT,
    KEY,
    LEVEL,
    OPPORTUNITIES,
    OPPORTUNITY_ID,
    ORDER_DATE,
    ORDERS,
    REGION,
    REP,
    TEAM,
)
from features.deals import deal_inputs
from features.funnel import F_STAGE, stage_order
from features.hierarchy import opportunity_nodes
from models.feasibility.scenario import (
    COMPARED_COLUMNS,
    ScenarioError,
    library,
    load_scenario,
    parse_scenario,
    run_scenario,
)
from service.cli.app import app
from service.http.app import create_app
from service.http.routes import scenario as scenario_routes
from service.usecases.scenario import run_scenario_case

AS_OF = pd.Timestamp("2026-10-02")
PERIOD = "2026Q4"
DRAWS = 2000
runner = CliRunner()


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Tables]:
    data = write_data_dir(company_frames(), tmp_path_factory.mktemp("scenario") / "data")
    return data, load_tables(str(data))


def _run(tables: Tables, shocks: list[dict[str, Any]], **kwargs: Any) -> Any:
    scenario = parse_scenario({"name": "test", "shocks": shocks})
    return run_scenario(tables, PERIOD, AS_OF, scenario, StubWin(), draws=DRAWS, seed=3,
                        **kwargs)


def _by_node(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index([LEVEL, KEY])


# --- the file ---------------------------------------------------------------------------------


def test_the_library_has_the_ready_scenarios() -> None:
    ready = library()
    assert {"budget-freeze", "lost-segment", "price-cut", "recession"} <= set(ready)
    freeze = [s.describe() for s in ready["budget-freeze"].shocks]
    assert freeze == ["win_rate x0.8 where stage_from=late", "slip +30 days everywhere"]
    assert load_scenario("budget-freeze") == ready["budget-freeze"]


@pytest.mark.parametrize(("shock", "expected"), [
    ({"kind": "discount", "factor": 0.9}, "shocks[0].kind: expected one of win_rate,"),
    ({"kind": "win_rate", "factor": -0.5}, "shocks[0].factor: Input should be greater than"),
    ({"kind": "win_rate", "factor": 0.8, "where": {"planet": "Mars"}},
     "shocks[0].where: unknown where key planet; expected one of region"),
    ({"kind": "run_rate", "factor": 0.8, "where": {"stage": "proposal"}},
     "unknown where key stage; expected one of region, team, rep, product, segment, channel"),
    ({"kind": "win_rate"}, "shocks[0].factor: Field required"),
    ({"kind": "slip_days", "factor": 2}, "shocks[0].factor: Extra inputs are not permitted"),
    ({"kind": "lose"}, "shocks[0].where: Field required"),
    ({"kind": "lose", "where": {}}, "a lose shock needs where"),
    ({"kind": "win_rate", "factor": 1, "where": {"stage_from": ["a", "b"]}},
     "shocks[0].where.stage_from: expected a name or a number"),
    ({"kind": "lose", "where": {"customer_id": []}},
     "shocks[0].where.customer_id: expected a name, a number or a non-empty list"),
    ({"kind": "churn", "factor": 1, "surprise": 1}, "shocks[0].surprise: Extra inputs"),
])
def test_a_bad_scenario_says_file_field_and_why(shock: dict[str, Any], expected: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({"name": "x", "shocks": [shock]}, "s.yaml")
    assert "s.yaml: " in str(caught.value) and expected in str(caught.value), caught.value


def test_a_missing_or_unreadable_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file, and not a library"):
        load_scenario(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not readable YAML"):
        load_scenario(broken)


# --- the shocks -------------------------------------------------------------------------------


def test_no_shock_reproduces_the_baseline_exactly(company: tuple[Path, Tables]) -> None:
    run = _run(company[1], [])
    for column in COMPARED_COLUMNS:
        np.testing.assert_array_equal(run.frame[f"{column}_baseline"].to_numpy(),
                                      run.frame[f"{column}_scenario"].to_numpy())
    assert (run.frame["expected_delta"] == 0).all()
    np.testing.assert_array_equal(run.simulations[0].draws, run.simulations[1].draws)


def _late_stage_nodes(tables: Tables, stage: str) -> set[tuple[str, str]]:
    """Nodes holding a deal open at AS_OF, expected in the period, in ``stage`` or later
    (computed from the tables, not from the simulation)."""
    order = stage_order(tables, AS_OF)
    late = set(order[order.index(stage):])
    deals = deal_inputs(tables, AS_OF)
    _, end = period_bounds(PERIOD)
    chosen = deals[deals[F_STAGE].isin(late) & (deals[CLOSE_DATE] < end)]
    nodes = opportunity_nodes(tables).set_index(OPPORTUNITY_ID)
    out = {("company", "all")}
    for level in (REGION, TEAM, REP):
        out |= {(level, str(k)) for k in chosen[OPPORTUNITY_ID].map(nodes[level])}
    return out


def test_a_late_stage_cut_lowers_exactly_the_nodes_with_late_pipeline(
        company: tuple[Path, Tables]) -> None:
    tables = company[1]
    run = _run(tables, [{"kind": "win_rate", "factor": 0.8,
                         "where": {"stage_from": "proposal"}}])
    frame = _by_node(run.frame)
    hit = _late_stage_nodes(tables, "proposal")
    assert len(hit) > 5
    lowered = set(frame.index[frame["expected_delta"] < 0])
    assert lowered == hit
    untouched = frame.drop(index=list(hit))
    assert (untouched["expected_delta"] == 0).all()
    for column in ("p10", "p50", "p90", "p_attain"):
        np.testing.assert_array_equal(untouched[f"{column}_baseline"],
                                      untouched[f"{column}_scenario"])
    assert "shock 1 (win_rate x0.8 where stage_from=proposal)" in " ".join(run.notes)


def test_late_means_the_later_half_of_the_open_stages(company: tuple[Path, Tables]) -> None:
    tables = company[1]
    by_name = _by_node(_run(tables, [{"kind": "win_rate", "factor": 0.8,
                                      "where": {"stage_from": "proposal"}}]).frame)
    by_late = _by_node(_run(tables, [{"kind": "win_rate", "factor": 0.8,
                                      "where": {"stage_from": "late"}}]).frame)
    open_stages = set(deal_inputs(tables, AS_OF)[F_STAGE])
    order = [s for s in stage_order(tables, AS_OF) if s in open_stages]
    assert order[len(order) // 2:] == ["proposal", "negotiation"]
    pd.testing.assert_series_equal(by_name["expected_scenario"], by_late["expected_scenario"])


def test_an_unknown_stage_is_refused_with_the_known_ones(company: tuple[Path, Tables]) -> None:
    with pytest.raises(ScenarioError, match=r"unknown stage 'Propsal'.*prospecting"):
        _run(company[1], [{"kind": "win_rate", "factor": 0.8,
                           "where": {"stage_from": "Propsal"}}])


def test_slipping_past_the_period_end_removes_the_pipeline(company: tuple[Path, Tables]) -> None:
    run = _run(company[1], [{"kind": "slip_days", "days": 400}])
    base, shocked = run.simulations
    assert base.expected_pipeline.sum() > 0
    assert (shocked.expected_pipeline == 0).all()
    np.testing.assert_allclose(shocked.expected_run_rate, base.expected_run_rate)
    assert (run.frame["expected_delta"] <= 0).all()


def test_deal_size_scales_the_expected_pipeline(company: tuple[Path, Tables]) -> None:
    run = _run(company[1], [{"kind": "deal_size", "factor": 0.5}])
    base, shocked = run.simulations
    np.testing.assert_allclose(shocked.expected_pipeline, 0.5 * base.expected_pipeline)


def test_run_rate_shock_touches_only_its_region(company: tuple[Path, Tables]) -> None:
    run = _run(company[1], [{"kind": "run_rate", "factor": 0.5, "where": {"region": "North"}}])
    frame = run.frame
    north = frame[(frame[LEVEL] == REGION) & (frame[KEY] == "North")]
    south = frame[(frame[LEVEL] == REGION) & (frame[KEY] == "South")]
    assert north["expected_delta"].iloc[0] < 0
    assert south["expected_delta"].iloc[0] == 0
    base, shocked = run.simulations
    assert shocked.expected_run_rate.sum() < base.expected_run_rate.sum()


def test_run_rate_by_segment_splits_cells_by_segment(company: tuple[Path, Tables]) -> None:
    run = _run(company[1], [{"kind": "run_rate", "factor": 0.5, "where": {"segment": "SMB"}}])
    segments = run.frame[run.frame[LEVEL] == "segment"].set_index(KEY)
    assert segments.loc["smb", "expected_delta"] < 0  # names match in any case
    assert segments.loc["enterprise", "expected_delta"] == 0


def test_losing_customers_removes_their_deals_and_run_rate(
        company: tuple[Path, Tables]) -> None:
    tables = company[1]
    deals = deal_inputs(tables, AS_OF)
    victim = str(deals["customer_id"].iloc[0])
    run = _run(tables, [{"kind": "lose", "where": {"customer_id": [victim]}}])
    base, shocked = run.simulations
    assert shocked.expected_pipeline.sum() < base.expected_pipeline.sum()
    assert shocked.expected_run_rate.sum() <= base.expected_run_rate.sum()
    assert "1 customers" in " ".join(run.notes)
    nothing = _run(tables, [{"kind": "lose", "where": {"segment": "Martians"}}])
    assert (nothing.frame["expected_delta"] == 0).all()
    assert "segment: the data has enterprise, mid-market, smb" in " ".join(nothing.notes)


def test_churn_shock_without_scores_uses_the_observed_rate(
        company: tuple[Path, Tables]) -> None:
    run = _run(company[1], [{"kind": "churn", "factor": 2.0}])
    company_row = run.frame[run.frame[LEVEL] == "company"].iloc[0]
    assert company_row["expected_delta"] < 0
    assert "observed 180-day churn rate" in " ".join(run.notes)


def test_churn_shock_with_scores_uses_them(company: tuple[Path, Tables]) -> None:
    tables = company[1]
    ids = tables.customers["customer_id"].astype(str)
    scores = pd.DataFrame({"customer_id": ids, "churn_probability": 0.1})
    calm = _run(tables, [], churn=scores)
    run = _run(tables, [{"kind": "churn", "factor": 3.0, "where": {"segment": "enterprise"}}],
               churn=scores)
    np.testing.assert_array_equal(calm.frame["expected_baseline"],
                                  run.frame["expected_baseline"])
    company_row = run.frame[run.frame[LEVEL] == "company"].iloc[0]
    assert company_row["expected_delta"] < 0
    assert "from the churn scores" in " ".join(run.notes)


def test_a_win_rate_above_one_is_capped(company: tuple[Path, Tables]) -> None:
    run = _run(company[1], [{"kind": "win_rate", "factor": 100}])
    base, shocked = run.simulations
    np.testing.assert_allclose(shocked.expected_pipeline, shocked.pipeline_in_period)
    assert shocked.expected_pipeline.sum() > base.expected_pipeline.sum()


def test_scenario_as_of_t_ignores_later_rows(company: tuple[Path, Tables]) -> None:
    full = company[1]
    cut = AS_OF + pd.Timedelta(days=20)
    base = export_at(full, AS_OF)
    frames = dict(base.frames)
    for name, column in ((ORDERS, ORDER_DATE), (OPPORTUNITIES, CREATED_AT)):
        later = full.frames[name].loc[(full.frames[name][column] >= AS_OF)
                                      & (full.frames[name][column] < cut)]
        assert len(later) > 0
        frames[name] = pd.concat([base.frames[name], later], ignore_index=True)
    appended = Tables(frames, base.source, base.derived)
    shocks = load_scenario("recession")
    runs = [run_scenario_case(t, PERIOD, AS_OF, shocks, draws=500, seed=1, models={}).frame
            for t in (base, appended)]
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_without_opportunities_only_run_rate_shocks_move(company: tuple[Path, Tables]) -> None:
    tables = company[1]
    frames = {k: v for k, v in tables.frames.items()
              if k not in (OPPORTUNITIES, "stage_history") and k not in tables.derived}
    bare = Tables(frames)
    result = run_scenario_case(bare, PERIOD, AS_OF, load_scenario("budget-freeze"),
                               draws=500, seed=1, models={})
    assert (result.frame["expected_delta"] == 0).all()
    notes = " ".join(result.notes)
    assert "the data has no opportunities" in notes and "only run_rate, churn and lose" in notes


# --- the command ------------------------------------------------------------------------------


@pytest.fixture()
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUOTACAST_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def test_cli_lists_the_library(cli_env: Path) -> None:
    result = runner.invoke(app, ["scenario", "--list"])
    assert result.exit_code == 0, result.stderr
    assert "budget-freeze: budget freeze" in result.stdout


def test_cli_runs_a_library_scenario(cli_env: Path, company: tuple[Path, Tables]) -> None:
    out = cli_env / "scenario.csv"
    result = runner.invoke(app, ["scenario", "--data", str(company[0]), "--as-of",
                                 str(AS_OF.date()), "--scenario", "budget-freeze",
                                 "--draws", "500", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(out)
    for column in COMPARED_COLUMNS:
        assert {f"{column}_baseline", f"{column}_scenario"} <= set(frame.columns)
    assert {"expected_delta", "p_attain_delta"} <= set(frame.columns)
    assert "company expected" in result.stderr and "most hurt nodes" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_draws_the_change_per_node(cli_env: Path, company: tuple[Path, Tables]) -> None:
    picture = cli_env / "scenario.png"
    result = runner.invoke(app, ["scenario", "--data", str(company[0]), "--as-of",
                                 str(AS_OF.date()), "--scenario", "recession", "--draws", "300",
                                 "--plot", str(picture)])
    assert result.exit_code == 0, result.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = runner.invoke(app, ["scenario", "--data", str(company[0]), "--scenario",
                                "recession", "--plot", str(cli_env / "scenario.gif")])
    assert wrong.exit_code == 2


def test_cli_bad_scenario_file_exits_2(cli_env: Path, company: tuple[Path, Tables]) -> None:
    bad = cli_env / "bad.yaml"
    bad.write_text("name: bad\nshocks:\n  - {kind: win_rate, factor: -1}\n")
    out = cli_env / "x.csv"
    result = runner.invoke(app, ["scenario", "--data", str(company[0]), "--scenario",
                                 str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert f"{bad}: shocks[0].factor: Input should be greater than or equal to 0" in (
        result.stderr)
    assert not out.exists()
    missing = runner.invoke(app, ["scenario", "--data", str(company[0])])
    assert missing.exit_code == 2


# --- the service ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str,
                                                                                          str]]]:
    root = tmp_path_factory.mktemp("scenario-api")
    made = make_company(root)
    uri = fresh_registry(root)
    with pytest.MonkeyPatch.context() as patch:
        quiet_registry(patch)
        register_stubs(uri, made.tables)
        app_ = create_app(settings_for(root, made.data, uri), quiet_options(draws=500))
        if not any(getattr(r, "path", "") == "/v1/scenario" for r in app_.routes):
            app_.include_router(scenario_routes.router)  # until ROUTERS lists it
        with TestClient(app_) as test_client:
            state = app_.state.quotacast
            keys = {role: state.keys.create(role)[1]
                    for role in ("admin", "planner", "sales_ops")}
            keys["account_manager"] = state.keys.create("account_manager", made.manager)[1]
            yield test_client, keys


def _post(client: Any, body: Any, who: str = "planner") -> Any:
    test_client, keys = client
    return test_client.post("/v1/scenario", json=body, headers={"X-API-Key": keys[who]})


def test_api_runs_a_library_scenario_for_planning_roles(client: Any) -> None:
    body = {"scenario": "budget-freeze", "as_of": str(AS_OF.date())}
    answer = _post(client, body)
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    assert payload["name"] == "budget freeze" and payload["period"] == PERIOD
    company_node = next(n for n in payload["nodes"] if n["level"] == "company")
    assert company_node["expected_scenario"] < company_node["expected_baseline"]
    assert _post(client, body, "account_manager").status_code == 403
    test_client, keys = client
    listed = test_client.get("/v1/scenarios", headers={"X-API-Key": keys["sales_ops"]})
    assert listed.status_code == 200
    assert "recession" in {entry["name"] for entry in listed.json()}


def test_api_given_scenario_without_shocks_is_the_baseline(client: Any) -> None:
    answer = _post(client, {"scenario": {"name": "calm", "shocks": []},
                            "as_of": str(AS_OF.date())})
    assert answer.status_code == 200, answer.text
    for node in answer.json()["nodes"]:
        assert node["expected_baseline"] == node["expected_scenario"]
        assert node["expected_delta"] == 0


@pytest.mark.parametrize(("body", "code"), [
    ({"scenario": "no-such-scenario"}, 404),
    ({"scenario": {"name": "x", "shocks": [{"kind": "win_rate", "factor": -1}]}}, 422),
    ({"scenario": {"name": "x", "shocks": [{"kind": "meteor"}]}}, 422),
    ({"scenario": "budget-freeze", "surprise": 1}, 422),
    ({"scenario": "../../etc/passwd"}, 422),
    ({"scenario": {"name": "x", "shocks": [{"kind": "win_rate", "factor": 0.5,
                                            "where": {"stage": "Nope"}}]}}, 404),
])
def test_api_refuses_bad_scenarios(client: Any, body: dict[str, Any], code: int) -> None:
    answer = _post(client, {**body, "as_of": str(AS_OF.date())})
    assert answer.status_code == code, answer.text


# --- real data --------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_budget_freeze_on_a_real_crm_lowers_only_nodes_with_pipeline(real_data: Any) -> None:
    """crm-sales cut to 6 months: open deals carry close dates, stages have no history."""
    tables = load_tables(str(real_data("crm-sales", 6)))
    as_of = pd.Timestamp("2017-04-20")
    result = run_scenario_case(tables, "2017Q2", as_of, load_scenario("budget-freeze"),
                               draws=500, seed=1, models={})
    frame = result.frame
    company_row = frame[frame[LEVEL] == "company"].iloc[0]
    assert company_row["expected_delta"] < 0
    assert (frame["expected_delta"] <= 1e-6).all()
    notes = " ".join(result.notes)
    assert "ordered by their average age" in notes and "open deals moved" in notes


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["online-retail", "superstore"])
def test_without_opportunities_recession_moves_only_through_run_rate_and_churn(
        real_data: Any, name: str) -> None:
    tables = load_tables(str(real_data(name, 6)))
    as_of = pd.Timestamp(tables.orders[ORDER_DATE].max()) + pd.Timedelta(days=1)
    period = f"{as_of.year}Q{as_of.quarter}"
    result = run_scenario_case(tables, period, as_of, load_scenario("recession"), draws=300,
                               seed=1, models={})
    company_row = result.frame[result.frame[LEVEL] == "company"].iloc[0]
    assert company_row["expected_delta"] < 0
    notes = " ".join(result.notes)
    assert "no open deal to change (the data has no opportunities)" in notes
