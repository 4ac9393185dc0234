"""Train the churn model: training, validation and test cutoffs, early stopping, calibration,
baselines, refit.

Training cutoffs fit the trees; LightGBM stops early on the validation cutoff, where the
calibration method is chosen too; the booster is then refitted on the training and validation
cutoffs with the chosen number of trees. That refitted model, the one registered, and every
baseline are measured on the test cutoff, which neither saw (see ``training.cutoffs``).
Nothing is shuffled across time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import duckdb
import lightgbm as lgb
import numpy as np
import pandas as pd

from features.contract import ContractError
from features.cores import job_threads
from features.errors import setting
from features.labels import LABEL
from features.point_in_time import connect
from features.registry import feature_names
from features.tables import LoadedTables, load_tables
from features.validation import Progress
from models.churn_model import ChurnModel, spend_percentiles
from models.drift import SCORE, Profile
from training.bgnbd import BGNBD
from training.calibration import choose_calibration, fit_calibrator
from training.config import ChurnTrainConfig
from training.cutoffs import CutoffPlan, plan_cutoffs
from training.dataset import clv_summary, training_frame
from training.metrics import ScoreMetrics, score_metrics

MODEL = "model"
BASELINES = ("recency_rule", "bgnbd_p_alive", "bgnbd_expected_purchases")
SCORER_LABELS = {MODEL: "model", "recency_rule": "recency rule",
                 "bgnbd_p_alive": "BG/NBD P(alive)", "bgnbd_expected_purchases": "BG/NBD E(buys)"}


class EligibilityError(ContractError):
    """Too little data of one kind to train or validate on."""


@dataclass
class ChurnTrainResult:
    """The fitted model and everything a person or the tracker wants to see about it.

    ``metrics`` are the registered model's and the baselines' on the test cutoff;
    ``validation_metrics`` the model's (before the refit) on the validation cutoff.
    """

    model: ChurnModel
    trees: int
    calibration_losses: dict[str, float]
    metrics: dict[str, ScoreMetrics]
    validation_metrics: ScoreMetrics
    test: pd.DataFrame
    validation: pd.DataFrame
    plan: CutoffPlan
    frame: pd.DataFrame
    loaded: LoadedTables
    bgnbd: BGNBD
    baseline_scores: dict[str, np.ndarray] = field(default_factory=dict)
    # "churn", or "purchase" for a propensity model: reported as P(order in the horizon), its
    # metrics and baselines on that label (``training.propensity``).
    target: str = "churn"
    # The BG/NBD summary (x, t_x, T, monetary) at the test cutoff, for every past buyer.
    clv_summary: pd.DataFrame | None = None
    # The MLflow run (``training.tracking.LoggedRun``) when the Python API logged one.
    run: object | None = None

    def outcome(self) -> np.ndarray:
        """The test rows' labels as reported: churned, or (``target`` purchase) ordered."""
        churned = self.test[LABEL].to_numpy()
        return 1 - churned if self.target == "purchase" else churned

    def model_scores(self) -> np.ndarray:
        """The model's probabilities of ``outcome`` on the test rows."""
        p = self.test["churn_probability"].to_numpy()
        return 1.0 - p if self.target == "purchase" else p

    @property
    def train_cutoffs(self) -> list[date]:
        return list(self.plan.train)

    @property
    def validation_cutoff(self) -> date:
        return self.plan.validation

    @property
    def test_cutoff(self) -> date:
        return self.plan.test


def check_eligible(frame: pd.DataFrame, part: str, min_rows: int) -> None:
    """Refuse to go on when either class has fewer than ``min_rows`` rows."""
    churners = int(frame[LABEL].sum())
    stayers = len(frame) - churners
    if min(churners, stayers) < min_rows:
        raise EligibilityError(
            f"{part}: {churners:,} churners and {stayers:,} customers who stayed; each needs at "
            f"least {min_rows:,} to learn from. Add cutoffs, use more data or change "
            f"{setting('horizon_days')} / {setting('base_days')}")


