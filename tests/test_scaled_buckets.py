"""Per-customer steps on a compute engine run in more buckets when a Parquet data directory is
big (a Spark worker holds one bucket's rows at once): counted from the files' metadata, the same
count on every engine, the same features within rounding."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from engine.compute import DEFAULT_BUCKETS, PandasEngine
from engine.compute.parquet import write_parquet_dir
from engine.io import validate_tables, write_data_dir
from engine.synthetic import generate
from service.usecases import scaled
from service.usecases.scaled import FEATURE_READS, bucket_count, features_on


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("company")
    raw = generate("small", seed=8)
    tables, _ = validate_tables(raw)
    return {"csv": write_data_dir(raw, root / "csv"),
            "parquet": write_parquet_dir(tables.frames, root / "parquet")}


def _rows() -> int:
    tables, _ = validate_tables(generate("small", seed=8))
    return sum(len(tables[r.table]) for r in FEATURE_READS)


def test_small_data_keeps_the_default_buckets(company: dict[str, Path]) -> None:
    assert bucket_count(str(company["csv"]), FEATURE_READS) == DEFAULT_BUCKETS
    assert bucket_count(str(company["parquet"]), FEATURE_READS) == DEFAULT_BUCKETS
    assert bucket_count("sqlite:////nowhere.db", FEATURE_READS) == DEFAULT_BUCKETS


def test_rows_past_the_budget_make_more_buckets(company: dict[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows()
    monkeypatch.setattr(scaled, "ROWS_PER_BUCKET", 1_000)
    count = bucket_count(str(company["parquet"]), FEATURE_READS)
    assert count == -(-rows // 1_000) > DEFAULT_BUCKETS
    more = features_on(PandasEngine(), str(company["parquet"]))
    default = features_on(PandasEngine(), str(company["parquet"]), buckets=DEFAULT_BUCKETS)
    assert len(more.frame) > 400 and more.as_of == default.as_of
    pd.testing.assert_frame_equal(more.frame, default.frame, check_exact=False, rtol=1e-12,
                                  atol=0)
