"""The value model: expected spend and expected orders per customer over the next H days, and
the BG/NBD fit that gives each customer's P(alive) and the date their next order is due.

Spend over a window is mostly zero with a long right tail, so the spend part is one of three
forms, chosen on the validation cutoff by the trainer (``training.train_value``):

- ``tweedie``: one LightGBM booster with the Tweedie loss (a point mass at zero and a
  skewed continuous part in one distribution);
- ``two_part``: P(buy) from a classifier times E[spend | buy] from a regression on the
  buyers only;
- ``ziln``: a zero-inflated lognormal (Wang, Liu & Miao 2019) with LightGBM parts: P(buy)
  times exp(mu + sigma^2 / 2), mu from a regression of log spend among buyers and sigma the
  spread of its residuals.

Orders come from one Poisson booster. Saved as LightGBM model text and JSON, no pickles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.registry import FEATURE_SET_VERSION, feature_names

ARTIFACT_KEY = "value_model"
SPEND_FORMS = ("tweedie", "two_part", "ziln")
DAYS_PER_WEEK = 7.0


@dataclass(frozen=True)
class BGNBDParams:
    """A fitted BG/NBD (r, alpha, a, b; time in weeks)."""

    r: float
    alpha: float
    a: float
    b: float

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        """P(still buying at T): 1 for a customer with no repeat purchase, by construction."""
        odds = np.zeros_like(x, dtype=float)
        repeat = x > 0
        odds[repeat] = (self.a / (self.b + x[repeat] - 1)
                        * ((self.alpha + big_t[repeat]) / (self.alpha + t_x[repeat]))
                        ** (self.r + x[repeat]))
        return 1.0 / (1.0 + odds)


def summary_from_features(X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The BG/NBD summary (x, t_x, T in weeks) read off the feature rows, so batch and online
    scoring give the same numbers: repeat orders, first to last order, first order to the
    as-of."""
    orders = X["orders_total"].to_numpy(dtype=float)
    tenure = X["tenure_days"].to_numpy(dtype=float)
    recency = X["recency_days"].to_numpy(dtype=float)
    x = np.maximum(np.nan_to_num(orders) - 1.0, 0.0)
    big_t = np.nan_to_num(tenure) / DAYS_PER_WEEK
    t_x = np.clip(np.nan_to_num(tenure - recency), 0.0, None) / DAYS_PER_WEEK
    return x, t_x, big_t


@dataclass
class ValueModel:
    """Expected spend and orders over ``horizon_days`` for customers with a past order."""

    form: str
    horizon_days: int
    spend: dict[str, lgb.Booster]
    orders: lgb.Booster
    sigma: float
    bgnbd: BGNBDParams
    feature_set_version: str = FEATURE_SET_VERSION
    # The 0th..100th percentiles of its forecast spend over its test customers, from which
    # spend tiers are cut when the policy says so.
    spend_percentiles: list[float] | None = None

    def __post_init__(self) -> None:
        self.features = feature_names()

    def _matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        return X[self.features]

    def predict_spend(self, X: pd.DataFrame) -> np.ndarray:
        matrix = self._matrix(X)
        if self.form == "tweedie":
            return self.spend["total"].predict(matrix)
        buy = self.spend["buy"].predict(matrix)
        if self.form == "two_part":
            return buy * np.maximum(self.spend["amount"].predict(matrix), 0.0)
        return buy * np.exp(self.spend["log_amount"].predict(matrix) + self.sigma ** 2 / 2.0)

    def predict_orders(self, X: pd.DataFrame) -> np.ndarray:
        return self.orders.predict(self._matrix(X))

    def p_alive(self, X: pd.DataFrame) -> np.ndarray:
        """BG/NBD's P(still buying) per customer with a past order (NaN for others)."""
        x, t_x, big_t = summary_from_features(X)
        bought = X["orders_total"].fillna(0).to_numpy() > 0
        return np.where(bought, self.bgnbd.p_alive(x, t_x, big_t), np.nan)

    def next_order_due(self, orders: np.ndarray, as_of: date) -> list[date | None]:
        """The day by which a customer's next order is as likely as not, read from the
        forecast orders as a steady rate (the median wait, ln 2 / rate); None when that falls
        beyond the horizon (no order is expected within it)."""
        days = np.log(2.0) * self.horizon_days / np.maximum(np.asarray(orders, float), 1e-12)
        return [as_of + timedelta(days=int(np.ceil(d))) if d <= self.horizon_days else None
                for d in days]

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, booster in self.spend.items():
            booster.save_model(folder / f"spend_{name}.txt")
        self.orders.save_model(folder / "orders.txt")
        (folder / "value.json").write_text(json.dumps({
            "form": self.form, "horizon_days": self.horizon_days, "sigma": self.sigma,
            "spend_parts": sorted(self.spend), "bgnbd": asdict(self.bgnbd),
            "feature_set_version": self.feature_set_version, "features": self.features,
            "spend_percentiles": self.spend_percentiles},
            indent=2))
        return folder

    @classmethod
    def load(cls, folder: Path) -> ValueModel:
        meta = json.loads((folder / "value.json").read_text())
        if meta["features"] != feature_names():
            raise ValueError(f"{folder}: the value model reads other features than this "
                             f"version's registry ({meta['feature_set_version']})")
        spend = {name: lgb.Booster(model_file=str(folder / f"spend_{name}.txt"))
                 for name in meta["spend_parts"]}
        return cls(meta["form"], int(meta["horizon_days"]), spend,
                   lgb.Booster(model_file=str(folder / "orders.txt")), float(meta["sigma"]),
                   BGNBDParams(**meta["bgnbd"]), meta["feature_set_version"],
                   meta.get("spend_percentiles"))
