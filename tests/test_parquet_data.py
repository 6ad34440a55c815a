"""A Parquet data directory (a folder per table, partitioned by year) is read by every command
as a CSV data directory is: the same validated tables, the same problems reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.compute.parquet import write_parquet_dir
from engine.io import BadInput, load_tables, validate_tables, write_data_dir
from engine.schemas import TABLES
from engine.synthetic import generate
from service.cli.app import app


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parquet-data")
    tables, problems = validate_tables(generate("small", seed=5))
    assert not problems
    return {"csv": write_data_dir(generate("small", seed=5), root / "csv"),
            "parquet": write_parquet_dir(tables.frames, root / "parquet")}


def test_parquet_directory_loads_the_same_tables_as_csv(company: dict[str, Path]) -> None:
    assert any(p.name.startswith("year=") for p in (company["parquet"] / "orders").iterdir())
    from_csv, from_parquet = load_tables(company["csv"]), load_tables(company["parquet"])
    assert set(from_csv.frames) == set(from_parquet.frames)
    for name, frame in from_csv.frames.items():
        other = from_parquet.frames[name]
        assert "year" not in other.columns or "year" in frame.columns  # no partition column
        key = [c for c in frame.columns if c in TABLES[name].columns]  # extra columns: as stored
        left = frame[key].sort_values(key, ignore_index=True)
        right = other[key].sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(left, right, check_dtype=False, check_categorical=False)


def test_parquet_cells_are_checked_like_csv_cells(company: dict[str, Path],
                                                  tmp_path: Path) -> None:
    tables = load_tables(company["csv"])
    orders = tables.orders.copy()
    orders.loc[orders.index[0], "amount"] = np.inf
    orders.loc[orders.index[1], "order_date"] = pd.Timestamp("2099-01-01")
    bad = write_parquet_dir({**tables.frames, "orders": orders}, tmp_path / "bad")
    with pytest.raises(BadInput) as caught:
        load_tables(bad)
    text = "\n".join(map(str, caught.value.problems))
    assert "amount: not a finite number (inf)" in text
    assert "order_date: event dated in the future" in text and "(2099-01-01)" in text
    result = CliRunner().invoke(app, ["validate", "--data", str(bad)])
    assert result.exit_code == 2


def test_feasibility_reads_a_parquet_directory(company: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTACAST_HOME", str(tmp_path))
    runs = {}
    for kind in ("csv", "parquet"):
        out = tmp_path / f"{kind}.csv"
        result = CliRunner().invoke(app, ["feasibility", "--data", str(company[kind]),
                                          "--all-nodes", "--draws", "500", "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[kind] = pd.read_csv(out)
    pd.testing.assert_frame_equal(runs["csv"], runs["parquet"])


def test_warnings_read_a_parquet_directory_as_the_loader_reads_csv(
        company: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every column the file holds reaches the metrics (a stage change's close_date, a
    target's tier): the same alerts from either directory."""
    from service.usecases.alerts import warning_tables

    csv, parquet = warning_tables(str(company["csv"])), warning_tables(str(company["parquet"]))
    for name, frame in csv.frames.items():
        assert set(parquet.frames[name].columns) == set(frame.columns), name
    runs = {}
    for kind in ("csv", "parquet"):
        monkeypatch.setenv("QUOTACAST_HOME", str(tmp_path / kind))
        out = tmp_path / f"{kind}-alerts.csv"
        result = CliRunner().invoke(app, ["warnings", "evaluate", "--data", str(company[kind]),
                                          "--no-deliver", "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[kind] = pd.read_csv(out).sort_values(["rule", "labels"], ignore_index=True)
    assert len(runs["csv"]) > 0
    pd.testing.assert_frame_equal(runs["csv"], runs["parquet"])


@pytest.mark.parametrize("bad_cell", ["inf amount", "order in 2099"])
def test_engine_reads_of_a_parquet_directory_refuse_what_the_loader_refuses(
        company: dict[str, Path], tmp_path: Path, bad_cell: str) -> None:
    """``--engine pandas`` reads a Parquet directory pruned, past the loader; a cell the loader
    would refuse still stops it with every problem and its line (exit 2), never an answer
    computed from it (an order dated 2099 would move the default as-of to 2100)."""
    tables = load_tables(company["csv"])
    orders = tables.orders.copy()
    if bad_cell == "inf amount":
        orders.loc[orders.index[3], "amount"] = np.inf
        expected = "amount: not a finite number (inf)"
    else:
        orders.loc[orders.index[3], "order_date"] = pd.Timestamp("2099-01-01")
        expected = "order_date: event dated in the future"
    bad = write_parquet_dir({**tables.frames, "orders": orders}, tmp_path / "bad")
    out = tmp_path / "features.csv"
    result = CliRunner().invoke(app, ["features", "--data", str(bad), "--engine", "pandas",
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "orders:" in result.output
    assert not out.exists()

