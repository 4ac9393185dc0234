"""Train the churn model: time-based validation, early stopping, calibration, baselines, refit.

Earlier cutoffs train, the latest validates (never shuffled across time). LightGBM stops
early on the validation cutoff; the calibration method is chosen on validation data; then
the booster is refitted on every cutoff with the chosen number of trees.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.contract import ContractError
from features.labels import ChurnLabelConfig
from features.point_in_time import connect
from features.registry import feature_names
from features.tables import LoadedTables, load_tables
from features.validation import OnBadRows, Progress
from training.bgnbd import BGNBD
from training.churn_model import Calibrator, ChurnModel, choose_calibration
from training.dataset import LABEL, clv_summary, training_frame
from training.metrics import ScoreMetrics, score_metrics

MODEL = "model"
BASELINES = ("recency_rule", "bgnbd_p_alive", "bgnbd_expected_purchases")


@dataclass(frozen=True)
class ChurnTrainConfig:
    """Everything a churn training run needs, built from CLI flags or MLproject parameters."""

    data: Path
    cutoffs: tuple[date, ...]
    labels: ChurnLabelConfig = field(default_factory=ChurnLabelConfig)
    learning_rate: float = 0.03
    num_leaves: int = 7
    min_data_in_leaf: int = 200
    max_trees: int = 3000
    early_stopping_rounds: int | None = 100
    min_class_rows: int = 50
    seed: int = 7
    on_bad_rows: OnBadRows = OnBadRows.stop
    memory_limit: str | None = "4GB"

    def lightgbm_params(self) -> dict[str, object]:
        return {"objective": "binary", "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_data_in_leaf,
                "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
                "lambda_l2": 1.0, "seed": self.seed, "num_threads": 0, "verbose": -1}


class EligibilityError(ContractError):
    """Too little data of one kind to train or validate on."""


@dataclass
class ChurnTrainResult:
    """The fitted model and everything a person or the tracker wants to see about it."""

    model: ChurnModel
    trees: int
    calibration_losses: dict[str, float]
    metrics: dict[str, ScoreMetrics]
    validation: pd.DataFrame
    train_cutoffs: list[date]
    validation_cutoff: date
    frame: pd.DataFrame
    loaded: LoadedTables
    bgnbd: BGNBD
    baseline_scores: dict[str, np.ndarray] = field(default_factory=dict)


def check_cutoffs(cutoffs: tuple[date, ...]) -> None:
    """At least two distinct cutoffs: earlier ones to train, the latest to validate."""
    if len(set(cutoffs)) < 2:
        raise EligibilityError("--cutoffs: give at least two dates; the latest validates the "
                               "model trained on the earlier ones")
    if len(set(cutoffs)) != len(cutoffs):
        raise EligibilityError("--cutoffs: a date is listed twice")


def check_eligible(frame: pd.DataFrame, part: str, min_rows: int) -> None:
    """Refuse to go on when either class has fewer than ``min_rows`` rows."""
    churners = int(frame[LABEL].sum())
    stayers = len(frame) - churners
    if min(churners, stayers) < min_rows:
        raise EligibilityError(
            f"{part}: {churners:,} churners and {stayers:,} customers who stayed; each needs at "
            f"least {min_rows:,} to learn from. Add cutoffs, use more data or change "
            f"--horizon-days / --base-days")


def baseline_scores(validation: pd.DataFrame, bgnbd: BGNBD, summary: pd.DataFrame,
                    horizon_days: int) -> dict[str, tuple[np.ndarray, bool]]:
    """Each baseline's churn score on the validation rows, and whether it is a probability."""
    rows = summary.set_index("customer_id").loc[validation["customer_id"]]
    horizon = horizon_days / 7.0
    return {
        "recency_rule": (validation["recency_days"].to_numpy(), False),
        "bgnbd_p_alive": (1.0 - bgnbd.p_alive(rows), True),
        "bgnbd_expected_purchases": (-bgnbd.expected_purchases(rows, horizon), False),
    }


