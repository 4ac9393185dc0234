"""`churn train uplift`, `churn evaluate uplift` and `churn promote uplift`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churn.cli.app import evaluate_app, promote_app, train_app
from churn.cli.churn_model import promote_or_fail
from churn.cli.common import ThreadsOption, fail, one_line, out_console, progress_bar, use_store
from models.registry import UPLIFT_MODEL_NAME
from training.config import BASE, UPLIFT

UpliftData = Annotated[Path | None, typer.Option(
    "--data", help="Folder of contract tables with an exposures table (treatment 1 / "
                   "randomised holdout 0).")]
UpliftCampaign = Annotated[str | None, typer.Option(
    help="Campaign id in exposures \\[default: the only one].")]
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
    help="adaptive (the default): every learner below is fitted on half the rows and "
         "scores the other half. Unless one beats a constant effect there by two standard "
         "errors, that evidence is noise and all are averaged on one scale. Otherwise a "
         "learner worse than the constant by two standard errors gets no weight and the rest "
         "are averaged (or weighted by their held-out R-loss when that is better by more "
         "than one standard error). Effects are shrunk to the scale the held-out rows "
         "support and the learners fitted again on every row. Or ensemble "
         "(all averaged, always), ensemble_or_distilled (the average, distilled into small "
         "trees when held-out rows say so), auto (pick one by out-of-fold Qini), stacked "
         "(R-loss weights), or one of t_learner, x_learner, dr_learner, dr_linear, "
         "transformed_outcome, two_part (a hurdle model: P(buy) x spend among buyers, per "
         "group).")]
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
                   trees: tuple[int, int, int, float], threads: int) -> object:
    from training.config import BaseParams, UpliftTrainConfig

    leaves, min_leaf, rounds, rate = trees
    return UpliftTrainConfig(data=data, campaign=campaign, horizon_days=horizon_days,
                             table=table, treatments=tuple(treatment or ()), control=control,
                             outcome=outcome, ignore=tuple(ignore or ()), learner=learner,
                             expected_share=expected_share, seed=seed,
                             params=BaseParams(learning_rate=rate, num_leaves=leaves,
                                               min_data_in_leaf=min_leaf, rounds=rounds,
                                               seed=seed, threads=threads))


@train_app.command("uplift")
def train_uplift_command(
    data: UpliftData = None, campaign: UpliftCampaign = None,
    horizon_days: UpliftHorizon = UPLIFT.horizon_days,
    table: UpliftTable = None, treatment: UpliftTreatment = None, control: UpliftControl = None,
    outcome: UpliftOutcome = UPLIFT.outcome, ignore: UpliftIgnore = None,
    learner: UpliftLearner = UPLIFT.learner, expected_share: UpliftShare = None,
    num_leaves: UpliftLeaves = BASE.num_leaves,
    min_data_in_leaf: UpliftMinLeaf = BASE.min_data_in_leaf,
    rounds: UpliftRounds = BASE.rounds, learning_rate: UpliftRate = BASE.learning_rate,
    seed: Annotated[int, typer.Option(help="Random seed.")] = UPLIFT.seed,
    threads: ThreadsOption = BASE.threads,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "uplift",
    model_name: Annotated[str, typer.Option(
        "--model-name", help="Registered uplift model name: give each dataset its own.")
    ] = UPLIFT_MODEL_NAME,
) -> None:
    """Train a spend-uplift model on a randomised experiment; register it (as `uplift`, or
    --model-name).

    From contract tables (--data) or a flat table (--table with --treatment, --control and
    --outcome). One model per arm against control. The default learner (adaptive) lets the
    experiment's own held-out rows decide: on two inner folds every learner (T, X, DR,
    DR with a ridge stage, transformed outcome, two-part) estimates rows it never saw; a
    learner worse there than a constant effect by two standard errors gets no weight; the
    rest are averaged on one scale (or weighted by held-out R-loss when that wins by a
    standard error); effects are shrunk toward the average as far as the held-out rows
    say; and each customer gets the 95% interval of the average effect among customers
    ranked like them (uplift_spend_low, uplift_spend_high). What it decided is printed.
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

    uri = use_store()
    try:
        cfg = _uplift_config(data, campaign, horizon_days, table, treatment, control, outcome,
                             ignore, learner, expected_share, seed,
                             (num_leaves, min_data_in_leaf, rounds, learning_rate), threads)
        started = steps.now_ms()
        result = up.train(cfg, progress_bar())  # type: ignore[arg-type]
        logged = up.log_uplift_run(cfg, result, experiment=experiment,  # type: ignore[arg-type]
                                   registered_name=model_name, started_ms=started)
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    up.print_result(result, out_console)
    steps.where_to_look(uri, logged, out_console, model_name)


@evaluate_app.command("uplift")
def evaluate_uplift_command(
    out: Annotated[Path, typer.Option(help="Out-of-fold scores to write (.parquet or .csv).")],
    data: UpliftData = None, campaign: UpliftCampaign = None,
    horizon_days: UpliftHorizon = UPLIFT.horizon_days,
    table: UpliftTable = None, treatment: UpliftTreatment = None, control: UpliftControl = None,
    outcome: UpliftOutcome = UPLIFT.outcome, ignore: UpliftIgnore = None,
    learner: UpliftLearner = UPLIFT.learner, expected_share: UpliftShare = None,
    num_leaves: UpliftLeaves = BASE.num_leaves,
    min_data_in_leaf: UpliftMinLeaf = BASE.min_data_in_leaf,
    rounds: UpliftRounds = BASE.rounds, learning_rate: UpliftRate = BASE.learning_rate,
    folds: Annotated[int, typer.Option(help="Outer folds.")] = 5,
    repeats: Annotated[int, typer.Option(help="Repeats with fresh folds.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = UPLIFT.seed,
    threads: ThreadsOption = BASE.threads,
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
                             (num_leaves, min_data_in_leaf, rounds, learning_rate), threads)
        summary = up.evaluate(cfg, folds, repeats, out, progress_bar())  # type: ignore[arg-type]
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    up.print_evaluation(summary, out, out_console)


@promote_app.command("uplift")
def promote_uplift_command(
    run: Annotated[str | None, typer.Option(
        help="The run whose model is the candidate \\[default: the newest version].")] = None,
    model_name: Annotated[str, typer.Option(
        "--model-name", help="Registered uplift model name.")] = UPLIFT_MODEL_NAME,
) -> None:
    """Make the candidate uplift model champion if it beats the current one fairly.

    Both are judged by nested out-of-fold Qini (the learner chosen again inside each training
    fold), averaged over arms: on the same experiment each run's own nested scores; on
    another experiment the champion scores the candidate's rows, if it never saw them. The
    alias moves only when the candidate's is higher. A first champion must beat random
    targeting (Qini above 0).
    """
    promote_or_fail("uplift", model_name, run)
