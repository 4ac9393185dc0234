"""`churn train churn`, `churn backtest churn` and `churn promote churn`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churn.cli.app import backtest_app, promote_app, train_app
from churn.cli.common import (
    ENGINE_OPTION,
    BaseOption,
    CutoffsOption,
    HorizonOption,
    LearningRateOption,
    LeavesOption,
    MaxTreesOption,
    ModelNameOption,
    OnBadRowsOption,
    SeedOption,
    TestOption,
    ThreadsOption,
    ValidationOption,
    churn_config,
    cutoff_list,
    fail,
    one_line,
    out_console,
    progress_bar,
    use_store,
)
from features.engines import Engine
from models.registry import CHURN_MODEL_NAME
from training.config import CHURN, LABELS


@train_app.command("churn")
def train_churn_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables.")],
    cutoffs: CutoffsOption = None,
    validation_cutoff: ValidationOption = None,
    test_cutoff: TestOption = None,
    horizon_days: HorizonOption = LABELS.horizon_days,
    base_days: BaseOption = LABELS.base_days,
    learning_rate: LearningRateOption = CHURN.learning_rate,
    num_leaves: LeavesOption = CHURN.num_leaves,
    max_trees: MaxTreesOption = CHURN.max_trees,
    seed: SeedOption = CHURN.seed,
    threads: ThreadsOption = CHURN.threads,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "churn",
    on_bad_rows: OnBadRowsOption = CHURN.on_bad_rows,
    model_name: ModelNameOption = CHURN_MODEL_NAME,
) -> None:
    """Train the churn model and register it in MLflow (as `churn`, or --model-name).

    Cutoffs have three roles, each one label horizon after the last so that no label window
    overlaps a later role: training cutoffs fit the trees, the validation cutoff stops them
    early and picks the calibration, and the test cutoff, which neither saw, measures the
    model that is registered (refitted on the training and validation cutoffs). With no
    dates given, all three come from the data's own span.

    Prints the model's test metrics beside the recency rule and BG/NBD baselines on the same
    customers. Make it the champion afterwards with `churn promote churn`.

    Example: churn train churn --data data/ --cutoffs 6 --test-cutoff 2025-10-01
    """
    from churn import model_steps as steps

    uri = use_store()
    try:
        cfg = churn_config(data, cutoffs, validation_cutoff, test_cutoff, horizon_days,
                            base_days, learning_rate=learning_rate, num_leaves=num_leaves,
                            max_trees=max_trees, seed=seed, on_bad_rows=on_bad_rows,
                           threads=threads)
        started = steps.now_ms()
        result = steps.train(cfg, progress_bar())  # type: ignore[arg-type]
        logged = steps.log_churn_run(cfg, result, experiment=experiment,  # type: ignore[arg-type]
                                     registered_name=model_name, started_ms=started)
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    steps.print_metrics(result, out_console)
    steps.where_to_look(uri, logged, out_console, model_name)


@backtest_app.command("churn")
def backtest_churn_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables.")],
    origins: Annotated[str, typer.Option(
        help="Comma-separated origins, e.g. 1997-10-01,1998-01-01,1998-04-01. Each must have "
             "a full label horizon of data after it.")],
    cutoffs: Annotated[int, typer.Option(
        "--cutoffs", help="Monthly training cutoffs per origin.")] = CHURN.train_cutoff_count,
    horizon_days: HorizonOption = LABELS.horizon_days,
    base_days: BaseOption = LABELS.base_days,
    learning_rate: LearningRateOption = CHURN.learning_rate,
    num_leaves: LeavesOption = CHURN.num_leaves,
    max_trees: MaxTreesOption = CHURN.max_trees,
    seed: SeedOption = CHURN.seed,
    threads: ThreadsOption = CHURN.threads,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "churn-backtest",
    on_bad_rows: OnBadRowsOption = CHURN.on_bad_rows,
    engine: Annotated[Engine, ENGINE_OPTION] = Engine.duckdb,
) -> None:
    """Rolling-origin backtest of the churn model: the figure to quote.

    At each origin the model is trained exactly as `churn train churn` would have trained it
    then, with the origin as its test cutoff: validation and training cutoffs a horizon and
    more before it, so it learns only from labels that had matured by the origin. The base
    at the origin is scored and measured against what customers did in the next horizon,
    beside the recency rule and BG/NBD on the same customers. Prints the metrics per origin
    and their mean and spread, and logs them with a plot to MLflow (nothing is registered).
    With --engine spark the features and labels of every cutoff are built on Spark; only
    they come back to this machine, where LightGBM trains.

    Example: churn backtest churn --data cdnow/ --origins 1997-10-01,1998-01-01,1998-04-01
    """
    from churn import model_steps as steps

    uri = use_store()
    try:
        cfg = churn_config(data, str(cutoffs), None, None, horizon_days, base_days,
                            learning_rate=learning_rate, num_leaves=num_leaves,
                            max_trees=max_trees, seed=seed, on_bad_rows=on_bad_rows,
                           threads=threads)
        started = steps.now_ms()
        result = steps.backtest(cfg, cutoff_list(origins), progress_bar(),  # type: ignore[arg-type]
                                engine)
        logged = steps.log_backtest_run(cfg, result, experiment,  # type: ignore[arg-type]
                                        started_ms=started)
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    steps.print_backtest(result, out_console)
    out_console.print(f"Run {logged.run_id} in experiment '{experiment}' ({uri}).",
                      highlight=False, soft_wrap=True)


def promote_or_fail(kind: str, name: str, run: str | None, min_gain: float = 0.0) -> None:
    from churn import model_steps as steps

    use_store(read_only=True, writes=True)  # the alias is written to the registry
    try:
        outcome = steps.promote(name or kind, run, min_gain, kind)
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    out_console.print(outcome.message(), highlight=False, soft_wrap=True)


@promote_app.command("churn")
def promote_churn_command(
    run: Annotated[str | None, typer.Option(
        help="The run whose model is the candidate \\[default: the newest version].")] = None,
    min_gain: Annotated[float, typer.Option(
        help="How much ROC AUC a first champion must gain over the recency rule on its test "
             "cutoff.")] = 0.0,
    model_name: ModelNameOption = CHURN_MODEL_NAME,
) -> None:
    """Make the candidate churn model champion if it beats the current one fairly.

    Both are scored on the candidate's test cutoff, which neither was fitted on: the
    champion must have been fitted only on data before it (else the command refuses and
    says how to get a fair comparison). The alias moves only when the candidate's ROC AUC is
    higher. A first champion must beat the recency rule there by --min-gain.
    """
    promote_or_fail("churn", model_name, run, min_gain)