def _fit_booster(cfg: ChurnTrainConfig, train: pd.DataFrame,
                 valid: pd.DataFrame) -> lgb.Booster:
    names = feature_names()
    train_set = lgb.Dataset(train[names], train[LABEL], free_raw_data=False)
    valid_set = lgb.Dataset(valid[names], valid[LABEL], reference=train_set)
    stop = ([lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)]
            if cfg.early_stopping_rounds else [])
    return lgb.train(cfg.lightgbm_params(), train_set, cfg.max_trees, valid_sets=[valid_set],
                     callbacks=stop)


def _refit(cfg: ChurnTrainConfig, frame: pd.DataFrame, trees: int) -> lgb.Booster:
    names = feature_names()
    return lgb.train(cfg.lightgbm_params(), lgb.Dataset(frame[names], frame[LABEL]), trees)


def train_churn(cfg: ChurnTrainConfig, progress: Progress | None = None,
                on_step: Callable[[str], None] | None = None) -> ChurnTrainResult:
    """Run the whole training of the churn model on the tables in ``cfg.data``."""
    step = on_step or (lambda _: None)
    check_cutoffs(cfg.cutoffs)
    with tempfile.TemporaryDirectory(prefix="churn-train-") as work, \
            connect(cfg.memory_limit, Path(work) / "spill") as con:
        loaded = load_tables(con, cfg.data, Path(work), cfg.on_bad_rows, progress=progress)
        frame = training_frame(con, loaded, list(cfg.cutoffs), cfg.labels,
                               on_cutoff=lambda c: step(f"features and labels at {c}"))
        validation_cutoff = max(cfg.cutoffs)
        summary = clv_summary(con, loaded.relations, validation_cutoff)
    is_valid = frame["cutoff"] == pd.Timestamp(validation_cutoff)
    train, valid = frame[~is_valid], frame[is_valid].reset_index(drop=True)
    check_eligible(train, f"training cutoffs (before {validation_cutoff})", cfg.min_class_rows)
    check_eligible(valid, f"validation cutoff {validation_cutoff}", cfg.min_class_rows)

    step("LightGBM with early stopping on the validation cutoff")
    booster = _fit_booster(cfg, train, valid)
    trees = (booster.best_iteration if cfg.early_stopping_rounds else 0) or \
        booster.current_iteration()
    y = valid[LABEL].to_numpy()
    margin = booster.predict(valid[feature_names()], raw_score=True, num_iteration=trees)
    method, losses, probability = choose_calibration(margin, y, cfg.seed)

    step("baselines: recency rule and BG/NBD")
    bgnbd = BGNBD().fit(summary)
    baselines = baseline_scores(valid, bgnbd, summary, cfg.labels.horizon_days)
    metrics = {MODEL: score_metrics(y, probability, is_probability=True)}
    metrics.update({name: score_metrics(y, s, p) for name, (s, p) in baselines.items()})

    step(f"refit on all {len(cfg.cutoffs)} cutoffs with {trees} trees")
    model = ChurnModel(_refit(cfg, frame, trees), Calibrator.fit(method, margin, y))
    validation = valid[["cutoff", "customer_id", *feature_names(), LABEL]].assign(
        churn_probability=probability)
    return ChurnTrainResult(model, trees, losses, metrics, validation,
                            sorted(set(cfg.cutoffs) - {validation_cutoff}), validation_cutoff,
                            frame, loaded, bgnbd, {k: s for k, (s, _) in baselines.items()})


def monthly_cutoffs(last: date, count: int) -> tuple[date, ...]:
    """``count`` cutoffs on the first of the month, ending with the month of ``last``."""
    out, day = [], last.replace(day=1)
    for _ in range(count):
        out.append(day)
        day = (day - timedelta(days=1)).replace(day=1)
    return tuple(sorted(out))
