"""The features job: contract tables in a folder -> validated -> point-in-time feature file."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from features.contract import ContractError
from features.engines import Engine
from features.errors import setting
from features.point_in_time import connect, feature_query, write_features
from features.registry import FEATURES
from features.sources import find_tables
from features.tables import DEFAULT_REJECTS
from features.validation import (
    OnBadRows,
    Progress,
    TableReport,
    ValidatedTable,
    validate_tables,
)

OUTPUT_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class FeaturesJobConfig:
    """Everything the features job needs, built from CLI flags or MLproject parameters."""

    data: Path
    as_of: date
    out: Path
    on_bad_rows: OnBadRows = OnBadRows.stop
    rejects: Path | None = None
    memory_limit: str | None = "4GB"
    threads: int | None = None
    engine: Engine = Engine.duckdb


@dataclass
class FeaturesJobResult:
    """What the job wrote and what validation found."""

    rows: int
    feature_count: int
    seconds: float
    reports: list[TableReport] = field(default_factory=list)


def check_output_path(out: Path) -> None:
    """Fail before any work if the output cannot be written where asked."""
    if out.suffix not in OUTPUT_SUFFIXES:
        raise ContractError(f"{setting('out')} {out}: use a .parquet or .csv file name")
    if out.exists() and out.is_dir():
        raise ContractError(f"{setting('out')} {out}: is a folder; give a file name")


def run_features(cfg: FeaturesJobConfig, progress: Progress | None = None,
                 build_progress: Callable[[float], None] | None = None) -> FeaturesJobResult:
    """Validate the tables in ``cfg.data`` and write features as of ``cfg.as_of`` to ``cfg.out``.

    Nothing is written unless validation passes (or bad rows are quarantined); the output
    file is replaced atomically, so a failed run leaves an earlier one intact. On Spark
    (``cfg.engine``) the output is a folder of Parquet files, replaced the same way.
    """
    if cfg.engine is Engine.spark:
        # Spark is an optional extra: imported only when asked for.
        from features.spark_job import run_features_spark  # noqa: PLC0415
        from features.spark_session import spark_job_errors  # noqa: PLC0415

        with spark_job_errors():
            return run_features_spark(cfg, progress)
    started = time.perf_counter()
    check_output_path(cfg.out)
    rejects = cfg.rejects or cfg.out.parent / f"{cfg.out.stem}.rejects"
    with _validated(cfg, rejects, progress) as (con, validated):
        rows = write_features(con, {name: v.relation for name, v in validated.items()},
                              cfg.out, cfg.as_of, build_progress)
    return FeaturesJobResult(rows, len(FEATURES), time.perf_counter() - started,
                             [v.report for v in validated.values()])


def features_frame(cfg: FeaturesJobConfig, progress: Progress | None = None) -> pd.DataFrame:
    """The features job's table as a DataFrame (``cfg.out`` is not written; rejected rows, if
    quarantined, go to ``cfg.rejects`` or ./rejects)."""
    with _validated(cfg, cfg.rejects or DEFAULT_REJECTS, progress) as (con, validated):
        query = feature_query({name: v.relation for name, v in validated.items()}, cfg.as_of)
        return con.sql(query).df()


@contextmanager
def _validated(cfg: FeaturesJobConfig, rejects: Path, progress: Progress | None
               ) -> Iterator[tuple[duckdb.DuckDBPyConnection, dict[str, ValidatedTable]]]:
    """A connection holding the folder's tables, validated (bad rows stop or go to
    ``rejects``)."""
    sources = find_tables(cfg.data)
    with tempfile.TemporaryDirectory(prefix="churn-features-") as work:
        work_dir = Path(work)
        with connect(cfg.memory_limit, work_dir / "spill", cfg.threads) as con:
            yield con, validate_tables(con, sources, cfg.on_bad_rows, work_dir, rejects,
                                       progress)
