"""How good an uplift score is: Qini and AUUC curves and coefficients, uplift at the top.

Everything here takes the outcome ``y``, the treatment flag ``treated`` (1 treated, 0
randomised control) and a ``score`` (higher = contact first) for the same customers.

Qini curve: customers sorted by score, highest first; at each prefix of k customers the
incremental outcome is the treated outcome minus the control outcome scaled to the treated
count, ``Y_t(k) - Y_c(k) * N_t(k) / N_c(k)``. The Qini coefficient is the area between that
curve and the random-targeting line (from 0 to the total increment), over the population
fraction from 0 to 1, divided by the total increment: 0 is random, positive is better.

Uplift curve (for AUUC): at each prefix, ``(mean_t(k) - mean_c(k)) * k``; AUUC is its area
over the population fraction divided by the whole population's ``mean_t - mean_c``, so random
targeting gives 0.5.

Customers with the same score cannot be told apart, so a tied group enters the curves as one
step (as scikit-learn's ``roc_curve`` and scikit-uplift treat ties): the curves have a point
only where the score changes, and the result never depends on the rows' order. A constant
score is random targeting: Qini 0, AUUC 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TOP_FRACTIONS = (0.1, 0.2, 0.3)


def _prefix_sums(y: np.ndarray, treated: np.ndarray,
                 score: np.ndarray) -> tuple[np.ndarray, ...]:
    """Customers so far, treated and control counts and outcome sums, at the end of each
    group of tied scores (highest scores first)."""
    score = np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="stable")
    t = np.asarray(treated, dtype=bool)[order]
    y = np.asarray(y, dtype=float)[order]
    ends = np.r_[np.flatnonzero(np.diff(score[order]) != 0), len(order) - 1]
    n_t = np.cumsum(t)[ends]
    n_c = np.cumsum(~t)[ends]
    y_t = np.cumsum(np.where(t, y, 0.0))[ends]
    y_c = np.cumsum(np.where(t, 0.0, y))[ends]
    return ends + 1, n_t, n_c, y_t, y_c


def qini_curve(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Population fraction against incremental outcome, starting at (0, 0); one point per
    distinct score."""
    k, n_t, n_c, y_t, y_c = _prefix_sums(y, treated, score)
    with np.errstate(invalid="ignore", divide="ignore"):
        control_scaled = np.where(n_c > 0, y_c * n_t / n_c, 0.0)
    incremental = y_t - control_scaled
    return pd.DataFrame({"fraction": np.r_[0.0, k / k[-1]], "incremental": np.r_[0.0, incremental]})


def uplift_curve(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Population fraction against (treated mean - control mean) x customers so far."""
    k, n_t, n_c, y_t, y_c = _prefix_sums(y, treated, score)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(n_t > 0, y_t / np.maximum(n_t, 1), 0.0) - np.where(
            n_c > 0, y_c / np.maximum(n_c, 1), 0.0)
    return pd.DataFrame({"fraction": np.r_[0.0, k / k[-1]], "gain": np.r_[0.0, gap * k]})


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def qini_coefficient(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> float:
    """Area between the Qini curve and random targeting, divided by the total increment."""
    curve = qini_curve(y, treated, score)
    total = float(curve["incremental"].iloc[-1])
    if total == 0.0:
        return float("nan")
    x = curve["fraction"].to_numpy()
    return (_area(x, curve["incremental"].to_numpy()) - total / 2.0) / total


def auuc(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> float:
    """Area under the uplift curve divided by the whole population's gain (random: 0.5)."""
    curve = uplift_curve(y, treated, score)
    total = float(curve["gain"].iloc[-1])
    if total == 0.0:
        return float("nan")
    return _area(curve["fraction"].to_numpy(), curve["gain"].to_numpy()) / total


def uplift_at(y: np.ndarray, treated: np.ndarray, score: np.ndarray, fraction: float) -> float:
    """Treated mean minus control mean among the top ``fraction`` of customers by score."""
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    top = order[: max(1, round(fraction * len(order)))]
    t = np.asarray(treated, dtype=bool)[top]
    y = np.asarray(y, dtype=float)[top]
    if t.all() or not t.any():
        return float("nan")
    return float(y[t].mean() - y[~t].mean())


def uplift_by_decile(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Customers in ten equal groups by score, highest first, with their observed uplift."""
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    t = np.asarray(treated, dtype=bool)
    y = np.asarray(y, dtype=float)
    rows = []
    for i, group in enumerate(np.array_split(order, 10), start=1):
        gt, gy = t[group], y[group]
        rows.append({"decile": i, "customers": len(group), "treated": int(gt.sum()),
                     "treated_mean": gy[gt].mean() if gt.any() else np.nan,
                     "control_mean": gy[~gt].mean() if (~gt).any() else np.nan})
    table = pd.DataFrame(rows)
    table["observed_uplift"] = table["treated_mean"] - table["control_mean"]
    return table


@dataclass(frozen=True)
class UpliftMetrics:
    """One uplift score on one experiment."""

    qini: float
    auuc: float
    uplift_at_10: float
    uplift_at_20: float
    uplift_at_30: float

    @classmethod
    def of(cls, y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> UpliftMetrics:
        at = [uplift_at(y, treated, score, f) for f in TOP_FRACTIONS]
        return cls(qini_coefficient(y, treated, score), auuc(y, treated, score), *at)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in self.__dict__.items()}


def average_effect(y: np.ndarray, treated: np.ndarray) -> tuple[float, float]:
    """Treated mean minus control mean, and its standard error."""
    t = np.asarray(treated, dtype=bool)
    y = np.asarray(y, dtype=float)
    a, b = y[t], y[~t]
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    return float(a.mean() - b.mean()), float(np.sqrt(a.var(ddof=1) / len(a)
                                                     + b.var(ddof=1) / len(b)))
