"""The ``churn`` command and its groups; each group's commands live in a module of their own."""

from __future__ import annotations

import importlib.metadata
from typing import Annotated

import typer

# Help text is Markdown: a docstring's paragraphs are reflowed to the terminal's width and
# `code` is set off (typer's "rich" mode kept the source's line breaks, choppy at 80 columns).
MARKUP = "markdown"

app = typer.Typer(
    help=(
        "Churn, purchase propensity, predicted value and spend-uplift models for marketing "
        "teams.\n\n"
        "Start with `churn demo`: it generates a synthetic customer base, builds "
        "point-in-time features, trains the churn model against its baselines and the "
        "spend-uplift model on a randomised campaign, makes both champions in the MLflow "
        "registry and scores everyone into segments. Then point the commands at your own data: "
        "a folder holding transactions.csv|parquet and, optionally, events, customers "
        "and exposures (or folders of that name with many files).\n\n"
        "In production: `churn score` on a schedule (each run is recorded), `churn monitor` "
        "to check matured scores and drift (exit 0 healthy, 3 unchecked, 5 drifted, 10 "
        "degrading, 20 retrain), "
        "`churn retrain` to bring in a challenger that wins fairly, and `churn campaign` to "
        "run each campaign against a randomised holdout.\n\n"
        "Runs go to $MLFLOW_TRACKING_URI, or to ./mlflow.db when it is not set."
    ),
    no_args_is_help=True,
    rich_markup_mode=MARKUP,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train a model and record the run in MLflow.",
                        no_args_is_help=True, rich_markup_mode=MARKUP)
promote_app = typer.Typer(help="Move a registered model's `champion` alias when it earns it.",
                          no_args_is_help=True, rich_markup_mode=MARKUP)
evaluate_app = typer.Typer(help="Evaluate a model out of fold and write its scores.",
                           no_args_is_help=True, rich_markup_mode=MARKUP)
backtest_app = typer.Typer(help="Measure a model the way it would have done in the past.",
                           no_args_is_help=True, rich_markup_mode=MARKUP)
app.add_typer(train_app, name="train")
app.add_typer(backtest_app, name="backtest")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(promote_app, name="promote")
campaign_app = typer.Typer(help="Run a campaign as an experiment: a randomised holdout, then "
                                "the measured readout.", no_args_is_help=True,
                            rich_markup_mode=MARKUP)
app.add_typer(campaign_app, name="campaign")
# Piped or logged, rich would cut tables to 80 columns: lay them out at their full width.


def _print_version(asked: bool) -> None:
    if asked:
        try:
            version = importlib.metadata.version("churn-propensity")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        typer.echo(f"churn-propensity {version}")
        raise typer.Exit()


@app.callback()
def options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the package version and exit.")] = False,
            verbose: Annotated[bool, typer.Option(
        "--verbose", help="Write every step of long work (loading, features, training, "
                          "scoring) as a line with its time, for logs: churn --verbose train "
                          "churn ...")] = False) -> None:
    """Options of the command itself."""
    from churn.cli.common import VERBOSE

    VERBOSE["on"] = verbose
