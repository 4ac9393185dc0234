"""The model steps behind `churn train`, `churn promote` and the demo.

Kept apart from the CLI module so that `churn --help` and the data commands start without
importing MLflow and LightGBM.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import duckdb
import mlflow
import pandas as pd
import psycopg
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from features.contract import ContractError
from serving.batch import ScoreJobConfig, ScoreJobResult, run_score
from serving.champion import NoChampionError, load_champion
from serving.policy import DEFAULT_POLICY, PolicyError, SegmentPolicy
from training.dataset import LABEL
from training.promote import PromotionError, promote
from training.tracking import (
    CHURN_MODEL_NAME,
    LoggedRun,
    default_tracking_uri,
    log_churn_run,
    metrics_table,
)
from training.train_churn import (
    ChurnTrainConfig,
    ChurnTrainResult,
    monthly_cutoffs,
    train_churn,
)
from training.uplift_data import ExperimentError

__all__ = ["CHURN_MODEL_NAME", "DEFAULT_POLICY", "ChurnTrainConfig", "ScoreJobConfig",
           "SegmentPolicy", "log_churn_run", "monthly_cutoffs", "promote"]

# Mistakes a user can fix: reported as one line, never as a traceback.
USER_ERRORS = (ContractError, ExperimentError, PromotionError, NoChampionError, PolicyError,
               MlflowException, duckdb.Error, psycopg.Error, OSError)

SCORER_LABELS = {"model": "model", "recency_rule": "recency rule",
                 "bgnbd_p_alive": "BG/NBD P(alive)", "bgnbd_expected_purchases": "BG/NBD E(buys)"}
METRIC_LABELS = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "log_loss": "log loss",
                 "brier": "Brier", "ece": "ECE",
                 "top_decile_lift": "lift top 10%",
                 "top_decile_capture": "capture top 10%"}


def use_tracking_store() -> str:
    """MLFLOW_TRACKING_URI when set, else the embedded SQLite store in the working folder."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path.cwd())
    mlflow.set_tracking_uri(uri)
    return uri


def train(cfg: ChurnTrainConfig, progress: Progress) -> ChurnTrainResult:
    """Train with a progress line naming the current step."""
    with progress as bar:
        task = bar.add_task("Training", total=None)
        return train_churn(cfg, on_step=lambda text: bar.update(task, description=text))


def print_metrics(result: ChurnTrainResult, console: Console) -> None:
    """The model-vs-baselines table: one column per scorer, one row per metric."""
    table = Table(title=f"Churn model vs baselines on the validation cutoff "
                        f"{result.validation_cutoff} ({len(result.validation):,} customers, "
                        f"{result.validation[LABEL].mean():.1%} churned)", title_justify="left")
    metrics = metrics_table(result)
    table.add_column("metric")
    for name in metrics.index:
        table.add_column(SCORER_LABELS.get(name, name), justify="right")
    for column, label in METRIC_LABELS.items():
        table.add_row(label, *("-" if pd.isna(v) else f"{v:.3f}" for v in metrics[column]))
    table.add_row("verdict", *metrics["verdict"], end_section=True)
    console.print(table)
    console.print(
        f"{result.trees} trees, {result.model.calibrator.method} calibration; trained on "
        f"{len(result.train_cutoffs)} earlier cutoffs, then refitted on all of them.",
        highlight=False, soft_wrap=True)


def where_to_look(uri: str, logged: LoggedRun, console: Console,
                  name: str = CHURN_MODEL_NAME) -> None:
    """Where the run is and how to open it."""
    ui = (f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:")
          else f"open {uri}")
    console.print(f"Run {logged.run_id} registered as {name} v{logged.model_version}. "
                  f"See it with: {ui}", highlight=False, soft_wrap=True)


def score(cfg: ScoreJobConfig, progress: Progress, compiled: bool = True) -> ScoreJobResult:
    """Load the champion and run the batch job with a progress bar over customers."""
    loaded = load_champion(CHURN_MODEL_NAME, uplift=cfg.policy.uses_uplift,
                           uplift_arm=cfg.policy.uplift_arm or None, compiled=compiled)
    with progress as bar:
        task = bar.add_task(f"Scoring with {loaded.label}", total=None)

        def on_rows(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run_score(cfg, loaded, on_rows=on_rows)


def print_segments(result: ScoreJobResult, console: Console) -> None:
    """Customers, churn and value at risk per segment."""
    table = Table(title=f"Segments: {result.rows:,} customers scored -> {result.destination} "
                        f"({result.seconds:.1f} s)", title_justify="left")
    for column in ("segment", "customers", "mean churn probability", "value at risk",
                   "contactable"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for name, row in result.summary.iterrows():
        churn = row["mean_churn_probability"]
        table.add_row(str(name), f"{row['customers']:,.0f}",
                      "-" if pd.isna(churn) else f"{churn:.2f}",
                      f"{row['value_at_risk']:,.0f}", f"{row['contactable']:,.0f}")
    console.print(table)
