"""``quotacast features``: the point-in-time customer feature table, on pandas or Spark.

A thin shell over :func:`service.usecases.scaled.features_on`; ``--engine`` (default: the
``QUOTACAST_ENGINE`` setting) picks where it computes, ``QUOTACAST_SPARK_MASTER`` which Spark.
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from engine.compute import open_engine
from service.cli.common import (
    AsOfOpt,
    DataOpt,
    JsonOpt,
    OutOpt,
    data_source,
    emit,
    engine_failures,
    err,
    fail,
    parse_as_of,
    settings_of,
)

__all__ = ["EngineOpt", "features"]

EngineOpt = Annotated[
    Literal["pandas", "spark"] | None,
    typer.Option("--engine", metavar="pandas|spark",
                 help="Where to compute: pandas (this machine) or spark (QUOTACAST_SPARK_MASTER, "
                      "default local[*]); default QUOTACAST_ENGINE, else pandas. Spark reads "
                      "CSV, Parquet or Delta data directories and SQL databases (PostgreSQL "
                      "through JDBC)."),
]


def features(
    ctx: typer.Context,
    data: DataOpt = None,
    as_of: AsOfOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    engine: EngineOpt = None,
) -> None:
    """Point-in-time customer feature table: one row per customer, rows dated before --as-of."""
    from service.usecases.scaled import features_on

    settings = settings_of(ctx)
    when = parse_as_of(as_of)
    name = engine or settings.engine
    source = data_source(ctx, data)
    where = f"Spark {settings.spark_master}" if name == "spark" else "pandas"
    try:
        with engine_failures(), open_engine(name, settings.spark_master) as compute, \
                err.status(f"computing customer features on {where}"):
            run = features_on(compute, source, when)
    except ValueError as exc:  # the data holds no dates
        fail(str(exc))
    frame = run.frame
    err.print(f"{len(frame):,} customers x {frame.shape[1] - 2} features as of "
              f"{run.as_of.date()} ({name})")
    emit(frame, out, as_json)
