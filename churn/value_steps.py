"""The steps behind `churn train|backtest propensity` and `churn train|backtest value`.

Kept apart from the CLI modules so that `churn --help` starts without MLflow and LightGBM.
"""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from churn.model_steps import METRIC_LABELS
from training.backtest import BacktestResult
from training.config import ChurnTrainConfig, ValueTrainConfig
from training.propensity import SCORER_LABELS as PROPENSITY_LABELS
from training.propensity import backtest_propensity, train_propensity
from training.tracking import log_churn_run, metrics_table
from training.train_churn import ChurnTrainResult
from training.train_value import ValueTrainResult, backtest_value, train_value
from training.train_value import metrics_table as value_table
from training.value_tracking import log_value_run

__all__ = ["log_churn_run", "log_value_run"]

VALUE_LABELS = {"spearman": "Spearman", "normalised_gini": "normalised Gini",
                "decile_mape": "decile MAPE", "total_error": "total forecast error",
                "mae": "mean absolute error"}


def _steps(progress: Progress, what: str):
    bar = progress
    task = bar.add_task(what, total=None)
    return lambda text: bar.update(task, description=text)


def train_propensity_model(cfg: ChurnTrainConfig, horizon_days: int,
                           progress: Progress) -> ChurnTrainResult:
    with progress:
        return train_propensity(cfg, horizon_days, on_step=_steps(progress, "Training"))


def train_value_model(cfg: ValueTrainConfig, progress: Progress) -> ValueTrainResult:
    with progress:
        return train_value(cfg, on_step=_steps(progress, "Training"))


def backtest_propensity_model(cfg: ChurnTrainConfig, horizon_days: int, origins: tuple,
                              progress: Progress) -> BacktestResult:
    with progress:
        return backtest_propensity(cfg, horizon_days, origins,
                                   on_step=_steps(progress, "Backtest"))


def backtest_value_model(cfg: ValueTrainConfig, origins: tuple,
                         progress: Progress) -> pd.DataFrame:
    with progress:
        return backtest_value(cfg, origins, on_step=_steps(progress, "Backtest"))


def print_propensity(result: ChurnTrainResult, console: Console) -> None:
    """The model beside its baselines on the purchase label."""
    horizon = result.model.label.horizon_days
    table = Table(title=f"Propensity (an order within {horizon} days) vs baselines on the test "
                        f"cutoff {result.test_cutoff} ({len(result.test):,} customers with a "
                        f"past order, {result.outcome().mean():.1%} ordered)",
                  title_justify="left")
    metrics = metrics_table(result)
    table.add_column("metric")
    for name in metrics.index:
        table.add_column(PROPENSITY_LABELS.get(name, name), justify="right")
    for column in ("roc_auc", "pr_auc", "ece", "log_loss", "top_decile_lift"):
        table.add_row(METRIC_LABELS[column],
                      *("-" if pd.isna(v) else f"{v:.3f}" for v in metrics[column]))
    console.print(table)


def print_value(result: ValueTrainResult, console: Console) -> None:
    """The spend forms compared on the validation cutoff, then the model beside its
    baselines on the test cutoff."""
    plan = result.plan
    forms = Table(title=f"Spend forms on the validation cutoff {plan.validation}",
                  title_justify="left")
    forms.add_column("form")
    for label in VALUE_LABELS.values():
        forms.add_column(label, justify="right")
    for form, m in result.validation.items():
        mark = " <- kept" if form == result.model.form else ""
        forms.add_row(form + mark, *(f"{getattr(m, k):.3f}" for k in VALUE_LABELS))
    console.print(forms)
    table = Table(title=f"Value ({result.model.form}, spend over {result.model.horizon_days} "
                        f"days) vs baselines on the test cutoff {plan.test} "
                        f"({len(result.test):,} customers with a past order)",
                  title_justify="left")
    metrics = value_table(result.metrics)
    table.add_column("metric")
    for name in metrics.index:
        table.add_column(name, justify="right")
    for column, label in VALUE_LABELS.items():
        table.add_row(label, *("-" if pd.isna(v) else f"{v:.3f}" for v in metrics[column]))
    console.print(table)


def print_value_backtest(rows: pd.DataFrame, console: Console) -> None:
    table = Table(title="Rolling-origin backtest of the value model", title_justify="left")
    for column in ("origin", "scorer", "customers", *VALUE_LABELS.values()):
        table.add_column(column, justify="left" if column in ("origin", "scorer") else "right")
    for _, row in rows.iterrows():
        table.add_row(str(row["origin"]), row["scorer"], f"{row['customers']:,}",
                      *(f"{row[k]:.3f}" for k in VALUE_LABELS))
    console.print(table)
