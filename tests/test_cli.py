"""The command line end to end: imports and the demo, through typer's runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.io import load_tables

FIXTURES = Path(__file__).parent / "fixtures" / "importers"
runner = CliRunner()


@pytest.mark.parametrize(
    ("kind", "folder"),
    [("online-retail", "online-retail"), ("crm-sales", "crm-sales"), ("superstore", "superstore")],
)
def test_import_writes_a_valid_data_directory(kind: str, folder: str, tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = runner.invoke(app, ["import", kind, str(FIXTURES / folder), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    tables = load_tables(out)
    assert len(tables.orders) > 0
    check = runner.invoke(app, ["validate", "--data", str(out)])
    assert check.exit_code == 0


def test_import_parquet_format(tmp_path: Path) -> None:
    out = tmp_path / "data"
    args = ["import", "crm-sales", str(FIXTURES / "crm-sales"), "--out", str(out)]
    result = runner.invoke(app, [*args, "--format", "parquet"])
    assert result.exit_code == 0, result.stderr
    assert (out / "opportunities.parquet").is_file()
    assert len(load_tables(out)["opportunities"]) > 0


def test_import_unknown_kind_or_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "data"
    unknown = runner.invoke(app, ["import", "salesforce", str(tmp_path), "--out", str(out)])
    assert unknown.exit_code == 2 and "unknown kind" in unknown.stderr
    missing = runner.invoke(app, ["import", "superstore", str(tmp_path / "x"), "--out", str(out)])
    assert missing.exit_code == 2
    assert not out.exists()
