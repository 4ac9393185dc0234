"""The ``churn`` command: one front for data, features, training, promotion and scoring."""

from __future__ import annotations

import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated

import duckdb
import pandas as pd
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
from rich.table import Table

from features.contract import ContractError
from features.job import FeaturesJobConfig, FeaturesJobResult, run_features
from features.labels import ChurnLabelConfig
from features.synthetic import GenerateConfig, as_of_default, generate
from features.validation import OnBadRows

app = typer.Typer(
    help=(
        "Churn and spend-uplift models for marketing teams.\n\n"
        "Start with `churn demo`: it generates a synthetic customer base, builds "
        "point-in-time features, trains the churn model against its baselines and the "
        "spend-uplift model on a randomised campaign, makes both champions in the MLflow "
        "registry and scores everyone into segments. Then point the commands at your own data: "
        "a folder holding transactions.csv|parquet and, optionally, events, customers "
        "and exposures (or folders of that name with many files).\n\n"
        "In production: `churn score` on a schedule (each run is recorded), `churn monitor` "
        "to check matured scores and drift (exit 0 healthy, 10 degrading, 20 retrain), "
        "`churn retrain` to bring in a challenger that wins fairly, and `churn campaign` to "
        "run each campaign against a randomised holdout.\n\n"
        "Runs go to $MLFLOW_TRACKING_URI, or to ./mlflow.db when it is not set."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train a model and record the run in MLflow.",
                        no_args_is_help=True)
promote_app = typer.Typer(help="Move a registered model's `champion` alias when it earns it.",
                          no_args_is_help=True)
evaluate_app = typer.Typer(help="Evaluate a model out of fold and write its scores.",
                           no_args_is_help=True)
backtest_app = typer.Typer(help="Measure a model the way it would have done in the past.",
                           no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(backtest_app, name="backtest")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(promote_app, name="promote")
campaign_app = typer.Typer(help="Run a campaign as an experiment: a randomised holdout, then "
                                "the measured readout.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
# Piped or logged, rich would cut tables to 80 columns: lay them out at their full width.
PIPED_WIDTH = 240


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = None if stream.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH
    return Console(stderr=stderr, width=wide)


out_console = _console()
DEMO_SERVE_HINT = """Serve the champion:  .venv/bin/churn serve --port 3000
Then, from another shell:
  curl -s -X POST localhost:3000/score_history -H 'content-type: application/json' \\
    -d '{"as_of": "2026-01-01", "transactions": [
      {"customer_id": "C1", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80},
      {"customer_id": "C1", "order_id": "o2", "ordered_at": "2025-09-20", "amount": 35}]}'
or open the API page, with a worked example per endpoint: http://127.0.0.1:3000/docs"""
err_console = _console(stderr=True)


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not an ISO date such as 2026-06-01") from None


def _store(read_only: bool = False) -> str:
    """The MLflow store to use, checked; a store that cannot be used ends the command."""
    from churn import model_steps as steps

    try:
        return steps.use_tracking_store(read_only)
    except steps.StoreError as err:
        _fail(_message(err))
        raise


def _champion_or_fail(name: str) -> None:
    from mlflow.exceptions import MlflowException

    from serving.champion import champion_versions

    try:
        champion_versions(name, None)
    except MlflowException:
        _fail(f"no '{name}' model holds the 'champion' alias in the MLflow store: train one "
              f"with `churn train churn --model-name {name}` and promote it")


def _message(err: Exception) -> str:
    """A user error in one line (DuckDB's read errors run to twenty)."""
    import duckdb

    from features.sources import duckdb_error_line

    return duckdb_error_line(err) if isinstance(err, (duckdb.Error, OSError)) else str(err)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TaskProgressColumn(), TimeElapsedColumn(), console=err_console,
                    transient=True)


def _generate(cfg: GenerateConfig, out: Path, fmt: str) -> dict[str, int]:
    with _progress() as bar:
        task = bar.add_task("Generating customers", total=cfg.customers)
        return generate(cfg, out, fmt, progress=lambda n: bar.advance(task, n))


def _features(cfg: FeaturesJobConfig) -> FeaturesJobResult:
    with _progress() as bar:
        tasks: dict[str, int] = {}

        def finish_validation() -> None:
            for task in tasks.values():
                bar.update(task, total=bar.tasks[task].completed)

        def on_rows(table: str, rows: int) -> None:
            if table not in tasks:
                finish_validation()
                tasks[table] = bar.add_task(f"Validating {table}", total=None)
            task = tasks[table]
            bar.advance(task, rows)
            bar.update(task, description=f"Validating {table}: "
                                         f"{bar.tasks[task].completed:,.0f} rows")

        build = bar.add_task("Building features", total=100, visible=False)

        def on_build(percent: float) -> None:
            finish_validation()
            bar.update(build, completed=percent, visible=True)

        return run_features(cfg, progress=on_rows, build_progress=on_build)


def _print_features_summary(result: FeaturesJobResult, cfg: FeaturesJobConfig) -> None:
    table = Table(title="Input tables", title_justify="left")
    for column in ("table", "rows", "bad rows", "notes"):
        table.add_column(column, justify="right" if "rows" in column else "left")
    for report in result.reports:
        notes = []
        if report.rejects_file is not None:
            notes.append(f"rejects in {report.rejects_file}")
        if report.unknown_event_types:
            listed = ", ".join(f"{k} ({v:,})" for k, v in report.unknown_event_types.items())
            notes.append(f"unknown event types ignored: {listed}")
        table.add_row(report.table, f"{report.rows:,}", f"{report.bad_rows:,}", "; ".join(notes))
    out_console.print(table)
    out_console.print(
        f"Features as of {cfg.as_of}: {result.rows:,} customers x {result.feature_count} "
        f"features -> {cfg.out} ({result.seconds:.1f} s)", highlight=False, soft_wrap=True)


@app.command("generate")
def generate_command(
    out: Annotated[Path, typer.Option(help="Folder to write the tables into.")],
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 7,
    start: Annotated[str, typer.Option(help="First day of history (ISO date).")] = "2023-01-01",
    end: Annotated[str, typer.Option(help="Day after the last day of history.")] = "2026-01-01",
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    shift_at: Annotated[str | None, typer.Option(
        help="Shift the world from this date: for a cohort (--shift-share of customers) "
             "tracked engagement (e-mail opens and clicks, site visits, app sessions) falls "
             "to a twentieth while buying goes on as before. For trying `churn monitor`.")] = None,
    shift_share: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of customers the shift hits.")] = 0.5,
) -> None:
    """Generate a synthetic customer base: the four contract tables plus ground truth.

    Writes transactions, events, customers and exposures in the data contract's form, and
    ground_truth.parquet with each customer's true purchase rate, churn hazard, departure
    date, true campaign effect on spend, and whether the shift (--shift-at) hit them.
    """
    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("use parquet or csv", param_hint="--format")
    first, last = _iso_date(start), _iso_date(end)
    if (last - first).days < 365:
        raise typer.BadParameter("history must cover at least a year", param_hint="--end")
    shift = _iso_date(shift_at) if shift_at else None
    if shift and not first < shift < last:
        raise typer.BadParameter("must fall inside the history", param_hint="--shift-at")
    cfg = GenerateConfig(customers=customers, seed=seed, start=first, end=last, shift_at=shift,
                         shift_share=shift_share)
    started = time.perf_counter()
    rows = _generate(cfg, out, fmt)
    listed = ", ".join(f"{name} {n:,}" for name, n in rows.items())
    out_console.print(f"Wrote {listed} rows to {out} in {time.perf_counter() - started:.1f} s",
                      highlight=False, soft_wrap=True)


@app.command("features")
def features_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables.")],
    as_of: Annotated[str, typer.Option(help="Cutoff date: only rows before it are used.")],
    out: Annotated[Path, typer.Option(help="Feature file to write (.parquet or .csv).")],
    on_bad_rows: Annotated[OnBadRows, typer.Option(
        help="stop: write nothing if any row breaks the contract. quarantine: write bad rows "
             "with reasons to a rejects folder and go on with the rest.")] = OnBadRows.stop,
    rejects: Annotated[Path | None, typer.Option(
        help="Folder for rejected rows [default: next to --out].")] = None,
    memory_limit: Annotated[str, typer.Option(
        help="DuckDB memory limit; beyond it work spills to disk.")] = "4GB",
) -> None:
    """Build point-in-time features as of a date, one row per customer.

    Every row is checked against the data contract first. Only rows stamped before
    --as-of are used, so features for a past date never see its future.
    """
    cfg = FeaturesJobConfig(data=data, as_of=_iso_date(as_of), out=out,
                            on_bad_rows=on_bad_rows, rejects=rejects, memory_limit=memory_limit)
    try:
        result = _features(cfg)
    except (ContractError, duckdb.Error, OSError) as err:
        _fail(_message(err))
    _print_features_summary(result, cfg)


def _cutoff_list(text: str) -> tuple[date, ...]:
    return tuple(_iso_date(part.strip()) for part in text.split(",") if part.strip())


def _optional_date(text: str | None) -> date | None:
    return None if text in (None, "", "auto") else _iso_date(text)  # type: ignore[arg-type]


def _training_cutoffs(text: str | None) -> tuple[tuple[date, ...] | None, int]:
    """``--cutoffs``: dates, or how many monthly cutoffs to take (None: the default count)."""
    from training.cutoffs import DEFAULT_TRAIN_CUTOFFS

    if text is None:
        return None, DEFAULT_TRAIN_CUTOFFS
    if text.strip().isdigit():
        return None, int(text)
    return _cutoff_list(text), DEFAULT_TRAIN_CUTOFFS


CutoffsOption = Annotated[str | None, typer.Option(
    help="Training cutoffs: dates (2025-01-01,2025-02-01,...) or a count of monthly cutoffs "
         "ending one horizon before the validation cutoff [default: 6]. Each label window "
         "[cutoff, cutoff + horizon) must end by the validation cutoff.")]
ValidationOption = Annotated[str | None, typer.Option(
    help="Cutoff for early stopping and the calibration choice [default (or auto): the latest "
         "first of a month one horizon before the test cutoff].")]
TestOption = Annotated[str | None, typer.Option(
    help="Cutoff the registered model is measured on, after every training row [default (or "
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
OnBadRowsOption = Annotated[OnBadRows, typer.Option(
    help="stop: write nothing if a row breaks the data contract. quarantine: set bad "
         "rows aside in ./rejects/ with reasons and go on.")]


def _churn_config(data: Path, cutoffs: str | None, validation_cutoff: str | None,
                  test_cutoff: str | None, horizon_days: int, base_days: int,
                  **options: object) -> object:
    from training.train_churn import ChurnTrainConfig

    train, count = _training_cutoffs(cutoffs)
    return ChurnTrainConfig(
        data=data, cutoffs=train, train_cutoff_count=count,
        validation_cutoff=_optional_date(validation_cutoff),
        test_cutoff=_optional_date(test_cutoff),
        labels=ChurnLabelConfig(horizon_days=horizon_days, base_days=base_days),
        **options)  # type: ignore[arg-type]


@train_app.command("churn")
def train_churn_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables.")],
    cutoffs: CutoffsOption = None,
    validation_cutoff: ValidationOption = None,
    test_cutoff: TestOption = None,
    horizon_days: HorizonOption = 90,
    base_days: BaseOption = 365,
    learning_rate: LearningRateOption = 0.03,
    num_leaves: LeavesOption = 7,
    max_trees: MaxTreesOption = 3000,
    seed: SeedOption = 7,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "churn",
    on_bad_rows: OnBadRowsOption = OnBadRows.stop,
    model_name: ModelNameOption = "churn",
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

    uri = _store()
    try:
        cfg = _churn_config(data, cutoffs, validation_cutoff, test_cutoff, horizon_days,
                            base_days, learning_rate=learning_rate, num_leaves=num_leaves,
                            max_trees=max_trees, seed=seed, on_bad_rows=on_bad_rows)
        started = steps.now_ms()
        result = steps.train(cfg, _progress())  # type: ignore[arg-type]
        logged = steps.log_churn_run(cfg, result, experiment=experiment,  # type: ignore[arg-type]
                                     registered_name=model_name, started_ms=started)
    except steps.USER_ERRORS as err:
        _fail(_message(err))
    steps.print_metrics(result, out_console)
    steps.where_to_look(uri, logged, out_console, model_name)


@backtest_app.command("churn")
def backtest_churn_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables.")],
    origins: Annotated[str, typer.Option(
        help="Comma-separated origins, e.g. 1997-10-01,1998-01-01,1998-04-01. Each must have "
             "a full label horizon of data after it.")],
    cutoffs: Annotated[int, typer.Option(
        "--cutoffs", help="Monthly training cutoffs per origin.")] = 6,
    horizon_days: HorizonOption = 90,
    base_days: BaseOption = 365,
    learning_rate: LearningRateOption = 0.03,
    num_leaves: LeavesOption = 7,
    max_trees: MaxTreesOption = 3000,
    seed: SeedOption = 7,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "churn-backtest",
    on_bad_rows: OnBadRowsOption = OnBadRows.stop,
) -> None:
    """Rolling-origin backtest of the churn model: the figure to quote.

    At each origin the model is trained exactly as `churn train churn` would have trained it
    then, with the origin as its test cutoff: validation and training cutoffs a horizon and
    more before it, so it learns only from labels that had matured by the origin. The base
    at the origin is scored and measured against what customers did in the next horizon,
    beside the recency rule and BG/NBD on the same customers. Prints the metrics per origin
    and their mean and spread, and logs them with a plot to MLflow (nothing is registered).

    Example: churn backtest churn --data cdnow/ --origins 1997-10-01,1998-01-01,1998-04-01
    """
    from churn import model_steps as steps

    uri = _store()
    try:
        cfg = _churn_config(data, str(cutoffs), None, None, horizon_days, base_days,
                            learning_rate=learning_rate, num_leaves=num_leaves,
                            max_trees=max_trees, seed=seed, on_bad_rows=on_bad_rows)
        started = steps.now_ms()
        result = steps.backtest(cfg, _cutoff_list(origins), _progress())  # type: ignore[arg-type]
        logged = steps.log_backtest_run(cfg, result, experiment,  # type: ignore[arg-type]
                                        started_ms=started)
    except steps.USER_ERRORS as err:
        _fail(_message(err))
    steps.print_backtest(result, out_console)
    out_console.print(f"Run {logged.run_id} in experiment '{experiment}' ({uri}).",
                      highlight=False, soft_wrap=True)


def _promote(kind: str, name: str, run: str | None, min_gain: float = 0.0) -> None:
    from churn import model_steps as steps

    _store(read_only=True)
    try:
        outcome = steps.promote(name or kind, run, min_gain, kind)
    except steps.USER_ERRORS as err:
        _fail(_message(err))
    out_console.print(outcome.message(), highlight=False, soft_wrap=True)


@promote_app.command("churn")
def promote_churn_command(
    run: Annotated[str | None, typer.Option(
        help="The run whose model is the candidate [default: the newest version].")] = None,
    min_gain: Annotated[float, typer.Option(
        help="How much ROC AUC a first champion must gain over the recency rule on its test "
             "cutoff.")] = 0.0,
    model_name: ModelNameOption = "churn",
) -> None:
    """Make the candidate churn model champion if it beats the current one fairly.

    Both are scored on the candidate's test cutoff, which neither was fitted on: the
    champion must have been fitted only on data before it (else the command refuses and
    says how to get a fair comparison). The alias moves only when the candidate's ROC AUC is
    higher. A first champion must beat the recency rule there by --min-gain.
    """
    _promote("churn", model_name, run, min_gain)


UpliftData = Annotated[Path | None, typer.Option(
    "--data", help="Folder of contract tables with an exposures table (treatment 1 / "
                   "randomised holdout 0).")]
UpliftCampaign = Annotated[str | None, typer.Option(
    help="Campaign id in exposures [default: the only one].")]
UpliftHorizon = Annotated[int, typer.Option(
    help="Outcome window: orders in [exposed_at, exposed_at + this many days).")]
UpliftTable = Annotated[Path | None, typer.Option(
    "--table", help="A flat experiment table (.csv or .parquet), one row per customer.")]
UpliftTreatment = Annotated[list[str] | None, typer.Option(
    "--treatment", help="COLUMN=VALUE marking treated rows; repeat for each arm, e.g. "
                        "--treatment 'segment=Mens E-Mail' --treatment 'segment=Womens E-Mail'.")]
UpliftControl = Annotated[str | None, typer.Option(
    "--control", help="COLUMN=VALUE marking the randomised control rows.")]
UpliftOutcome = Annotated[str, typer.Option(
    help="Outcome column of --table (spend or a 0/1 conversion); the rest are features.")]
UpliftIgnore = Annotated[list[str] | None, typer.Option(
    "--ignore", help="A --table column that is not a feature (another outcome, an id); "
                     "repeat as needed.")]
UpliftLearner = Annotated[str, typer.Option(
    help="ensemble_or_distilled (the default: every learner below fitted on all rows and "
         "averaged on one scale, then distilled into small trees only when that ranks "
         "better on held-out rows by more than one standard error; at least as good as the "
         "best single learner on Hillstrom and the synthetic campaign; about three "
         "times the ensemble's fitting), ensemble (the average, never distilled), auto (pick one "
         "by out-of-fold Qini), or one of t_learner, x_learner, dr_learner, dr_linear, "
         "transformed_outcome, two_part (a hurdle model: P(buy) x spend among buyers, per "
         "group), stacked (the members weighted by their out-of-fold R-loss; three times "
         "the ensemble's fitting).")]
UpliftShare = Annotated[float | None, typer.Option(
    help="Designed treated share of an arm plus control, for the sample ratio check "
         "[default: 0.5].")]


UpliftLeaves = Annotated[int, typer.Option(
    min=2, max=131072, help="LightGBM leaves per tree of every base model.")]
UpliftMinLeaf = Annotated[int, typer.Option(min=1, help="LightGBM rows per leaf, at least.")]
UpliftRounds = Annotated[int, typer.Option(min=1, help="LightGBM trees per base model.")]
UpliftRate = Annotated[float, typer.Option(min=1e-6, max=1.0,
                                           help="LightGBM learning rate, in (0, 1].")]


def _uplift_config(data: Path | None, campaign: str | None, horizon_days: int,
                   table: Path | None, treatment: list[str] | None, control: str | None,
                   outcome: str, ignore: list[str] | None, learner: str,
                   expected_share: float | None, seed: int,
                   trees: tuple[int, int, int, float]) -> object:
    from training.train_uplift import UpliftTrainConfig
    from training.uplift_learners import BaseParams

    leaves, min_leaf, rounds, rate = trees
    return UpliftTrainConfig(data=data, campaign=campaign, horizon_days=horizon_days,
                             table=table, treatments=tuple(treatment or ()), control=control,
                             outcome=outcome, ignore=tuple(ignore or ()), learner=learner,
                             expected_share=expected_share, seed=seed,
                             params=BaseParams(learning_rate=rate, num_leaves=leaves,
                                               min_data_in_leaf=min_leaf, rounds=rounds,
                                               seed=seed))


@train_app.command("uplift")
def train_uplift_command(
    data: UpliftData = None, campaign: UpliftCampaign = None, horizon_days: UpliftHorizon = 30,
    table: UpliftTable = None, treatment: UpliftTreatment = None, control: UpliftControl = None,
    outcome: UpliftOutcome = "spend", ignore: UpliftIgnore = None,
    learner: UpliftLearner = "ensemble_or_distilled", expected_share: UpliftShare = None,
    num_leaves: UpliftLeaves = 31, min_data_in_leaf: UpliftMinLeaf = 20,
    rounds: UpliftRounds = 100, learning_rate: UpliftRate = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "uplift",
    model_name: Annotated[str, typer.Option(
        "--model-name", help="Registered uplift model name: give each dataset its own.")
    ] = "uplift",
) -> None:
    """Train a spend-uplift model on a randomised experiment; register it (as `uplift`, or
    --model-name).

    From contract tables (--data) or a flat table (--table with --treatment, --control and
    --outcome). One model per arm against control, by default an ensemble of every learner
    averaged on one scale, distilled into small trees when the rows say that ranks better.
    Prints each arm's average effect on spend, conversion and order
    value among buyers, the learners' nested out-of-fold Qini on the same folds, and warns
    when the split or the covariates look unbalanced. A spend model also predicts
    uplift_conversion (change in P(buy)) and uplift_order_value (change in spend among
    buyers: an observable difference between treated and control buyers, who may be
    different people, not the effect on one basket).

    Example: churn train uplift --table hillstrom.csv --treatment 'segment=Womens E-Mail'
    --control 'segment=No E-Mail' --outcome spend --ignore visit --ignore conversion
    """
    from churn import model_steps as steps
    from churn import uplift_steps as up

    uri = _store()
    try:
        cfg = _uplift_config(data, campaign, horizon_days, table, treatment, control, outcome,
                             ignore, learner, expected_share, seed,
                             (num_leaves, min_data_in_leaf, rounds, learning_rate))
        started = steps.now_ms()
        result = up.train(cfg, _progress())  # type: ignore[arg-type]
        logged = up.log_uplift_run(cfg, result, experiment=experiment,  # type: ignore[arg-type]
                                   registered_name=model_name, started_ms=started)
    except steps.USER_ERRORS as err:
        _fail(_message(err))
    up.print_result(result, out_console)
    steps.where_to_look(uri, logged, out_console, model_name)


@evaluate_app.command("uplift")
def evaluate_uplift_command(
    out: Annotated[Path, typer.Option(help="Out-of-fold scores to write (.parquet or .csv).")],
    data: UpliftData = None, campaign: UpliftCampaign = None, horizon_days: UpliftHorizon = 30,
    table: UpliftTable = None, treatment: UpliftTreatment = None, control: UpliftControl = None,
    outcome: UpliftOutcome = "spend", ignore: UpliftIgnore = None,
    learner: UpliftLearner = "ensemble_or_distilled", expected_share: UpliftShare = None,
    num_leaves: UpliftLeaves = 31, min_data_in_leaf: UpliftMinLeaf = 20,
    rounds: UpliftRounds = 100, learning_rate: UpliftRate = 0.1,
    folds: Annotated[int, typer.Option(help="Outer folds.")] = 5,
    repeats: Annotated[int, typer.Option(help="Repeats with fresh folds.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Score every customer out of fold and report Qini, AUUC and uplift at 10/20/30%.

    Same inputs as `churn train uplift`. Each customer is scored by a model that never saw
    them; with --learner auto the learner is chosen inside each training fold. The file
    holds id, arm, repeat, treated, spend, conversion, uplift_estimate and uplift_score (the
    estimate's percentile rank within its fold, which the metrics use).
    """
    from churn import model_steps as steps
    from churn import uplift_steps as up

    try:
        cfg = _uplift_config(data, campaign, horizon_days, table, treatment, control, outcome,
                             ignore, learner, expected_share, seed,
                             (num_leaves, min_data_in_leaf, rounds, learning_rate))
        summary = up.evaluate(cfg, folds, repeats, out, _progress())  # type: ignore[arg-type]
    except steps.USER_ERRORS as err:
        _fail(_message(err))
    up.print_evaluation(summary, out, out_console)


@promote_app.command("uplift")
def promote_uplift_command(
    run: Annotated[str | None, typer.Option(
        help="The run whose model is the candidate [default: the newest version].")] = None,
    model_name: Annotated[str, typer.Option(
        "--model-name", help="Registered uplift model name.")] = "uplift",
) -> None:
    """Make the candidate uplift model champion if it beats the current one fairly.

    Both are judged by nested out-of-fold Qini (the learner chosen again inside each training
    fold), averaged over arms: on the same experiment each run's own nested scores; on
    another experiment the champion scores the candidate's rows, if it never saw them. The
    alias moves only when the candidate's is higher. A first champion must beat random
    targeting (Qini above 0).
    """
    _promote("uplift", model_name, run)



CompiledOption = Annotated[bool, typer.Option(
    "--compiled-forest/--lightgbm-predict",
    help="Score with the compiled forest (LightGBM's exact margins, checked at load, several "
         "times faster) or with LightGBM's own Booster.predict.")]

@app.command("score")
def score_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables.")],
    as_of: Annotated[str, typer.Option(help="Score customers as they stood on this date.")],
    out: Annotated[str, typer.Option(
        help="A .parquet file, or postgresql://USER@HOST:PORT/DB?table=NAME. Re-running an "
             "as-of replaces its rows; a failed run leaves the earlier output as it was.")],
    policy: Annotated[Path | None, typer.Option(
        help="Segmentation policy (TOML) [default: serving/segments.toml].")] = None,
    on_bad_rows: Annotated[OnBadRows, typer.Option(
        help="stop: write nothing if a row breaks the data contract. quarantine: set bad "
             "rows aside in ./rejects/ with reasons and go on.")] = OnBadRows.stop,
    reasons: Annotated[bool, typer.Option(
        help="Give at-risk customers their top reasons (LightGBM pred_contrib); far slower "
             "than scoring alone.")] = True,
    compiled: CompiledOption = True,
    model_name: ModelNameOption = "churn",
    uplift_model_name: UpliftNameOption = "uplift",
    no_uplift: NoUpliftOption = False,
    allow_data_mismatch: MismatchOption = False,
) -> None:
    """Score every customer with the champion churn model and assign segments.

    Writes customer_id, as_of, churn_probability, churn_percentile, risk_band,
    value_at_risk, uplift_spend, uplift_conversion, uplift_order_value, segment, spend_tier,
    contactable, reasons and model_versions, then prints a summary per segment.

    uplift_conversion is the change in the probability of buying if contacted;
    uplift_order_value the change in spend among buyers (what treated buyers spend minus what
    control buyers spend, for customers like this one: the offer may bring in other buyers,
    so it is an observable difference, not the effect on one customer's basket). win_back
    needs margin_rate x uplift_spend - redemption_cost x P(buys if contacted) above the
    contact cost (see --policy).
    A champion trained on other data than --data is refused (--allow-data-mismatch uses it
    anyway); so is an --as-of outside the data's span.
    """
    from churn import model_steps as steps

    _store(read_only=True)
    try:
        cfg = steps.ScoreJobConfig(
            data=data, as_of=_iso_date(as_of), out=out,
            policy=steps.SegmentPolicy.load(policy or steps.DEFAULT_POLICY),
            on_bad_rows=on_bad_rows, reasons=reasons, model_name=model_name,
            uplift_model_name=uplift_model_name, uplift=not no_uplift,
            allow_data_mismatch=allow_data_mismatch)
        result = steps.score(cfg, _progress(), compiled)
    except steps.USER_ERRORS as err:
        _fail(_message(err))
    steps.print_segments(result, out_console)


@app.command("monitor")
def monitor_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables (only "
                                            "transactions are read).")],
    as_of: Annotated[str, typer.Option(
        help="Check every scoring run whose label window has ended by this date.")],
    model_name: ModelNameOption = "churn",
    warn_auc_drop: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Realised ROC AUC this far under the model's test ROC AUC: "
                               "degrading.")] = 0.02,
    retrain_auc_drop: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="... this far under it: retrain.")] = 0.05,
    warn_ece: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Calibration error (ECE) above this: degrading.")] = 0.05,
    retrain_ece: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="... above this: retrain.")] = 0.10,
    on_bad_rows: OnBadRowsOption = OnBadRows.stop,
) -> None:
    """Check earlier scores against what customers did, and the data for drift.

    Every recorded `churn score` run of the model whose label window [as-of, as-of + horizon)
    has ended by --as-of is read back from where it wrote its scores and compared with the
    orders that followed: realised ROC AUC (against the model's own test ROC AUC), calibration
    (ECE), lift in the top 10%, and churn per segment (did at_risk churn more than active?).
    The newest scoring run is compared with the model's training data: the population
    stability index (PSI) of every feature and of the score (below 0.1 stable, 0.1-0.25
    moderate, 0.25 and above large).

    Prints a verdict with its reasons, logs a run under the MLflow experiment `monitoring`
    (tables and plots, linked to the model version, which gets the verdict as a tag) and
    exits with a code a scheduler can act on: 0 healthy, 10 degrading, 20 retrain
    (1 when it could not check).

    Example: churn monitor --data data/ --as-of 2026-03-01
    """
    from churn import model_steps as steps

    _store(read_only=True)
    try:
        cfg = steps.MonitorConfig(
            data=data, as_of=_iso_date(as_of), model_name=model_name,
            warn_auc_drop=warn_auc_drop, retrain_auc_drop=retrain_auc_drop, warn_ece=warn_ece,
            retrain_ece=retrain_ece, on_bad_rows=on_bad_rows)
        report = steps.run_monitor(cfg, _progress())
    except steps.USER_ERRORS as err:
        _fail(_message(err))
    steps.print_monitor(report, out_console)
    raise typer.Exit(report.exit_code)


@app.command("retrain")
def retrain_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables the champion "
                                            "was trained on, with newer data added.")],
    model_name: ModelNameOption = "churn",
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "churn",
    on_bad_rows: OnBadRowsOption = OnBadRows.stop,
) -> None:
    """Train a challenger on the newest matured cutoffs and promote it only if it wins.

    The challenger gets the champion's recorded settings (label windows, LightGBM
    parameters, number of training cutoffs, seed) and cutoffs from the data's own span: the
    latest test cutoff whose label window has ended, and the validation and training cutoffs
    before it. It becomes champion only if it beats the champion on its test cutoff, which
    the champion must not have been fitted on (see `churn promote churn`). When the data
    holds no newer matured cutoff than the champion's test cutoff, nothing is trained.

    Exit codes, for a scheduler: 0 promoted, 10 kept (the champion stays), 1 failed
    (nothing changed).

    Example: churn retrain --data data/
    """
    from churn import model_steps as steps

    uri = _store()
    try:
        outcome = steps.run_retrain(data, model_name, experiment, on_bad_rows, _progress())
    except steps.USER_ERRORS as err:
        _fail(_message(err))
    if outcome.result is not None:
        steps.print_metrics(outcome.result, out_console)
        steps.where_to_look(uri, outcome.logged, out_console, model_name)
    style = "bold green" if outcome.status == "promoted" else "bold yellow"
    out_console.print(f"[{style}]{outcome.status}[/] (exit {outcome.exit_code}): "
                      f"{outcome.message}", highlight=False, soft_wrap=True)
    raise typer.Exit(outcome.exit_code)


@campaign_app.command("plan")
def campaign_plan_command(
    scores: Annotated[str, typer.Option(
        help="Scores from `churn score`: a .parquet file or postgresql://...?table=NAME.")],
    campaign: Annotated[str, typer.Option(help="Campaign id, as exposures will carry it.")],
    out: Annotated[Path, typer.Option(help="Folder for contacts.csv, "
                                           "exposures/CAMPAIGN.parquet and plan.json.")],
    segment: Annotated[str, typer.Option(help="Segment to draw from.")] = "win_back",
    holdout: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share held out (not contacted), in each stratum.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed draws the same "
                                           "holdout.")] = 7,
    stratify: Annotated[str, typer.Option(
        help="auto (uplift deciles when the scores carry uplift, else risk), uplift, risk or "
             "none.")] = "auto",
    data: Annotated[Path | None, typer.Option(
        help="The data the scores came from: with it every feature is balanced between the "
             "groups (greedy pair switching from the random draw, within strata) until none "
             "differs by more than --max-smd standard deviations.")] = None,
    as_of: Annotated[str | None, typer.Option(
        help="Which scores (a table holding several as-ofs) [default: the latest].")] = None,
    exposed_at: Annotated[str | None, typer.Option(
        help="The exposure date written to exposures [default: the scores' as-of].")] = None,
    max_smd: Annotated[float, typer.Option(
        min=0.0, help="Largest standardised difference of a feature accepted.")] = 0.1,
    max_switches: Annotated[int, typer.Option(
        min=0, help="Most pair switches tried for balance.")] = 2_000,
) -> None:
    """Draw a reproducible, stratified random holdout from a segment and write the lists.

    Takes the contactable customers of --segment in the scores, holds out --holdout of each
    decile of predicted uplift (or churn risk), and writes:

    - contacts.csv: who to contact (with churn probability, uplift and stratum);

    - exposures/CAMPAIGN.parquet: every drawn customer in the data contract's exposures form
      (treatment 1 contacted, 0 held out, exposed_at). Put it in the data folder's exposures/
      folder: `churn campaign report` measures the campaign from it, and `churn train uplift`
      learns the next uplift model from it;

    - plan.json, and a run under the MLflow experiment `campaigns`.

    Example: churn campaign plan --scores scores.parquet --campaign spring --holdout 0.1
    --data data/ --out campaigns/spring
    """
    from operations import campaign as camp

    _store()
    try:
        cfg = camp.PlanConfig(
            scores=scores, segment=segment, holdout=holdout, campaign=campaign, out=out,
            seed=seed, as_of=_optional_date(as_of), exposed_at=_optional_date(exposed_at),
            stratify=_choice(stratify, camp.STRATIFY, "--stratify"), data=data,
            max_switches=max_switches, max_smd=max_smd)
        plan = camp.plan_campaign(cfg)
        paths = camp.write_plan(plan)
        camp.log_plan(plan, paths)
    except _user_errors() as err:
        _fail(_message(err))
    summary = plan.summary()
    out_console.print(
        f"Campaign {campaign}: {summary['contacted']:,} to contact, {summary['held_out']:,} "
        f"held out ({holdout:.0%} of each {plan.stratified_by}) from segment {segment} as of "
        f"{plan.as_of}; seed {seed}.", highlight=False, soft_wrap=True)
    if plan.balance is not None:
        worst = plan.balance.iloc[0] if len(plan.balance) else None
        verdict = "balanced" if plan.max_smd <= max_smd else "NOT balanced"
        out_console.print(
            f"Balance on {len(plan.balance)} feature columns: {verdict}, largest standardised "
            f"difference {plan.max_smd:.3f}"
            + (f" ({worst['feature']})" if worst is not None else "")
            + f" after {plan.switches:,} pair switch(es) from the random draw.",
            highlight=False, soft_wrap=True)
    for key, path in paths.items():
        out_console.print(f"  {key}: {path}", highlight=False, soft_wrap=True)
    out_console.print(f"Recorded as run {plan.run_id} (MLflow experiment 'campaigns').",
                      highlight=False)


@campaign_app.command("report")
def campaign_report_command(
    data: Annotated[Path, typer.Option(help="Folder holding transactions and the exposures "
                                            "of the campaign.")],
    campaign: Annotated[str, typer.Option(help="Campaign id in exposures.")],
    horizon_days: Annotated[int, typer.Option(
        min=1, help="Outcome window after each exposure, in days.")] = 30,
    kept_days: Annotated[int, typer.Option(
        min=1, help="A customer is kept with an order within this many days.")] = 90,
    expected_holdout: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Planned holdout share for the sample-ratio check [default: "
                               "the recorded plan's].")] = None,
) -> None:
    """Measure a campaign against its holdout once its window has matured.

    For the campaign's exposures, the orders in [exposed_at, exposed_at + horizon) give,
    treated against held out: spend per customer, conversion, orders per customer, spend
    per buyer, order value among buyers, and the share kept (an order within --kept-days),
    each with the difference, its 95% interval (Welch) and the relative change. A
    sample-ratio check compares the groups' sizes with the planned holdout share
    (chi-square; p below 0.001 means the assignment went wrong and the readout should not
    be trusted). Logged under the MLflow experiment `campaigns`.

    Example: churn campaign report --data data/ --campaign spring
    """
    from operations import campaign as camp

    _store()
    try:
        cfg = camp.ReportConfig(data=data, campaign=campaign, horizon_days=horizon_days,
                                kept_days=kept_days, expected_holdout=expected_holdout)
        share = expected_holdout if expected_holdout is not None else \
            camp.planned_holdout(campaign)
        report = camp.report_campaign(cfg, share)
        camp.log_report(report)
    except _user_errors() as err:
        _fail(_message(err))
    _print_report(report)


def _print_report(report) -> None:
    table = Table(title=f"Campaign {report.config.campaign}: {report.treated:,} treated, "
                        f"{report.held_out:,} held out, exposed {report.exposed_from} .. "
                        f"{report.exposed_to}, outcomes over {report.config.horizon_days} days",
                  title_justify="left")
    for column in ("outcome", "treated", "holdout", "difference", "95% interval", "relative"):
        table.add_column(column, justify="left" if column == "outcome" else "right")
    for _, row in report.effects.iterrows():
        if pd.isna(row["difference"]):
            continue
        percent = row["outcome"] in ("conversion", "kept")
        fmt = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:,.2f}")
        sign = (lambda v: f"{v:+.1%}") if percent else (lambda v: f"{v:+,.2f}")
        table.add_row(row["label"], fmt(row["treated"]), fmt(row["holdout"]),
                      sign(row["difference"]), f"{sign(row['low'])} .. {sign(row['high'])}",
                      "-" if pd.isna(row["relative"]) else f"{row['relative']:+.1%}")
    out_console.print(table)
    if report.srm_p is not None:
        state = "ok" if report.sample_ratio_ok else "FAILED: do not trust this readout"
        held = report.held_out / (report.treated + report.held_out)
        out_console.print(f"Sample ratio: {held:.1%} held out against "
                          f"{report.expected_holdout:.1%} planned, chi-square "
                          f"p = {report.srm_p:.3g} ({state}).", highlight=False)
    for note in report.notes:
        out_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    out_console.print(f"Recorded as run {report.run_id} (MLflow experiment 'campaigns').",
                      highlight=False)


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"use one of {', '.join(allowed)}", param_hint=option)
    return value


def _user_errors() -> tuple[type[Exception], ...]:
    from churn import model_steps as steps

    return steps.USER_ERRORS


@app.command("serve")
def serve_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(
        help="Interface to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    policy: Annotated[Path | None, typer.Option(
        help="Segmentation policy (TOML) [default: serving/segments.toml].")] = None,
    max_request_bytes: Annotated[int, typer.Option(
        min=1, help="Larger request bodies get 413.")] = 8 * 1024 * 1024,
    compiled: CompiledOption = True,
    model_name: ModelNameOption = "churn",
    uplift_model_name: UpliftNameOption = "uplift",
    no_uplift: NoUpliftOption = False,
    allow_data_mismatch: MismatchOption = False,
    watch_seconds: Annotated[float, typer.Option(
        min=0, envvar="CHURN_WATCH_SECONDS",
        help="How often to check the registry for a new champion, which is then swapped in "
             "without a restart; 0 never checks.")] = 60,
) -> None:
    """Serve the champion churn model over HTTP (BentoML).

    POST /score_history (recent contract rows), /score_features (feature rows) or
    /score_table (the same, column-wise); GET /metadata (which models answer), /livez,
    /readyz, /metrics. The API's page is at /docs, its OpenAPI document at /docs.json.
    Set CHURN_API_TOKEN to require `Authorization: Bearer <token>` on every call but the
    probes, metrics and docs.
    """
    import sys

    from models.store import default_tracking_uri

    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri(Path.cwd()))
    # Fail here, in seconds and in one line, rather than in a server that never gets ready.
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    _store(read_only=True)
    _champion_or_fail(model_name)
    env["CHURN_MAX_REQUEST_BYTES"] = str(max_request_bytes)
    env["CHURN_COMPILED_FOREST"] = "1" if compiled else "0"
    env["CHURN_MODEL_NAME"] = model_name
    env["CHURN_UPLIFT_MODEL_NAME"] = uplift_model_name
    env["CHURN_NO_UPLIFT"] = "1" if no_uplift else "0"
    env["CHURN_ALLOW_DATA_MISMATCH"] = "1" if allow_data_mismatch else "0"
    env["CHURN_WATCH_SECONDS"] = str(watch_seconds)
    if policy:
        env["CHURN_POLICY"] = str(policy.resolve())
    bentoml = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml), "serve", "serving.service:ChurnService", "--port", str(port),
               "--host", host]
    # Become the server, so signals (Ctrl+C, a supervisor's SIGTERM) reach it directly.
    os.execve(bentoml, command, env)


@app.command("build")
def build_command(
    policy: Annotated[Path | None, typer.Option(
        help="Segmentation policy (TOML) to build in [default: serving/segments.toml].")] = None,
    model_name: ModelNameOption = "churn",
    uplift_model_name: UpliftNameOption = "uplift",
    no_uplift: NoUpliftOption = False,
    allow_data_mismatch: MismatchOption = False,
) -> None:
    """Build a bento (BentoML) with the champions and the policy inside.

    The bento serves with no access to the MLflow store: `bentoml serve TAG` runs it here,
    `bentoml containerize TAG` makes an OCI image of it (needs Docker). Bentos go to
    $BENTOML_HOME (default ~/bentoml).
    """
    import sys

    from churn import model_steps as steps
    from serving.bundle import BuildError, build_bento

    _store(read_only=True)
    try:
        chosen = steps.SegmentPolicy.load(policy or steps.DEFAULT_POLICY)
        loaded = steps.load_champion(
            model_name, uplift=not no_uplift and chosen.uses_uplift,
            uplift_arm=chosen.uplift_arm or None, uplift_name=uplift_model_name,
            check=steps.DataCheck(allow_mismatch=allow_data_mismatch))
        tag = build_bento(loaded, policy or steps.DEFAULT_POLICY,
                          Path(sys.executable).with_name("bentoml"))
    except (*steps.USER_ERRORS, BuildError) as err:
        _fail(_message(err))
    out_console.print(f"Built bento {tag} with {loaded.label}.\nServe it:        bentoml serve "
                      f"{tag} --port 3000\nMake an image:   bentoml containerize {tag}",
                      highlight=False, soft_wrap=True)


def _demo_promote(name: str, run_id: str) -> None:
    """Promote, and where the candidate does not earn it, say so and go on with the rest."""
    from churn import model_steps as steps

    try:
        out_console.print(steps.promote(name, run_id).message(), highlight=False,
                          soft_wrap=True)
    except steps.PromotionError as err:
        out_console.print(f"note: {err}", highlight=False, soft_wrap=True)


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Folder for the demo's data and outputs.")] = Path(
        "demo-output"),
    customers: Annotated[int, typer.Option(min=100, help="Synthetic customers.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Run the whole path on synthetic data: generate -> features -> train -> promote -> score.

    Trains and promotes both models: churn (on monthly cutoffs) and spend uplift (on the
    synthetic randomised campaign), so the scores carry uplift_spend and win_back.

    Everything stays local: the data and features under --out, the MLflow runs and registry
    in ./mlflow.db (or $MLFLOW_TRACKING_URI).
    """
    from churn import model_steps as steps
    from churn import uplift_steps as up

    started = time.perf_counter()
    uri = _store()
    gen = GenerateConfig(customers=customers, seed=seed)
    data = out / "data"
    rows = _generate(gen, data, "parquet")
    out_console.print(f"Generated {customers:,} customers: {rows['transactions']:,} transaction "
                      f"rows, {rows['events']:,} events -> {data}", highlight=False, soft_wrap=True)
    as_of = as_of_default(gen)
    cfg = FeaturesJobConfig(data=data, as_of=as_of, out=out / "features.parquet")
    train_cfg = steps.ChurnTrainConfig(data=data, seed=seed)
    try:
        result = _features(cfg)
        _print_features_summary(result, cfg)
        run_started = steps.now_ms()
        trained = steps.train(train_cfg, _progress())
        logged = steps.log_churn_run(train_cfg, trained, started_ms=run_started)
        steps.print_metrics(trained, out_console)
        _demo_promote(steps.CHURN_MODEL_NAME, logged.run_id)
        steps.where_to_look(uri, logged, out_console)
        uplift_cfg = up.UpliftTrainConfig(data=data, seed=seed)
        run_started = steps.now_ms()
        uplifted = up.train(uplift_cfg, _progress())
        uplift_run = up.log_uplift_run(uplift_cfg, uplifted, started_ms=run_started)
        up.print_result(uplifted, out_console)
        _demo_promote(up.UPLIFT_MODEL_NAME, uplift_run.run_id)
        scored = steps.score(steps.ScoreJobConfig(
            data=data, as_of=gen.end, out=str(out / "scores.parquet")), _progress())
    except steps.USER_ERRORS as err:
        _fail(_message(err))
    steps.print_segments(scored, out_console)
    out_console.print(DEMO_SERVE_HINT, highlight=False, soft_wrap=True, markup=False)
    out_console.print(f"Demo finished in {time.perf_counter() - started:.1f} s",
                      highlight=False, soft_wrap=True)


def main() -> None:
    app()
