"""``quotacast recalibrate --plot``: the picture of the original beside the recalibrated targets
(service.usecases.recalibration_plot), written without changing the table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.io import write_data_dir
from engine.schemas import KEY, LEVEL, PERIOD
from engine.synthetic import generate
from models.feasibility import RECALIBRATION_COLUMNS
from service.cli.app import app
from service.usecases.recalibration_plot import plot_recalibration, plotted_nodes

runner = CliRunner()
ARGS = ["recalibrate", "--period", "2026Q4", "--draws", "500", "--no-churn"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data_dir(generate("small"), tmp_path_factory.mktemp("recal") / "d")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"QUOTACAST_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "QUOTACAST_DATABASE_URL": f"sqlite:///{tmp_path / 'alerts.db'}"}


def _frame(reps: int) -> pd.DataFrame:
    """A recalibration table: company, two regions, four teams and ``reps`` reps."""
    nodes = ([("company", "all")] + [("region", r) for r in ("North", "South")]
             + [("team", t) for t in ("N1", "N2", "S1", "S2")]
             + [("rep", f"r{i:02d}") for i in range(reps)])
    rows = [{PERIOD: "2026Q4", LEVEL: level, KEY: key, "target": 100.0 + i,
             "recalibrated_target": 100.0 + i + (i % 7) * 10, "p_attain_before": 0.2,
             "p_attain_after": 0.5} for i, (level, key) in enumerate(nodes)]
    return pd.DataFrame(rows, columns=list(RECALIBRATION_COLUMNS))


def test_cli_plot_writes_a_png_and_leaves_the_table_unchanged(
        data: Path, env: dict[str, str], tmp_path: Path) -> None:
    plain, drawn, picture = tmp_path / "plain.csv", tmp_path / "drawn.csv", tmp_path / "r.png"
    without = runner.invoke(app, [*ARGS, "--data", str(data), "--out", str(plain)], env=env)
    assert without.exit_code == 0, without.stderr
    with_plot = runner.invoke(app, [*ARGS, "--data", str(data), "--out", str(drawn),
                                    "--plot", str(picture)], env=env)
    assert with_plot.exit_code == 0, with_plot.stderr
    assert "Traceback" not in with_plot.stderr
    assert f"drew the original and recalibrated targets to {picture}" in with_plot.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 10_000
    assert plain.read_bytes() == drawn.read_bytes()  # --plot changes nothing in the table
    assert not pd.read_csv(drawn).empty


def test_cli_bad_plot_suffix_is_a_usage_error_before_any_work(
        env: dict[str, str], tmp_path: Path) -> None:
    picture = tmp_path / "r.jpg"
    # a data directory that does not exist: reading it would fail otherwise (exit 1)
    result = runner.invoke(app, [*ARGS, "--data", str(tmp_path / "missing"),
                                 "--plot", str(picture)], env=env)
    assert result.exit_code == 2
    assert "--plot" in result.stderr and ".png" in result.stderr
    assert "missing" not in result.stderr
    assert not picture.exists()


def test_plotted_nodes_keeps_the_upper_levels_in_hierarchy_order_and_caps_the_reps() -> None:
    shuffled = _frame(40).sample(frac=1.0, random_state=1)
    shown, left_out = plotted_nodes(shuffled, limit=20)
    assert len(shown) == 20 and left_out == 47 - 20
    levels = shown[LEVEL].tolist()
    assert levels[:7] == ["company", "region", "region", "team", "team", "team", "team"]
    assert set(levels[7:]) == {"rep"}
    frame = _frame(40)
    moved = (frame["recalibrated_target"] - frame["target"]).abs()
    kept = frame[KEY].isin(shown[KEY]) & (frame[LEVEL] == "rep")
    dropped = ~frame[KEY].isin(shown[KEY])
    assert moved[kept].min() >= moved[dropped].max()  # the reps whose target moved most
    in_table = [key for key in shuffled[KEY] if key in set(shown[KEY][7:])]
    assert shown[KEY].tolist()[7:] == in_table  # each level in the table's order
    small, none_left = plotted_nodes(_frame(5))
    assert len(small) == 12 and none_left == 0
    untargeted = _frame(3).assign(target=float("nan"))
    assert plotted_nodes(untargeted)[0].empty


def test_plot_recalibration_writes_svg_and_refuses_an_empty_table(tmp_path: Path) -> None:
    picture = tmp_path / "r.svg"
    plot_recalibration(_frame(30), "2026Q4", pd.Timestamp("2026-11-15"), picture)
    text = picture.read_text(encoding="utf-8")
    assert "<svg" in text
    with pytest.raises(ValueError, match="nothing to draw"):
        plot_recalibration(_frame(2).iloc[0:0], "2026Q4", pd.Timestamp("2026-11-15"),
                           tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
