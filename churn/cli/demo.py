"""`churn demo`: the whole path on synthetic data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from churn.cli.app import app
from churn.cli.common import DEMO_SERVE_HINT, fail, one_line, out_console, progress_bar, use_store
from churn.cli.data import features_with_progress, generate_with_progress, print_features_summary
from features.job import FeaturesJobConfig
from features.synthetic import GenerateConfig, as_of_default


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
    uri = use_store()
    gen = GenerateConfig(customers=customers, seed=seed)
    data = out / "data"
    rows = generate_with_progress(gen, data, "parquet")
    out_console.print(f"Generated {customers:,} customers: {rows['transactions']:,} transaction "
                      f"rows, {rows['events']:,} events -> {data}", highlight=False, soft_wrap=True)
    as_of = as_of_default(gen)
    cfg = FeaturesJobConfig(data=data, as_of=as_of, out=out / "features.parquet")
    train_cfg = steps.ChurnTrainConfig(data=data, seed=seed)
    try:
        result = features_with_progress(cfg)
        print_features_summary(result, cfg)
        run_started = steps.now_ms()
        trained = steps.train(train_cfg, progress_bar())
        logged = steps.log_churn_run(train_cfg, trained, started_ms=run_started)
        steps.print_metrics(trained, out_console)
        _demo_promote(steps.CHURN_MODEL_NAME, logged.run_id)
        steps.where_to_look(uri, logged, out_console)
        uplift_cfg = up.UpliftTrainConfig(data=data, seed=seed)
        run_started = steps.now_ms()
        uplifted = up.train(uplift_cfg, progress_bar())
        uplift_run = up.log_uplift_run(uplift_cfg, uplifted, started_ms=run_started)
        up.print_result(uplifted, out_console)
        _demo_promote(up.UPLIFT_MODEL_NAME, uplift_run.run_id)
        scored = steps.score(steps.ScoreJobConfig(
            data=data, as_of=gen.end, out=str(out / "scores.parquet")), progress_bar())
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    steps.print_segments(scored, out_console)
    out_console.print(DEMO_SERVE_HINT, highlight=False, soft_wrap=True, markup=False)
    out_console.print(f"Demo finished in {time.perf_counter() - started:.1f} s",
                      highlight=False, soft_wrap=True)
