"""Purchase propensity: P(at least one order in the next H days) for every customer with a
past order, lapsed ones included.

It is the churn trainer's model over a base that reaches back through all history
(``training.config.propensity_labels``): no order within the horizon is the label it fits,
and its complement the purchase probability. Reported on the purchase label, beside the
recency rule and BG/NBD's P(at least one purchase in H) on the same customers; promoted by
the churn model's rule (ROC AUC on the candidate's test rows, the same on either label).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date

import pandas as pd

from features.validation import Progress
from training.backtest import BacktestResult, run_backtest
from training.config import ChurnTrainConfig, propensity_labels
from training.metrics import score_metrics
from training.train_churn import MODEL, ChurnTrainResult, train_churn

WEEK = 7.0
SCORER_LABELS = {MODEL: "model", "recency_rule": "recency rule",
                 "bgnbd_p_purchase": "BG/NBD P(any order)"}


def propensity_config(cfg: ChurnTrainConfig, horizon_days: int) -> ChurnTrainConfig:
    """``cfg`` with the propensity label: every past buyer, an order within ``horizon_days``."""
    return replace(cfg, labels=propensity_labels(horizon_days))


def as_propensity(result: ChurnTrainResult) -> ChurnTrainResult:
    """``result`` reported on the purchase label, with the purchase baselines."""
    result.model.kind = "propensity"
    result.target = "purchase"
    test = result.test
    horizon = result.model.label.horizon_days
    summary = _summary(result)
    scores = {
        "recency_rule": -test["recency_days"].fillna(1e9).to_numpy(),
        "bgnbd_p_purchase": result.bgnbd.p_any_purchase(summary, horizon / WEEK),
    }
    y = result.outcome()
    result.metrics = {MODEL: score_metrics(y, result.model_scores(), True),
                      "recency_rule": score_metrics(y, scores["recency_rule"], False),
                      "bgnbd_p_purchase": score_metrics(y, scores["bgnbd_p_purchase"], True)}
    result.baseline_scores = scores
    return result


def _summary(result: ChurnTrainResult) -> pd.DataFrame:
    """The BG/NBD summary of the test rows, in their order."""
    return result.clv_summary.set_index("customer_id").loc[result.test["customer_id"]]


def train_propensity(cfg: ChurnTrainConfig, horizon_days: int,
                     progress: Progress | None = None,
                     on_step: Callable[[str], None] | None = None) -> ChurnTrainResult:
    """Train the propensity model on the tables in ``cfg.data``."""
    return as_propensity(train_churn(propensity_config(cfg, horizon_days), progress, on_step))


def backtest_propensity(cfg: ChurnTrainConfig, horizon_days: int, origins: tuple[date, ...],
                        progress: Progress | None = None,
                        on_step: Callable[[str], None] | None = None) -> BacktestResult:
    """Rolling-origin backtest of the propensity model, reported on the purchase label."""
    return run_backtest(propensity_config(cfg, horizon_days), origins, progress, on_step,
                        report=as_propensity)
