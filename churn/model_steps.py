"""The model steps behind `churn train`, `churn promote` and the demo.

Kept apart from the CLI module so that `churn --help` and the data commands start without
importing MLflow and LightGBM.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psycopg
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from features.engines import Engine
from features.errors import ChurnError
from features.labels import LABEL
from models.drift import psi_band
from models.registry import CHURN_MODEL_NAME
from models.store import now_ms
from operations import runlog
from operations.monitor import MonitorConfig, MonitorReport, checks_table, log_monitor_run, monitor
from operations.retrain import Retrained, retrain
from serving.batch import Destination, ScoreJobConfig, ScoreJobResult, check_destination, run_score
from serving.champion import DataCheck, load_champion
from serving.policy import DEFAULT_POLICY, SegmentPolicy
from training.backtest import METRICS, BacktestResult, run_backtest
from training.config import ChurnTrainConfig
from training.promote import PromotionError, promote
from training.tracking import LoggedRun, log_backtest_run, log_churn_run, metrics_table
from training.train_churn import SCORER_LABELS, ChurnTrainResult, train_churn

__all__ = [
    "CHURN_MODEL_NAME",
    "DEFAULT_POLICY",
    "ChurnTrainConfig",
    "MonitorConfig",
    "PromotionError",
    "ScoreJobConfig",
    "SegmentPolicy",
    "log_backtest_run",
    "log_churn_run",
    "now_ms",
    "promote",
]

# Mistakes a user can fix: reported as one line, never as a traceback.
USER_ERRORS = (ChurnError, MlflowException, duckdb.Error, psycopg.Error, OSError)

METRIC_LABELS = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "log_loss": "log loss",
                 "brier": "Brier", "ece": "ECE",
                 "top_decile_lift": "lift top 10%",
                 "top_decile_capture": "capture top 10%"}


PALIVE_NOTE = ("BG/NBD P(alive) is 1 for every one-time buyer by construction, so it ranks "
               "them all as least likely to churn; BG/NBD E(buys) is the fairer BG/NBD "
               "baseline.")


def train(cfg: ChurnTrainConfig, progress: Progress) -> ChurnTrainResult:
    """Train with a progress line naming the current step."""
    with progress as bar:
        task = bar.add_task("Training", total=None)
        return train_churn(cfg, on_step=lambda text: bar.update(task, description=text))


def print_metrics(result: ChurnTrainResult, console: Console) -> None:
    """The model-vs-baselines table: one column per scorer, one row per metric."""
    table = Table(title=f"Churn model vs baselines on the test cutoff {result.test_cutoff} "
                        f"({len(result.test):,} customers, {result.test[LABEL].mean():.1%} "
                        f"churned; neither training nor validation saw it)",
                  title_justify="left")
    metrics = metrics_table(result)
    table.add_column("metric")
    for name in metrics.index:
        table.add_column(SCORER_LABELS.get(name, name), justify="right")
    for column, label in METRIC_LABELS.items():
        table.add_row(label, *("-" if pd.isna(v) else f"{v:.3f}" for v in metrics[column]))
    table.add_row("verdict", *metrics["verdict"], end_section=True)
    console.print(table)
    plan = result.plan
    for notice in plan.notices:
        console.print(f"note: {notice}", highlight=False, soft_wrap=True)
    console.print(
        f"Trained on {len(plan.train)} cutoffs ({plan.train[0]} .. {plan.train[-1]}); "
        f"{result.trees} trees and {result.model.calibrator.method} calibration chosen on the "
        f"validation cutoff {plan.validation} (ROC AUC {result.validation_metrics.roc_auc:.3f}); "
        f"then refitted on the training and validation cutoffs and tested on {plan.test}.",
        highlight=False, soft_wrap=True)
    console.print(PALIVE_NOTE, highlight=False, soft_wrap=True)


def backtest(cfg: ChurnTrainConfig, origins: tuple, progress: Progress,
             engine: Engine = Engine.duckdb) -> BacktestResult:
    """Run the backtest with a progress line naming the origin and step."""
    with progress as bar:
        task = bar.add_task("Backtest", total=None)
        return run_backtest(cfg, origins, on_step=lambda text: bar.update(task, description=text),
                            engine=engine)


def _fmt(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.3f}"


def print_backtest(result: BacktestResult, console: Console, rate: str = "churned",
                   labels: dict[str, str] = SCORER_LABELS) -> None:
    """Per origin: customers, the label's rate and each scorer's metrics; then mean +- sd."""
    table = Table(title="Rolling-origin backtest: each origin's base, scored by a model trained "
                        "only on what was known then", title_justify="left")
    for column in ("origin", "customers", rate, "scorer"):
        table.add_column(column, justify="right" if column in ("customers", rate)
                         else "left")
    for metric in METRICS:
        table.add_column(METRIC_LABELS[metric], justify="right")
    for origin, part in result.per_origin.groupby("origin", sort=True):
        for i, (_, row) in enumerate(part.iterrows()):
            first = i == 0
            table.add_row(str(origin) if first else "",
                          f"{row['customers']:,}" if first else "",
                          f"{row['churn_rate']:.1%}" if first else "",
                          labels.get(row["scorer"], row["scorer"]),
                          *(_fmt(row[m]) for m in METRICS), end_section=i == len(part) - 1)
    console.print(table)
    summary = result.summary()
    overall = Table(title=f"Mean +- sd over {len(result.origins)} origins", title_justify="left")
    overall.add_column("scorer")
    for metric in METRICS:
        overall.add_column(METRIC_LABELS[metric], justify="right")
    for scorer, row in summary.iterrows():
        overall.add_row(labels.get(str(scorer), str(scorer)), *(
            "-" if pd.isna(row[("mean", m)]) else
            f"{row[('mean', m)]:.3f} +- {0.0 if pd.isna(row[('sd', m)]) else row[('sd', m)]:.3f}"
            for m in METRICS))
    console.print(overall)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)


def where_to_look(uri: str, logged: LoggedRun, console: Console,
                  name: str = CHURN_MODEL_NAME) -> None:
    """Where the run is and how to open it, as a model training experiment (MLflow 3's UI
    opens an experiment as GenAI unless the address asks for machine learning)."""
    page = f"#/experiments/{logged.experiment_id}?workflowType=machine_learning"
    if uri.startswith("sqlite:"):
        ui = (f"mlflow ui --backend-store-uri {uri}, then open "
              f"http://127.0.0.1:5000/{page}")
    else:
        ui = f"open {uri.rstrip('/')}/{page}"
    console.print(f"Run {logged.run_id} registered as {name} v{logged.model_version}. "
                  f"See it with: {ui}", highlight=False, soft_wrap=True)


def score(cfg: ScoreJobConfig, progress: Progress, compiled: bool = True) -> ScoreJobResult:
    """Load the champion and run the batch job with a progress bar over customers."""
    check_destination(cfg.out)  # before the champions load and the data is read
    loaded = load_champion(cfg.model_name, uplift=cfg.uplift and cfg.policy.uses_uplift,
                           uplift_arm=cfg.policy.uplift_arm or None, compiled=compiled,
                           uplift_name=cfg.uplift_model_name,
                           check=DataCheck(cfg.data, cfg.allow_data_mismatch))
    opened: list[str] = []
    client = runlog.run_log_client(cfg)
    with progress as bar:
        task = bar.add_task(f"Scoring with {loaded.label}", total=None)

        def on_start() -> None:
            # Only once the arguments have held: a mistake in them leaves no run behind.
            if client is not None:
                opened.append(runlog.open_run(cfg, loaded, client))

        def on_rows(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def on_commit(destination: Destination, result: ScoreJobResult) -> None:
            if opened:
                runlog.record_in_destination(opened[0], cfg, loaded, destination, result)

        try:
            result = run_score(cfg, loaded, on_rows=on_rows, on_commit=on_commit,
                               on_start=on_start)
        except BaseException:
            if opened:
                runlog.fail_run(opened[0], client)
            raise
    if opened:
        runlog.close_run(opened[0], cfg, loaded, result, client)
        result.run_id = opened[0]
    return result


def print_segments(result: ScoreJobResult, console: Console) -> None:
    """Customers, churn and value at risk per segment (and any warning about the data)."""
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
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
    if result.run_id:
        console.print(f"Recorded as scoring run {result.run_id} (MLflow experiment "
                      f"'{runlog.SCORING_EXPERIMENT}'); `churn monitor` checks it once its "
                      f"outcomes are in.", highlight=False, soft_wrap=True)


def run_monitor(cfg: MonitorConfig, progress: Progress) -> MonitorReport:
    """Monitor with a progress line naming the run being checked, then log the run."""
    with progress as bar:
        task = bar.add_task("Monitoring", total=None)
        report = monitor(cfg, on_step=lambda text: bar.update(task, description=text))
        bar.update(task, description="logging the monitoring run")
        log_monitor_run(cfg, report)
    return report


VERDICT_STYLE = {"healthy": "bold green", "unchecked": "bold blue", "drifted": "bold cyan",
                 "degrading": "bold yellow", "retrain": "bold red"}


def print_monitor(report: MonitorReport, console: Console) -> None:
    """Matured runs, the drift table, and the verdict with its reasons."""
    checks = checks_table(report)
    if len(checks):
        table = Table(title="Scoring runs whose outcomes are in: scores against what customers "
                            "did", title_justify="left")
        segments = [c for c in checks.columns if c.startswith("churn_") and c != "churn_rate"]
        for column in ("as-of", "model", "customers", "churned", "ROC AUC", "test ROC AUC",
                       "ECE", "lift top 10%", *[f"churn {c[6:]}" for c in segments]):
            table.add_column(column, justify="left" if column in ("as-of", "model") else "right")
        for _, row in checks.iterrows():
            table.add_row(str(row["as_of"]), row["model"], f"{row['customers']:,}",
                          f"{row['churn_rate']:.1%}", _fmt(row["roc_auc"]),
                          _fmt(row["test_roc_auc"]), _fmt(row["ece"]), _fmt(row["lift_top_10"]),
                          *("-" if pd.isna(row[c]) else f"{row[c]:.1%}" for c in segments))
        console.print(table)
        last = checks.iloc[-1]
        at_risk, active = last.get("churn_at_risk", np.nan), last.get("churn_active", np.nan)
        if pd.notna(at_risk) and pd.notna(active) and active > 0:
            console.print(f"On the scores of {last['as_of']}, at_risk customers churned "
                          f"{at_risk / active:.1f} times as often as active ones "
                          f"({at_risk:.1%} against {active:.1%}).", highlight=False)
    else:
        console.print("No scoring run's outcomes are in yet (its as-of plus the label horizon "
                      "is after --as-of or the data's end).", highlight=False, soft_wrap=True)
    for line in report.skipped:
        console.print(f"[bold yellow]skipped:[/] {line}", highlight=False, soft_wrap=True)
    if report.drift_run is not None and len(report.drift):
        psi = report.drift["psi"]
        drift = Table(title=f"Drift of the scoring run of {report.drift_run.as_of} against the "
                            f"training data of v{report.drift_run.version} (PSI, largest first; "
                            f"{int((psi >= 0.1).sum())} of {len(psi)} columns at 0.1 or more)",
                      title_justify="left")
        for column in ("column", "PSI", "band", "between training cutoffs", "moved"):
            drift.add_column(column, justify="left" if column in ("column", "band") else "right")
        for name, row in report.drift.head(12).iterrows():
            drift.add_row(name, _fmt(row["psi"]), psi_band(row["psi"]), _fmt(row["spread"]),
                          "yes" if row["moved"] else ("calendar" if row.get("calendar") else ""))
        console.print(drift)
        console.print("A column has moved when its PSI is 0.25 or more and at least 0.1 beyond the "
                      "largest PSI of one training cutoff against all of them; columns that "
                      "count days since something move with the calendar and never count as "
                      "moved. Drift alone, with quality holding, is 'drifted', not "
                      "'degrading'.", highlight=False, soft_wrap=True)
    elif report.drift_run is not None:
        console.print("No drift measured: the model or its scoring runs hold no profile "
                      "(trained or scored by an earlier version).", highlight=False,
                      soft_wrap=True)
    style = VERDICT_STYLE[report.verdict]
    console.print(f"[{style}]verdict: {report.verdict}[/] (exit {report.exit_code})",
                  highlight=False)
    for reason in report.reasons:
        console.print(f"  - {reason}", highlight=False, soft_wrap=True)
    if report.run_id:
        console.print(f"Logged as monitoring run {report.run_id}.", highlight=False)


def run_retrain(data: Path, name: str, experiment: str, on_bad_rows: object,
                progress: Progress) -> Retrained:
    """Retrain with a progress line naming the current step."""
    with progress as bar:
        task = bar.add_task("Retraining", total=None)
        return retrain(data, name, experiment, on_bad_rows,  # type: ignore[arg-type]
                       on_step=lambda text: bar.update(task, description=text))
