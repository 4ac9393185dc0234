"""The fitted uplift model: one learner per arm, the columns it reads, save and load."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from features.registry import feature_names
from training.uplift_learners import UpliftLearner

ARTIFACT_KEY = "uplift_model"


@dataclass
class UpliftModel:
    """Estimated effect of each arm against control on the modelled outcome, per customer."""

    learners: dict[str, UpliftLearner]
    features: list[str]
    categories: dict[str, list] = field(default_factory=dict)
    outcome: str = "spend"
    winners: dict[str, str] = field(default_factory=dict)

    @property
    def arms(self) -> list[str]:
        return list(self.learners)

    def uses_registry_features(self) -> bool:
        """True when the model reads the feature registry's columns (contract-trained)."""
        return self.features == feature_names()

    def frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The model's columns from ``rows``, categories as they were in training."""
        missing = [c for c in self.features if c not in rows.columns]
        if missing:
            raise ValueError(f"uplift model needs columns {missing[:5]}")
        X = rows[self.features].copy()
        for column, levels in self.categories.items():
            X[column] = pd.Categorical(X[column], categories=levels)
        return X

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        """One ``uplift_<arm>`` column per arm."""
        X = self.frame(rows)
        return pd.DataFrame({f"uplift_{arm}": learner.predict(X)
                             for arm, learner in self.learners.items()}, index=rows.index)

    def predict_arm(self, matrix: np.ndarray, arm: str | None = None) -> np.ndarray:
        """Effects of ``arm`` (default: the first) for a float matrix of ``features``."""
        arm = arm or self.arms[0]
        return self.learners[arm].predict(self.frame(pd.DataFrame(matrix, columns=self.features)))

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.learners, folder / "learners.joblib")
        (folder / "model.json").write_text(json.dumps({
            "features": self.features, "categories": self.categories, "outcome": self.outcome,
            "winners": self.winners}, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: Path) -> UpliftModel:
        meta = json.loads((folder / "model.json").read_text())
        return cls(joblib.load(folder / "learners.joblib"), meta["features"],
                   meta["categories"], meta["outcome"], meta["winners"])
