"""Rolling-origin backtest of the churn model: at each origin, train with only what was known
then, score the base at the origin, wait for the horizon, measure.

Each origin is the test cutoff of one ``train churn`` run with the same configuration: its
validation and training cutoffs lie a horizon and more before it, so every label the model
learns from has matured by the origin. The model and every baseline are measured on the same
customers, the base at the origin, against what they did in the horizon that followed.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import pandas as pd

from features.cores import job_threads
from features.engines import Engine
from features.errors import setting
from features.point_in_time import connect
from features.tables import LoadedTables, load_tables
from features.validation import Progress
from training.config import ChurnTrainConfig
from training.cutoffs import CutoffError
from training.train_churn import ChurnTrainResult, train_on_tables

METRICS = ("roc_auc", "pr_auc", "log_loss", "ece", "top_decile_lift")


@dataclass
class BacktestResult:
    """Per origin and scorer, the metrics on the base at the origin; and how each run went."""

    per_origin: pd.DataFrame
    origins: list[date]
    notes: list[str]
    # The MLflow run (``training.tracking.LoggedRun``) when the Python API logged one.
    run: object | None = None

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over origins of each scorer's metrics."""
        grouped = self.per_origin.groupby("scorer", sort=False)[list(METRICS)]
        mean, spread = grouped.mean(), grouped.std(ddof=1)
        return pd.concat({"mean": mean, "sd": spread}, axis=1)


def _check_origins(origins: tuple[date, ...]) -> list[date]:
    if not origins:
        raise CutoffError(f"{setting('origins')}: give at least one date")
    return sorted(set(origins))


@contextmanager
def _tables(cfg: ChurnTrainConfig, engine: Engine, progress: Progress | None
            ) -> Iterator[tuple[object, LoadedTables]]:
    """The validated tables, and a connection that runs the feature and label queries on
    them: DuckDB's, or Spark's (each query transpiled, its rows handed back the same way)."""
    if engine is Engine.spark:
        # Spark is an optional extra: imported only when asked for.
        from features.spark_session import spark_session  # noqa: PLC0415
        from features.spark_tables import SparkConnection  # noqa: PLC0415
        from features.spark_tables import load_tables as load_on_spark  # noqa: PLC0415

        spark = spark_session()
        yield SparkConnection(spark), load_on_spark(spark, cfg.data, cfg.on_bad_rows,
                                                    progress=progress)
        return
    with tempfile.TemporaryDirectory(prefix="churn-backtest-") as work, \
            connect(cfg.memory_limit, Path(work) / "spill", cfg.threads) as con:
        yield con, load_tables(con, cfg.data, Path(work), cfg.on_bad_rows, progress=progress)


def run_backtest(cfg: ChurnTrainConfig, origins: tuple[date, ...],
                 progress: Progress | None = None,
                 on_step: Callable[[str], None] | None = None,
                 report: Callable[[ChurnTrainResult], ChurnTrainResult] | None = None,
                 engine: Engine = Engine.duckdb) -> BacktestResult:
    """Train and test once per origin (the origin as test cutoff), on tables loaded once.

    ``report`` turns each origin's result into what is reported (the propensity model's
    purchase framing, say). With ``engine`` Spark, the features and labels of every cutoff
    are built on Spark and only they come back to train on."""
    step = on_step or (lambda _: None)
    ordered = _check_origins(origins)
    if cfg.cutoffs or cfg.validation_cutoff or cfg.test_cutoff:
        raise CutoffError("a backtest places the cutoffs itself at each origin: give a count "
                          f"of training cutoffs ({setting('cutoffs')} N), not dates")
    rows, notes = [], []
    cfg = replace(cfg, threads=job_threads(cfg.threads))
    with _tables(cfg, engine, progress) as (con, loaded):
        for origin in ordered:
            at = dataclasses.replace(cfg, test_cutoff=origin)
            result = train_on_tables(at, con, loaded,
                                     on_step=lambda text, o=origin: step(f"origin {o}: {text}"))
            if report:
                result = report(result)
            plan = result.plan
            notes.extend(f"origin {origin}: {n}" for n in plan.notices)
            for scorer, m in result.metrics.items():
                rows.append({"origin": origin, "scorer": scorer, "customers": len(result.test),
                             # The rate of the label as reported (churned, or ordered).
                             "churn_rate": float(result.outcome().mean()),
                             "train_cutoffs": f"{plan.train[0]}..{plan.train[-1]}",
                             "validation_cutoff": plan.validation, "trees": result.trees,
                             **{k: getattr(m, k) for k in METRICS}})
    return BacktestResult(pd.DataFrame(rows), ordered, notes)