def baseline_scores(rows: pd.DataFrame, bgnbd: BGNBD, summary: pd.DataFrame,
                    horizon_days: int) -> dict[str, tuple[np.ndarray, bool]]:
    """Each baseline's churn score on ``rows``, and whether it is a probability."""
    recency = rows["recency_days"].to_numpy()
    rows = summary.set_index("customer_id").loc[rows["customer_id"]]
    horizon = horizon_days / 7.0
    return {
        "recency_rule": (recency, False),
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


# A feature whose most common value covers this share of the fitted rows barely varies: naming
# it as a reason would say nothing about the customer.
QUIET_SHARE = 0.95


def typical_values(frame: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """Each feature's median over ``frame`` (NaN left out), and the features that barely vary."""
    typical = {name: float(v) for name, v in frame.median().items() if pd.notna(v)}
    quiet = [name for name in frame.columns
             if frame[name].fillna(-1.0).value_counts(normalize=True).iloc[0] >= QUIET_SHARE]
    return typical, quiet


def resolve_plan(cfg: ChurnTrainConfig, loaded: LoadedTables) -> CutoffPlan:
    """The three roles of cutoffs for ``cfg`` on the data in ``loaded``."""
    return plan_cutoffs(cfg.labels.horizon_days, loaded.start, loaded.end, cfg.cutoffs,
                        cfg.validation_cutoff, cfg.test_cutoff, cfg.train_cutoff_count)


def _split(frame: pd.DataFrame, plan: CutoffPlan) -> tuple[pd.DataFrame, ...]:
    cutoff = frame["cutoff"]
    parts = (frame[cutoff.isin([pd.Timestamp(c) for c in plan.train])],
             frame[cutoff == pd.Timestamp(plan.validation)],
             frame[cutoff == pd.Timestamp(plan.test)])
    return tuple(p.reset_index(drop=True) for p in parts)


def train_churn(cfg: ChurnTrainConfig, progress: Progress | None = None,
                on_step: Callable[[str], None] | None = None) -> ChurnTrainResult:
    """Run the whole training of the churn model on the tables in ``cfg.data``."""
    cfg = replace(cfg, threads=job_threads(cfg.threads))
    with tempfile.TemporaryDirectory(prefix="churn-train-") as work, \
            connect(cfg.memory_limit, Path(work) / "spill", cfg.threads) as con:
        loaded = load_tables(con, cfg.data, Path(work), cfg.on_bad_rows, progress=progress)
        return train_on_tables(cfg, con, loaded, on_step)


def train_on_tables(cfg: ChurnTrainConfig, con: duckdb.DuckDBPyConnection,
                    loaded: LoadedTables,
                    on_step: Callable[[str], None] | None = None) -> ChurnTrainResult:
    """``train_churn`` on tables already validated into ``con`` (the backtest trains many
    times on the same tables)."""
    step = on_step or (lambda _: None)
    cfg = replace(cfg, threads=job_threads(cfg.threads))
    plan = resolve_plan(cfg, loaded)
    for notice in plan.notices:
        step(notice)
    frame = training_frame(con, loaded, plan.all(), cfg.labels,
                           on_cutoff=lambda c: step(f"features and labels at {c}"))
    summary = clv_summary(con, loaded.relations, plan.test)
    train, valid, test = _split(frame, plan)
    check_eligible(train, f"training cutoffs ({', '.join(c.isoformat() for c in plan.train)})",
                   cfg.min_class_rows)
    check_eligible(valid, f"validation cutoff {plan.validation}", cfg.min_class_rows)
    check_eligible(test, f"test cutoff {plan.test}", cfg.min_class_rows)

    step("LightGBM with early stopping on the validation cutoff")
    booster = _fit_booster(cfg, train, valid)
    trees = (booster.best_iteration if cfg.early_stopping_rounds else 0) or \
        booster.current_iteration()
    y_valid = valid[LABEL].to_numpy()
    margin = booster.predict(valid[feature_names()], raw_score=True, num_iteration=trees)
    method, losses, valid_probability = choose_calibration(margin, y_valid, cfg.seed)

    step(f"refit on the training and validation cutoffs with {trees} trees")
    fitted = pd.concat([train, valid], ignore_index=True)
    model = ChurnModel(_refit(cfg, fitted, trees), fit_calibrator(method, margin, y_valid),
                       label=cfg.labels)

    step(f"the refitted model and the baselines on the test cutoff {plan.test}")
    y = test[LABEL].to_numpy()
    probability = model.predict_proba(test)
    bgnbd = BGNBD().fit(summary)
    baselines = baseline_scores(test, bgnbd, summary, cfg.labels.horizon_days)
    metrics = {MODEL: score_metrics(y, probability, is_probability=True)}
    metrics.update({name: score_metrics(y, s, p) for name, (s, p) in baselines.items()})
    model.spend_percentiles = spend_percentiles(test["spend_365d"])
    model.typical, model.quiet = typical_values(fitted[feature_names()])
    model.probability_percentiles = np.percentile(probability, np.arange(101)).tolist() \
        if len(probability) else None
    model.reference = Profile.of(fitted, feature_names()).measure_spread(
        fitted, "cutoff").merged(
        Profile.of(pd.DataFrame({SCORE: probability}), [SCORE]))
    keep = ["cutoff", "customer_id", *feature_names(), LABEL]
    return ChurnTrainResult(
        model, trees, losses, metrics, score_metrics(y_valid, valid_probability, True),
        test[keep].assign(churn_probability=probability),
        valid[keep].assign(churn_probability=valid_probability), plan, frame, loaded, bgnbd,
        {k: s for k, (s, _) in baselines.items()}, clv_summary=summary)
