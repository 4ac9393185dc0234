"""`churn train|backtest|promote propensity` and `churn train|backtest|promote value`: who will
buy, and how much and how often, over the next H days."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from churn.cli.app import backtest_app, promote_app, train_app
from churn.cli.churn_model import promote_or_fail
from churn.cli.common import (
    CutoffsOption,
    LearningRateOption,
    LeavesOption,
    MaxTreesOption,
    OnBadRowsOption,
    SeedOption,
    TestOption,
    ThreadsOption,
    ValidationOption,
    churn_config,
    cutoff_list,
    fail,
    one_line,
    optional_date,
    out_console,
    progress_bar,
    training_cutoffs,
    use_store,
)
from models.registry import PROPENSITY_MODEL_NAME, VALUE_MODEL_NAME
from training.config import (
    CHURN,
    LABELS,
    PROPENSITY_HORIZON_DAYS,
    VALUE,
    ValueTrainConfig,
)

DataOption = Annotated[Path, typer.Option(help="Folder holding the contract tables.")]
PropensityHorizon = Annotated[int, typer.Option(
    min=1, help="The purchase window: an order within this many days after the cutoff.")]
ValueHorizon = Annotated[int, typer.Option(
    min=1, help="Spend and orders are forecast over this many days after the cutoff.")]
PropensityName = Annotated[str, typer.Option(
    "--model-name", help="Registered propensity model name: give each dataset its own.")]
ValueName = Annotated[str, typer.Option(
    "--model-name", help="Registered value model name: give each dataset its own.")]
Experiment = Annotated[str, typer.Option(help="MLflow experiment name.")]
Origins = Annotated[str, typer.Option(
    help="Comma-separated origins, e.g. 1997-10-01,1998-01-01. Each must have a full horizon "
         "of data after it.")]
RunOption = Annotated[str | None, typer.Option(
    help="The run whose model is the candidate \\[default: the newest version].")]


def _value_config(data: Path, cutoffs: str | None, validation_cutoff: str | None,
                  test_cutoff: str | None, **options: object) -> ValueTrainConfig:
    train, count = training_cutoffs(cutoffs)
    return ValueTrainConfig(data=data, cutoffs=train, train_cutoff_count=count,
                            validation_cutoff=optional_date(validation_cutoff),
                            test_cutoff=optional_date(test_cutoff),
                            **options)  # type: ignore[arg-type]


@train_app.command("propensity")
def train_propensity_command(
    data: DataOption,
    cutoffs: CutoffsOption = None,
    validation_cutoff: ValidationOption = None,
    test_cutoff: TestOption = None,
    horizon_days: PropensityHorizon = PROPENSITY_HORIZON_DAYS,
    learning_rate: LearningRateOption = CHURN.learning_rate,
    num_leaves: LeavesOption = CHURN.num_leaves,
    max_trees: MaxTreesOption = CHURN.max_trees,
    seed: SeedOption = CHURN.seed,
    threads: ThreadsOption = CHURN.threads,
    experiment: Experiment = "propensity",
    on_bad_rows: OnBadRowsOption = CHURN.on_bad_rows,
    model_name: PropensityName = PROPENSITY_MODEL_NAME,
) -> None:
    """Train the purchase propensity model: P(an order within --horizon-days) for every
    customer with a past order, lapsed ones included; register it (as `propensity`).

    The cutoffs have the churn model's three roles, a horizon apart. Prints ROC AUC, PR AUC
    and calibration (ECE) beside the recency rule and BG/NBD's P(at least one order in the
    horizon) on the same customers. Make it the champion with `churn promote propensity`;
    `churn score` then adds purchase_probability_<H>d.

    Example: churn train propensity --data data/ --horizon-days 30
    """
    from churn import model_steps as steps
    from churn import value_steps as vs

    uri = use_store()
    try:
        cfg = churn_config(data, cutoffs, validation_cutoff, test_cutoff, horizon_days,
                           LABELS.base_days, learning_rate=learning_rate,
                           num_leaves=num_leaves, max_trees=max_trees, seed=seed,
                           on_bad_rows=on_bad_rows, threads=threads)
        started = steps.now_ms()
        result = vs.train_propensity_model(cfg, horizon_days, progress_bar())
        logged = vs.log_churn_run(replace(cfg, labels=result.model.label), result,
                                  experiment=experiment, registered_name=model_name,
                                  started_ms=started)
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    vs.print_propensity(result, out_console)
    steps.where_to_look(uri, logged, out_console, model_name)


@train_app.command("value")
def train_value_command(
    data: DataOption,
    cutoffs: CutoffsOption = None,
    validation_cutoff: ValidationOption = None,
    test_cutoff: TestOption = None,
    horizon_days: ValueHorizon = VALUE.horizon_days,
    learning_rate: LearningRateOption = VALUE.learning_rate,
    num_leaves: LeavesOption = VALUE.num_leaves,
    max_trees: MaxTreesOption = VALUE.max_trees,
    seed: SeedOption = VALUE.seed,
    threads: ThreadsOption = VALUE.threads,
    experiment: Experiment = "value",
    on_bad_rows: OnBadRowsOption = VALUE.on_bad_rows,
    model_name: ValueName = VALUE_MODEL_NAME,
) -> None:
    """Train the value model: expected spend and orders over the next --horizon-days for
    every customer with a past order; register it (as `value`).

    Spend is mostly zero with a long tail: LightGBM with a Tweedie loss, a two-part model
    (P(buy) x spend among buyers) and a zero-inflated lognormal are compared on the
    validation cutoff, and the one with the higher normalised Gini is kept. Prints Spearman,
    normalised Gini, decile MAPE and total forecast error beside BG/NBD x Gamma-Gamma and
    last period's spend repeated. Three roles of cutoffs a horizon apart need three horizons
    of history: use a shorter --horizon-days on short data.

    Example: churn train value --data cdnow/ --cutoffs 1997-07-01,1997-10-01
    --validation-cutoff 1998-01-01 --test-cutoff 1998-04-01 --horizon-days 90
    """
    from churn import model_steps as steps
    from churn import value_steps as vs

    uri = use_store()
    try:
        cfg = _value_config(data, cutoffs, validation_cutoff, test_cutoff,
                            horizon_days=horizon_days, learning_rate=learning_rate,
                            num_leaves=num_leaves, max_trees=max_trees, seed=seed,
                            threads=threads, on_bad_rows=on_bad_rows)
        started = steps.now_ms()
        result = vs.train_value_model(cfg, progress_bar())
        logged = vs.log_value_run(cfg, result, experiment=experiment,
                                  registered_name=model_name, started_ms=started)
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    vs.print_value(result, out_console)
    steps.where_to_look(uri, logged, out_console, model_name)


@backtest_app.command("propensity")
def backtest_propensity_command(
    data: DataOption,
    origins: Origins,
    cutoffs: Annotated[int, typer.Option(
        "--cutoffs", help="Monthly training cutoffs per origin.")] = CHURN.train_cutoff_count,
    horizon_days: PropensityHorizon = PROPENSITY_HORIZON_DAYS,
    threads: ThreadsOption = CHURN.threads,
    on_bad_rows: OnBadRowsOption = CHURN.on_bad_rows,
) -> None:
    """Rolling-origin backtest of the propensity model, on the purchase label.

    Example: churn backtest propensity --data cdnow/ --origins 1998-01-01,1998-04-01
    """
    from churn import model_steps as steps
    from churn import value_steps as vs

    try:
        cfg = churn_config(data, str(cutoffs), None, None, horizon_days, LABELS.base_days,
                           threads=threads, on_bad_rows=on_bad_rows)
        result = vs.backtest_propensity_model(cfg, horizon_days, cutoff_list(origins),
                                              progress_bar())
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    steps.print_backtest(result, out_console, "ordered", vs.PROPENSITY_LABELS)


@backtest_app.command("value")
def backtest_value_command(
    data: DataOption,
    origins: Origins,
    cutoffs: Annotated[int, typer.Option(
        "--cutoffs", help="Monthly training cutoffs per origin.")] = VALUE.train_cutoff_count,
    horizon_days: ValueHorizon = VALUE.horizon_days,
    threads: ThreadsOption = VALUE.threads,
    on_bad_rows: OnBadRowsOption = VALUE.on_bad_rows,
) -> None:
    """Rolling-origin backtest of the value model: each origin as the test cutoff.

    Example: churn backtest value --data cdnow/ --origins 1998-01-01,1998-04-01
    --horizon-days 90 --cutoffs 2
    """
    from churn import model_steps as steps
    from churn import value_steps as vs

    try:
        cfg = _value_config(data, str(cutoffs), None, None, horizon_days=horizon_days,
                            threads=threads, on_bad_rows=on_bad_rows)
        rows = vs.backtest_value_model(cfg, cutoff_list(origins), progress_bar())
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    vs.print_value_backtest(rows, out_console)


@promote_app.command("propensity")
def promote_propensity_command(run: RunOption = None,
                               model_name: PropensityName = PROPENSITY_MODEL_NAME) -> None:
    """Make the candidate propensity model champion if it beats the current one fairly (ROC
    AUC on the candidate's test cutoff, as for churn; a first champion must beat the recency
    rule)."""
    promote_or_fail("propensity", model_name, run)


@promote_app.command("value")
def promote_value_command(run: RunOption = None,
                          model_name: ValueName = VALUE_MODEL_NAME) -> None:
    """Make the candidate value model champion if it beats the current one fairly: normalised
    Gini of forecast spend on the candidate's test cutoff, which the champion was not fitted
    on; a first champion must beat last period's spend repeated."""
    promote_or_fail("value", model_name, run)
