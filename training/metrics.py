"""How good a churn score is: ranking, probability quality, and what a marketer gets from it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

# ROC AUC read as a verdict, after Hosmer & Lemeshow's bands for discrimination. Top-decile
# lift is not used here: where most of the base churns, even a perfect ranking has a lift
# near 1 (at most 1 / churn rate).
VERDICT_BANDS = ((0.9, "excellent"), (0.8, "good"), (0.7, "fair"), (0.0, "poor"))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean prediction| over equal-width bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.sum() * abs(y[in_bin].mean() - p[in_bin].mean())
    return total / len(y)


def decile_table(y: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Customers sorted by score into ten equal groups, riskiest first, with lift and gains."""
    order = np.argsort(-score, kind="stable")
    groups = np.array_split(y[order], 10)
    rate = y.mean()
    rows = []
    captured = 0.0
    for i, g in enumerate(groups, start=1):
        captured += g.sum()
        rows.append({"decile": i, "customers": len(g), "churners": int(g.sum()),
                     "churn_rate": g.mean(), "lift": g.mean() / rate,
                     "capture": captured / y.sum()})
    return pd.DataFrame(rows)


def verdict(roc_auc: float) -> str:
    """A one-word reading of how well a score separates churners from the rest."""
    return next(name for floor, name in VERDICT_BANDS if roc_auc >= floor)


@dataclass(frozen=True)
class ScoreMetrics:
    """Metrics of one score on one labelled set; probability metrics are NaN for rank scores."""

    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float
    top_decile_lift: float
    top_decile_capture: float

    @property
    def verdict(self) -> str:
        return verdict(self.roc_auc)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in self.__dict__.items() if not math.isnan(v)}


def score_metrics(y: np.ndarray, score: np.ndarray, is_probability: bool) -> ScoreMetrics:
    """All metrics of ``score`` (higher = more likely to churn) against labels ``y``."""
    y = np.asarray(y, dtype=float)
    score = np.asarray(score, dtype=float)
    deciles = decile_table(y, score)
    nan = float("nan")
    if is_probability:
        p = np.clip(score, 1e-7, 1 - 1e-7)
        prob = (log_loss(y, p, labels=[0, 1]), brier_score_loss(y, p),
                expected_calibration_error(y, p))
    else:
        prob = (nan, nan, nan)
    return ScoreMetrics(roc_auc_score(y, score), average_precision_score(y, score), *prob,
                        float(deciles.lift.iloc[0]), float(deciles.capture.iloc[0]))
