"""`churn monitor`, `churn retrain` and `churn campaign`: the production loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from churn.cli.app import app, campaign_app
from churn.cli.common import (
    ModelNameOption,
    OnBadRowsOption,
    choice,
    fail,
    iso_date,
    one_line,
    optional_date,
    out_console,
    progress_bar,
    use_store,
    user_errors,
)
from features.validation import OnBadRows
from models.registry import CHURN_MODEL_NAME

# `churn campaign report` before the campaign's window has ended in the data.
NOT_YET = 4


@app.command("monitor")
def monitor_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables (only "
                                            "transactions are read).")],
    as_of: Annotated[str, typer.Option(
        help="Check every scoring run whose label window has ended by this date.")],
    model_name: ModelNameOption = CHURN_MODEL_NAME,
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
    exits with a code a scheduler can act on: 0 healthy, 3 unchecked (nothing matured yet),
    5 drifted (inputs moved, quality holds), 10 degrading, 20 retrain
    (1 when it could not check).

    Example: churn monitor --data data/ --as-of 2026-03-01
    """
    from churn import model_steps as steps

    use_store(read_only=True, writes=True)  # the monitoring run is recorded there
    try:
        cfg = steps.MonitorConfig(
            data=data, as_of=iso_date(as_of), model_name=model_name,
            warn_auc_drop=warn_auc_drop, retrain_auc_drop=retrain_auc_drop, warn_ece=warn_ece,
            retrain_ece=retrain_ece, on_bad_rows=on_bad_rows)
        report = steps.run_monitor(cfg, progress_bar())
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    steps.print_monitor(report, out_console)
    raise typer.Exit(report.exit_code)


@app.command("retrain")
def retrain_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables the champion "
                                            "was trained on, with newer data added.")],
    model_name: ModelNameOption = CHURN_MODEL_NAME,
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

    # Retraining needs a champion, so the store must exist: a mistyped path creates nothing.
    uri = use_store(read_only=True, writes=True)
    try:
        outcome = steps.run_retrain(data, model_name, experiment, on_bad_rows, progress_bar())
    except steps.USER_ERRORS as err:
        fail(one_line(err))
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
        help="Which scores (a table holding several as-ofs) \\[default: the latest].")] = None,
    exposed_at: Annotated[str | None, typer.Option(
        help="The exposure date written to exposures \\[default: the scores' as-of].")] = None,
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

    use_store()
    try:
        cfg = camp.PlanConfig(
            scores=scores, segment=segment, holdout=holdout, campaign=campaign, out=out,
            seed=seed, as_of=optional_date(as_of), exposed_at=optional_date(exposed_at),
            stratify=choice(stratify, camp.STRATIFY, "--stratify"), data=data,
            max_switches=max_switches, max_smd=max_smd)
        plan = camp.plan_campaign(cfg)
        paths = camp.write_plan(plan)
        camp.log_plan(plan, paths)
    except user_errors() as err:
        fail(one_line(err))
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
    power = plan.power
    if power is None:
        out_console.print("Give --data to see the smallest effect this holdout can detect.",
                          highlight=False)
    else:
        out_console.print(
            f"Minimum detectable effect (80% power, 5% two-sided): spend {power.spend:+,.2f} "
            f"per customer, conversion {power.conversion:+.1%}.", highlight=False,
            soft_wrap=True)
        if power.enough is False:
            out_console.print(
                f"[bold yellow]warning:[/] the uplift model predicts {power.predicted_spend:+,.2f} "
                f"per contacted customer, below what this holdout can detect: hold out more "
                f"(--holdout) or draw from a larger segment.", highlight=False, soft_wrap=True)
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
        min=0.0, max=1.0, help="Planned holdout share for the sample-ratio check \\[default: "
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

    Exit codes: 0 measured, 4 not yet (the window has not ended in the data; nothing is
    logged), 1 failed.

    Example: churn campaign report --data data/ --campaign spring
    """
    from operations import campaign as camp

    use_store()
    try:
        cfg = camp.ReportConfig(data=data, campaign=campaign, horizon_days=horizon_days,
                                kept_days=kept_days, expected_holdout=expected_holdout)
        share = expected_holdout if expected_holdout is not None else \
            camp.planned_holdout(campaign)
        report = camp.report_campaign(cfg, share)
        camp.log_report(report)
    except camp.NotMaturedError as err:
        out_console.print(f"not yet: {one_line(err)}", highlight=False, soft_wrap=True)
        raise typer.Exit(NOT_YET) from None
    except user_errors() as err:
        fail(one_line(err))
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
