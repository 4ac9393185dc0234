"""The churn model: a LightGBM booster on the registry's features plus a probability calibrator.

Saved as three plain files (``model.txt``, ``calibration.json``, ``features.json``) so the
scoring service can load the Booster directly, without going through pickles. ``features.json``
also holds the label definition the model was trained for (its base and horizon: scoring
gives a probability to the same base) and the spend percentiles its spend tiers cut.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.labels import ChurnLabelConfig, in_base
from features.registry import FEATURE_SET_VERSION, feature_names
from models.drift import Profile

ARTIFACT_KEY = "churn_model"


@dataclass
class Calibrator:
    """Maps the booster's raw margin to a probability; ``platt`` or ``isotonic``. Fitted by
    ``training.calibration``; applying one needs only NumPy."""

    method: str
    params: dict[str, list[float]]

    def predict(self, margin: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            z = self.params["coef"][0] * np.asarray(margin, dtype=float) \
                + self.params["intercept"][0]
            return 1.0 / (1.0 + np.exp(-z))
        return np.interp(margin, self.params["x"], self.params["y"])


def spend_percentiles(spend: pd.Series) -> list[float]:
    """The 0th..100th percentiles of ``spend_365d`` (missing as 0), for the spend tiers."""
    values = spend.fillna(0.0).to_numpy(dtype=float)
    if not len(values):
        return [0.0] * 101
    return np.percentile(values, np.arange(101)).tolist()


def percentile_rank(values: np.ndarray, percentiles: list[float] | None) -> np.ndarray:
    """Where each value falls among a base described by its 0th..100th ``percentiles``:
    0 at or below the lowest, 100 at or above the highest, linear between. A value equal to
    a run of tied percentiles (calibration makes plateaus) gets the run's middle. NaN stays
    NaN; without percentiles everything is NaN."""
    values = np.asarray(values, dtype=float)
    if not percentiles:
        return np.full(values.shape, np.nan)
    points = np.asarray(percentiles, dtype=float)
    grid = np.linspace(0.0, 100.0, len(points))
    unique, first, counts = np.unique(points, return_index=True, return_counts=True)
    middle = grid[first] + (counts - 1) * (grid[1] - grid[0]) / 2.0
    ranks = np.interp(values, unique, middle, left=0.0, right=100.0)
    return np.where(np.isnan(values), np.nan, ranks)


class ChurnModel:
    """Booster + calibrator over the registry's features, in registry order.

    ``label`` is the churn label it predicts (who is in the base, over what horizon);
    ``spend_percentiles`` are those of its test base, from which spend tiers are cut, and
    ``probability_percentiles`` those of its churn probabilities there, against which a
    score's ``churn_percentile`` is read. ``reference`` profiles the features of the rows it
    was fitted on and its probabilities on the test base: scoring runs count their own rows
    into the same bins, and monitoring measures drift from it.
    """

    def __init__(self, booster: lgb.Booster, calibrator: Calibrator,
                 feature_set_version: str = FEATURE_SET_VERSION,
                 label: ChurnLabelConfig | None = None,
                 spend_percentiles: list[float] | None = None,
                 probability_percentiles: list[float] | None = None,
                 reference: Profile | None = None, kind: str = "churn",
                 typical: dict[str, float] | None = None,
                 quiet: list[str] | None = None) -> None:
        self.booster = booster
        self.calibrator = calibrator
        self.feature_set_version = feature_set_version
        self.features = feature_names()
        self.label = label or ChurnLabelConfig()
        self.spend_percentiles = spend_percentiles
        self.probability_percentiles = probability_percentiles
        self.reference = reference
        self.evaluator: Callable[[np.ndarray], np.ndarray] | None = None
        # "churn", or "propensity": the same model over every past buyer, whose complement
        # (an order within the horizon) is the purchase probability.
        self.kind = kind
        # The median of each feature over the rows it was fitted on (what a reason compares a
        # customer with), and the features that barely vary there (never named as a reason).
        self.typical = typical or {}
        self.quiet = quiet or []

    def in_base(self, recency_days: np.ndarray) -> np.ndarray:
        """Rows the model speaks for: an order within its base window before the cutoff."""
        return in_base(recency_days, self.label.base_days)

    def churn_percentile(self, probability: np.ndarray) -> np.ndarray:
        """Each probability's percentile (0-100) among the test base's probabilities."""
        return percentile_rank(probability, self.probability_percentiles)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.features].to_numpy(dtype=np.float64)

    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        return self.margin_matrix(self.matrix(frame))

    def margin_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """The booster's raw margins, from ``evaluator`` when one is set (same numbers)."""
        if self.evaluator is not None:
            return self.evaluator(matrix)
        return self.booster.predict(matrix, raw_score=True)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probability per row."""
        return self.predict_proba_matrix(self.matrix(frame))

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """``predict_proba`` on a float64 matrix whose columns are ``features``."""
        return self.calibrator.predict(self.margin_matrix(matrix))

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions to the raw margin (LightGBM's own SHAP values)."""
        return pd.DataFrame(self.contributions_matrix(self.matrix(frame)),
                            columns=self.features, index=frame.index)

    def contributions_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """``contributions`` on a float64 matrix, without the bias column."""
        return self.booster.predict(matrix, pred_contrib=True)[:, :-1]

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(folder / "model.txt")
        (folder / "calibration.json").write_text(json.dumps(
            {"method": self.calibrator.method, "params": self.calibrator.params}))
        (folder / "features.json").write_text(json.dumps(
            {"feature_set_version": self.feature_set_version, "features": self.features,
             "base_days": self.label.base_days, "horizon_days": self.label.horizon_days,
             "kind": self.kind, "typical": self.typical, "quiet": self.quiet,
             "spend_percentiles": self.spend_percentiles,
             "probability_percentiles": self.probability_percentiles,
             "reference": self.reference.to_dict() if self.reference else None}))
        return folder

    @classmethod
    def load(cls, folder: Path) -> ChurnModel:
        meta = json.loads((folder / "features.json").read_text())
        if meta["features"] != feature_names():
            raise ValueError(
                f"{folder}: the model was trained on feature set {meta['feature_set_version']}, "
                f"which differs from this code's feature set {FEATURE_SET_VERSION}")
        cal = json.loads((folder / "calibration.json").read_text())
        booster = lgb.Booster(model_file=str(folder / "model.txt"))
        label = ChurnLabelConfig(horizon_days=meta.get("horizon_days", 90),
                                 base_days=meta.get("base_days", 365))
        return cls(booster, Calibrator(cal["method"], cal["params"]), meta["feature_set_version"],
                   label, meta.get("spend_percentiles"), meta.get("probability_percentiles"),
                   Profile.from_dict(meta.get("reference")), meta.get("kind", "churn"),
                   meta.get("typical"), meta.get("quiet"))
