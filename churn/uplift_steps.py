"""The uplift steps behind `churn train uplift`, `churn evaluate uplift` and the demo.

Kept apart from the CLI module so that `churn --help` starts without importing MLflow and
LightGBM.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from models.registry import UPLIFT_MODEL_NAME
from training.config import UpliftTrainConfig
from training.train_uplift import (
    ArmResult,
    UpliftResult,
    evaluate_uplift,
    evaluation_metrics,
    summarize_evaluation,
    train_uplift,
)
from training.uplift_tracking import log_uplift_run

__all__ = ["UPLIFT_MODEL_NAME", "UpliftTrainConfig", "log_uplift_run"]

OUTCOME_LABELS = {"spend": "spend", "conversion": "conversion rate", "orders": "orders",
                  "aov": "order value (buyers)", "order_value": "spend among buyers"}


def train(cfg: UpliftTrainConfig, progress: Progress) -> UpliftResult:
    """Train with a progress line naming the current step."""
    with progress as bar:
        task = bar.add_task("Loading the experiment", total=None)
        return train_uplift(cfg, progress=lambda text: bar.update(task, description=text))


def print_result(result: UpliftResult, console: Console) -> None:
    """Per arm: average effects, the learners' out-of-fold Qini, and any warnings."""
    for arm, r in result.arms.items():
        table = Table(title=f"{arm} vs control ({r.treated:,} treated, {r.control:,} control)",
                      title_justify="left")
        for column in ("outcome", "treated - control", "95% interval"):
            table.add_column(column, justify="left" if column == "outcome" else "right")
        for outcome, (effect, se) in r.effects.items():
            if not math.isnan(effect):
                table.add_row(OUTCOME_LABELS.get(outcome, outcome), f"{effect:+.4g}",
                              f"{effect - 1.96 * se:+.4g} .. {effect + 1.96 * se:+.4g}")
        console.print(table)
        console.print(_learner_table(r))
        if r.combination:
            console.print(f"The model ({r.selection.winner}): {r.combination}",
                          highlight=False, soft_wrap=True)
        intervals = result.model.learners[arm].intervals
        if intervals:
            groups = " | ".join(f"{low:+.3g} .. {high:+.3g}" for low, high in
                                zip(intervals["low"], intervals["high"], strict=True))
            console.print(f"Effect by fifth of the ranking, lowest first (held-out rows, 95%; "
                          f"each customer's uplift_spend_low .. uplift_spend_high): {groups}",
                          highlight=False, soft_wrap=True)
        m = r.metrics["spend"]
        chosen = r.nested["learners_chosen"].iloc[0].split(",")
        how = (f"{chosen[0]} fitted inside each of {len(chosen)} folds" if len(set(chosen)) == 1
               else f"the learner chosen again inside each of {len(chosen)} folds: "
                    f"{', '.join(chosen)}")
        console.print(f"Nested out of fold ({how}): Qini {m.qini:.4f}, AUUC {m.auuc:.3f}; "
                      f"uplift in the top 10/20/30%: {m.uplift_at_10:+.3g} / "
                      f"{m.uplift_at_20:+.3g} / {m.uplift_at_30:+.3g} "
                      f"(everyone: {r.effects['spend'][0]:+.3g})", highlight=False,
                      soft_wrap=True)
        for warning in r.warnings():
            console.print(f"[bold yellow]warning:[/] {warning}", highlight=False,
                          soft_wrap=True)


def _learner_table(r: ArmResult) -> Table:
    """The candidates' out-of-fold Qini when one was chosen; otherwise the model's nested
    Qini beside each ensemble member's on the same folds."""
    if len(r.selection.qini) > 1:
        table = Table(title="Out-of-fold Qini of the candidates (0 = random)",
                      title_justify="left")
        qini = dict(sorted(r.selection.qini.items(), key=lambda kv: -kv[1]))
    else:
        table = Table(title="Nested out-of-fold Qini on spend, same folds (0 = random)",
                      title_justify="left")
        qini = r.nested_qini()
    table.add_column("learner")
    table.add_column("Qini", justify="right")
    for name, q in qini.items():
        mark = "  <- the model" if name == r.selection.winner else ""
        table.add_row(name + mark, f"{q:.4f}")
    return table


def evaluate(cfg: UpliftTrainConfig, folds: int, repeats: int, out: Path,
             progress: Progress) -> pd.DataFrame:
    """Write out-of-fold scores to ``out`` and return the metrics summary."""
    with progress as bar:
        task = bar.add_task("Loading the experiment", total=None)
        scores = evaluate_uplift(cfg, folds, repeats,
                                 progress=lambda text: bar.update(task, description=text))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    if out.suffix.lower() == ".csv":
        scores.to_csv(partial, index=False)
    else:
        scores.to_parquet(partial, index=False)
    partial.replace(out)
    return summarize_evaluation(evaluation_metrics(scores))


def print_evaluation(summary: pd.DataFrame, out: Path, console: Console) -> None:
    table = Table(title=f"Out-of-fold uplift metrics (scores per customer in {out})",
                  title_justify="left")
    for column in ("arm", "outcome", "scorer", "Qini", "Qini sd", "AUUC", "top 10%",
                   "top 20%", "top 30%"):
        table.add_column(column, justify="left" if column in ("arm", "outcome", "scorer")
                         else "right")
    for row in summary.itertuples():
        sd = "-" if row.qini_sd != row.qini_sd else f"{row.qini_sd:.4f}"
        outcome = OUTCOME_LABELS.get(row.outcome, row.outcome)
        table.add_row(row.arm, outcome, row.scorer, f"{row.qini:.4f}", sd, f"{row.auuc:.3f}",
                      f"{row.uplift_at_10:+.3g}", f"{row.uplift_at_20:+.3g}",
                      f"{row.uplift_at_30:+.3g}")
    console.print(table)
