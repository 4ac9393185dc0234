"""What every command shares: consoles, dates, the MLflow store, one-line errors, progress
and the options several commands take."""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from features.errors import ChurnError
from features.labels import ChurnLabelConfig
from features.validation import OnBadRows
from training.config import DEFAULT_TRAIN_CUTOFFS, ChurnTrainConfig

PIPED_WIDTH = 240


def console_for(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = None if stream.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH
    return Console(stderr=stderr, width=wide, log_path=False)


out_console = console_for()
DEMO_SERVE_HINT = """Serve the champion:  .venv/bin/churn serve --port 3000
Then, from another shell:
  curl -s -X POST localhost:3000/score_history -H 'content-type: application/json' \\
    -d '{"as_of": "2026-01-01", "transactions": [
      {"customer_id": "C1", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80},
      {"customer_id": "C1", "order_id": "o2", "ordered_at": "2025-09-20", "amount": 35}]}'
or open the API page, with a worked example per endpoint: http://127.0.0.1:3000/docs"""
err_console = console_for(stderr=True)


ENGINE_OPTION = typer.Option(
    help="duckdb: this machine. spark: Apache Spark (pip install '.\\[spark]'; local[*] unless "
         "SPARK_REMOTE names a Spark Connect server or SPARK_MASTER / spark.master a cluster). "
         "Both build the same features by the same rules.")


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not an ISO date such as 2026-06-01") from None


def use_store(read_only: bool = False, writes: bool | None = None,
              read_only_hint: str = "") -> str:
    """The MLflow store to use, checked; a store that cannot be used ends the command
    (``read_only_hint`` is added when it is read-only and the command writes)."""
    from models.store import ReadOnlyStoreError, StoreError, use_tracking_store

    try:
        return use_tracking_store(read_only, writes)
    except StoreError as err:
        hint = read_only_hint if isinstance(err, ReadOnlyStoreError) else ""
        fail(one_line(err) + hint)
        raise


def champion_or_fail(name: str) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from models.registry import CHAMPION

    try:
        MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        fail(f"no '{name}' model holds the 'champion' alias in the MLflow store: train one "
             f"with `churn train churn --model-name {name}` and promote it")


def one_line(err: Exception) -> str:
    """A user error in one line (DuckDB's read errors run to twenty), naming settings as the
    command's flags."""
    from features.sources import duckdb_error_line

    if isinstance(err, ChurnError):
        return err.for_command_line()
    return duckdb_error_line(err) if isinstance(err, (duckdb.Error, OSError)) else str(err)


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


class StepLog(Progress):
    """A progress bar that also writes each new step as a line with its time (``--verbose``):
    what a log file or a scheduler's output keeps, where a spinner leaves nothing."""

    def update(self, task_id, **changes) -> None:  # type: ignore[override]
        text = changes.get("description")
        if text and text != self._tasks[task_id].description:
            self.console.log(text, highlight=False)
        super().update(task_id, **changes)

    def add_task(self, description: str, *args, **kwargs):  # type: ignore[override]
        self.console.log(description, highlight=False)
        return super().add_task(description, *args, **kwargs)


# Set by `churn --verbose`: every step of long work is written as a line.
VERBOSE = {"on": False}


def progress_bar() -> Progress:
    kind = StepLog if VERBOSE["on"] else Progress
    return kind(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                TaskProgressColumn(), TimeElapsedColumn(), console=err_console,
                transient=True)




def cutoff_list(text: str) -> tuple[date, ...]:
    return tuple(iso_date(part.strip()) for part in text.split(",") if part.strip())


def optional_date(text: str | None) -> date | None:
    return None if text in (None, "", "auto") else iso_date(text)  # type: ignore[arg-type]


def training_cutoffs(text: str | None) -> tuple[tuple[date, ...] | None, int]:
    """``--cutoffs``: dates, or how many monthly cutoffs to take (None: the default count)."""
    if text is None:
        return None, DEFAULT_TRAIN_CUTOFFS
    if text.strip().isdigit():
        return None, int(text)
    return cutoff_list(text), DEFAULT_TRAIN_CUTOFFS


CutoffsOption = Annotated[str | None, typer.Option(
    help="Training cutoffs: dates (2025-01-01,2025-02-01,...) or a count of monthly cutoffs "
         f"ending one horizon before the validation cutoff \\[default: {DEFAULT_TRAIN_CUTOFFS}]. "
         "Each label window [cutoff, cutoff + horizon) must end by the validation cutoff.")]
ValidationOption = Annotated[str | None, typer.Option(
    help="Cutoff for early stopping and the calibration choice \\[default (or auto): the latest "
         "first of a month one horizon before the test cutoff].")]
TestOption = Annotated[str | None, typer.Option(
    help="Cutoff the registered model is measured on, after every training row \\[default (or "
         "auto): the latest first of a month whose label window is over in the data].")]
HorizonOption = Annotated[int, typer.Option(
    min=1, help="A customer churned if they order nothing in this many days after the cutoff.")]
BaseOption = Annotated[int, typer.Option(
    min=1, help="The base: customers with an order in this many days before the cutoff. Scoring "
         "gives a probability to the same base; others are lapsed.")]


ModelNameOption = Annotated[str, typer.Option(
    "--model-name", help="Registered churn model name: give each dataset its own, so datasets "
                         "never share a champion.")]
UpliftNameOption = Annotated[str, typer.Option(
    "--uplift-model-name", help="Registered uplift model name whose champion gives "
                                "uplift_spend.")]
NoUpliftOption = Annotated[bool, typer.Option(
    "--no-uplift", help="Score without an uplift model (win_back from the churn model alone).")]
MismatchOption = Annotated[bool, typer.Option(
    "--allow-data-mismatch", help="Use champions trained on other data than is scored.")]
LearningRateOption = Annotated[float, typer.Option(
    min=1e-6, max=1.0, help="LightGBM learning rate, in (0, 1].")]
LeavesOption = Annotated[int, typer.Option(min=2, max=131072, help="LightGBM leaves per tree.")]
MaxTreesOption = Annotated[int, typer.Option(
    min=1, help="Upper bound on trees; early stopping on the validation cutoff picks fewer.")]
SeedOption = Annotated[int, typer.Option(help="Random seed.")]
ThreadsOption = Annotated[int, typer.Option(
    min=0, help="LightGBM and DuckDB threads; 0 takes the cores free when the job starts "
                "(beside other CPU-bound work, fewer threads finish sooner).")]
OnBadRowsOption = Annotated[OnBadRows, typer.Option(
    help="stop: write nothing if a row breaks the data contract. quarantine: set bad "
         "rows aside in ./rejects/ with reasons and go on.")]


def churn_config(data: Path, cutoffs: str | None, validation_cutoff: str | None,
                  test_cutoff: str | None, horizon_days: int, base_days: int,
                  **options: object) -> ChurnTrainConfig:
    train, count = training_cutoffs(cutoffs)
    return ChurnTrainConfig(
        data=data, cutoffs=train, train_cutoff_count=count,
        validation_cutoff=optional_date(validation_cutoff),
        test_cutoff=optional_date(test_cutoff),
        labels=ChurnLabelConfig(horizon_days=horizon_days, base_days=base_days),
        **options)  # type: ignore[arg-type]




def choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"use one of {', '.join(allowed)}", param_hint=option)
    return value


def user_errors() -> tuple[type[Exception], ...]:
    from churn import model_steps as steps

    return steps.USER_ERRORS
