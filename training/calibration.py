"""Calibration of the churn booster's margin: Platt or isotonic, chosen on validation rows."""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from models.churn_model import Calibrator

CALIBRATION_METHODS = ("platt", "isotonic")


def fit_calibrator(method: str, margin: np.ndarray, y: np.ndarray) -> Calibrator:
    """A ``method`` calibrator fitted to map ``margin`` to P(y = 1)."""
    if method == "platt":
        lr = LogisticRegression(C=1e6).fit(margin.reshape(-1, 1), y)
        return Calibrator(method, {"coef": [float(lr.coef_[0, 0])],
                                   "intercept": [float(lr.intercept_[0])]})
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(margin, y)
    return Calibrator(method, {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})


def cross_fitted_probabilities(method: str, margin: np.ndarray, y: np.ndarray,
                               seed: int, folds: int = 5) -> np.ndarray:
    """Calibrated probabilities where each row's calibrator never saw that row."""
    out = np.empty_like(margin, dtype=float)
    for fit_idx, pred_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(
            margin, y):
        out[pred_idx] = fit_calibrator(method, margin[fit_idx], y[fit_idx]).predict(
            margin[pred_idx])
    return out


def choose_calibration(margin: np.ndarray, y: np.ndarray,
                       seed: int) -> tuple[str, dict[str, float], np.ndarray]:
    """The method with the lower cross-fitted log loss, every method's loss, its probabilities."""
    probs = {m: cross_fitted_probabilities(m, margin, y, seed) for m in CALIBRATION_METHODS}
    losses = {m: log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]) for m, p in probs.items()}
    best = min(losses, key=losses.get)
    return best, losses, probs[best]
