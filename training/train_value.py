"""Train the value model: expected spend and orders over the next H days, per customer.

Rows are every customer with a past order at each cutoff. The cutoffs have the churn model's
three roles, a horizon apart (``training.cutoffs``): each spend form (``SPEND_FORMS``) and
the orders model stop early on the validation cutoff, where the spend form with the higher
normalised Gini is kept; the kept models are refitted on the training and validation
cutoffs and measured on the test cutoff beside BG/NBD x Gamma-Gamma and last period's spend
repeated, on the same customers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import duckdb
import lightgbm as lgb
import numpy as np
import pandas as pd

from features.cores import job_threads
from features.errors import setting
from features.labels import check_matured, value_target_query
from features.point_in_time import connect, feature_query
from features.registry import feature_names
from features.tables import LoadedTables, load_tables
from features.validation import Progress
from models.value_model import SPEND_FORMS, ValueModel
from training.bgnbd import BGNBD, GammaGamma
from training.config import ValueTrainConfig
from training.cutoffs import CutoffError, CutoffPlan, plan_cutoffs
from training.dataset import clv_summary
from training.value_metrics import ValueMetrics, value_metrics

MODEL = "model"
SCORER_LABELS = {MODEL: "model", "bgnbd_gamma_gamma": "BG/NBD x Gamma-Gamma",
                 "last_period": "last period again"}
TARGETS = ("future_spend", "future_orders", "past_spend")
MIN_BUYERS = 30


@dataclass
class ValueTrainResult:
    """The fitted model, the forms compared on the validation cutoff, and the test rows with
    every scorer's forecast and metrics."""

    model: ValueModel
    trees: dict[str, int]
    validation: dict[str, ValueMetrics]
    metrics: dict[str, ValueMetrics]
    orders_metrics: dict[str, ValueMetrics]
    test: pd.DataFrame
    plan: CutoffPlan
    loaded: LoadedTables
    run: object = None


def value_snapshot(con: duckdb.DuckDBPyConnection, tables: dict[str, str], cutoff: date,
                   horizon_days: int) -> pd.DataFrame:
    """Customers with a past order at ``cutoff``: features and what they did next."""
    targets = value_target_query(tables["transactions"], cutoff, horizon_days)
    frame = con.sql(f"""SELECT f.*, {", ".join(f"t.{c}" for c in TARGETS)}
FROM ({feature_query(tables, cutoff)}) f JOIN ({targets}) t USING (customer_id)
ORDER BY customer_id""").df()
    frame.insert(0, "cutoff", pd.Timestamp(cutoff))
    return frame.drop(columns=["as_of"])


def _dataset(frame: pd.DataFrame, label: np.ndarray, reference: lgb.Dataset | None = None
             ) -> lgb.Dataset:
    return lgb.Dataset(frame[feature_names()], label, free_raw_data=False, reference=reference)


def _fit(cfg: ValueTrainConfig, objective: str, train: pd.DataFrame, y_train: np.ndarray,
         valid: pd.DataFrame, y_valid: np.ndarray) -> lgb.Booster:
    """A booster stopped early on the validation rows."""
    train_set = _dataset(train, y_train)
    return lgb.train(cfg.lightgbm_params(objective), train_set, cfg.max_trees,
                     valid_sets=[_dataset(valid, y_valid, train_set)],
                     callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])


def _refit(cfg: ValueTrainConfig, objective: str, frame: pd.DataFrame, y: np.ndarray,
           trees: int) -> lgb.Booster:
    return lgb.train(cfg.lightgbm_params(objective), _dataset(frame, y), max(trees, 1))


@dataclass(frozen=True)
class Part:
    """One booster of a spend form: its objective, and the rows and target it learns."""

    objective: str
    target: Callable[[pd.DataFrame], np.ndarray]
    buyers_only: bool = False


def _spend(f: pd.DataFrame) -> np.ndarray:
    return f["future_spend"].to_numpy(dtype=float)


PARTS = {
    "total": Part("tweedie", _spend),
    "buy": Part("binary", lambda f: (_spend(f) > 0).astype(float)),
    "amount": Part("regression", _spend, buyers_only=True),
    "log_amount": Part("regression", lambda f: np.log(_spend(f)), buyers_only=True),
}
FORM_PARTS = {"tweedie": ("total",), "two_part": ("buy", "amount"),
              "ziln": ("buy", "log_amount")}


def _rows(frame: pd.DataFrame, part: Part) -> pd.DataFrame:
    return frame[_spend(frame) > 0] if part.buyers_only else frame


def _sigma(booster: lgb.Booster, buyers: pd.DataFrame) -> float:
    """The spread of log spend among buyers around its fitted mean."""
    residual = np.log(_spend(buyers)) - booster.predict(buyers[feature_names()])
    return float(np.std(residual)) if len(residual) > 1 else 0.0


def check_buyers(frame: pd.DataFrame, what: str) -> None:
    buyers = int((_spend(frame) > 0).sum())
    if buyers < MIN_BUYERS or buyers == len(frame):
        raise CutoffError(f"{what}: {buyers:,} of {len(frame):,} customers bought in the "
                          f"horizon; the value model needs at least {MIN_BUYERS} buyers and "
                          "some customers who did not buy")


def _forms(cfg: ValueTrainConfig) -> tuple[str, ...]:
    unknown = [f for f in cfg.forms if f not in SPEND_FORMS]
    if unknown or not cfg.forms:
        raise CutoffError(f"unknown spend form {', '.join(unknown) or '(none)'}; choose from "
                          f"{', '.join(SPEND_FORMS)}")
    return tuple(cfg.forms)


def train_value(cfg: ValueTrainConfig, progress: Progress | None = None,
                on_step: Callable[[str], None] | None = None) -> ValueTrainResult:
    """Run the whole training of the value model on the tables in ``cfg.data``."""
    cfg = replace(cfg, threads=job_threads(cfg.threads))
    with tempfile.TemporaryDirectory(prefix="churn-value-") as work, \
            connect(cfg.memory_limit, Path(work) / "spill", cfg.threads) as con:
        loaded = load_tables(con, cfg.data, Path(work), cfg.on_bad_rows, progress=progress)
        return train_value_on_tables(cfg, con, loaded, on_step)


def resolve_value_plan(cfg: ValueTrainConfig, loaded: LoadedTables) -> CutoffPlan:
    return plan_cutoffs(cfg.horizon_days, loaded.start, loaded.end, cfg.cutoffs,
                        cfg.validation_cutoff, cfg.test_cutoff, cfg.train_cutoff_count)


def train_value_on_tables(cfg: ValueTrainConfig, con: duckdb.DuckDBPyConnection,
                          loaded: LoadedTables,
                          on_step: Callable[[str], None] | None = None) -> ValueTrainResult:
    """``train_value`` on tables already validated into ``con``."""
    step = on_step or (lambda _: None)
    cfg = replace(cfg, threads=job_threads(cfg.threads))
    forms = _forms(cfg)
    plan = resolve_value_plan(cfg, loaded)
    for notice in plan.notices:
        step(notice)
    check_matured(plan.all(), cfg.horizon_days, loaded.end)
    snapshots = {}
    for cutoff in plan.all():
        step(f"features and the next {cfg.horizon_days} days at {cutoff}")
        snapshots[cutoff] = value_snapshot(con, loaded.relations, cutoff, cfg.horizon_days)
    train = pd.concat([snapshots[c] for c in plan.train], ignore_index=True)
    valid, test = snapshots[plan.validation], snapshots[plan.test]
    check_buyers(train, "training cutoffs")
    check_buyers(valid, f"validation cutoff {plan.validation}")
    check_buyers(test, f"test cutoff {plan.test}")

    step("each spend form and the orders model, stopped early on the validation cutoff")
    boosters = {name: _fit(cfg, PARTS[name].objective, _rows(train, PARTS[name]),
                           PARTS[name].target(_rows(train, PARTS[name])),
                           _rows(valid, PARTS[name]), PARTS[name].target(_rows(valid, PARTS[name])))
                for name in sorted({p for f in forms for p in FORM_PARTS[f]})}
    orders = _fit(cfg, "poisson", train, train["future_orders"].to_numpy(), valid,
                  valid["future_orders"].to_numpy())
    sigma = _sigma(boosters["log_amount"], valid[_spend(valid) > 0]) \
        if "log_amount" in boosters else 0.0
    summary = clv_summary(con, loaded.relations, plan.test)
    bgnbd = BGNBD().fit(summary).params()
    validation = {form: value_metrics(_spend(valid), ValueModel(
        form, cfg.horizon_days, {p: boosters[p] for p in FORM_PARTS[form]}, orders, sigma,
        bgnbd).predict_spend(valid)) for form in forms}
    chosen = max(forms, key=lambda f: (np.nan_to_num(validation[f].normalised_gini, nan=-1),
                                       -forms.index(f)))

    step(f"refit {chosen} on the training and validation cutoffs")
    fitted = pd.concat([train, valid], ignore_index=True)
    trees = {name: boosters[name].best_iteration or boosters[name].current_iteration()
             for name in FORM_PARTS[chosen]}
    trees["orders"] = orders.best_iteration or orders.current_iteration()
    spend = {name: _refit(cfg, PARTS[name].objective, _rows(fitted, PARTS[name]),
                          PARTS[name].target(_rows(fitted, PARTS[name])), trees[name])
             for name in FORM_PARTS[chosen]}
    if chosen == "ziln":
        sigma = _sigma(spend["log_amount"], fitted[_spend(fitted) > 0])
    model = ValueModel(chosen, cfg.horizon_days, spend,
                       _refit(cfg, "poisson", fitted, fitted["future_orders"].to_numpy(),
                              trees["orders"]), sigma, bgnbd)

    step(f"the model and the baselines on the test cutoff {plan.test}")
    scored = score_test(model, test, summary, cfg.horizon_days)
    model.spend_percentiles = np.percentile(scored["model_spend"], np.arange(101)).tolist()
    actual = _spend(scored)
    metrics = {name: value_metrics(actual, scored[f"{name}_spend"].to_numpy())
               for name in SCORER_LABELS}
    orders_metrics = {name: value_metrics(scored["future_orders"].to_numpy(),
                                          scored[f"{name}_orders"].to_numpy())
                      for name in (MODEL, "bgnbd_gamma_gamma")}
    return ValueTrainResult(model, trees, validation, metrics, orders_metrics, scored, plan,
                            loaded)


def score_test(model: ValueModel, test: pd.DataFrame, summary: pd.DataFrame,
               horizon_days: int) -> pd.DataFrame:
    """The test rows with each scorer's forecast of spend (and orders, where it has one)."""
    rows = summary.set_index("customer_id").loc[test["customer_id"]].reset_index()
    bgnbd = BGNBD().fit(summary)
    purchases = bgnbd.expected_purchases(rows, horizon_days / 7.0)
    per_purchase = GammaGamma().fit(summary).expected_spend_per_purchase(rows)
    keep = ["cutoff", "customer_id", *feature_names(), *TARGETS]
    return test[keep].assign(
        model_spend=model.predict_spend(test), model_orders=model.predict_orders(test),
        bgnbd_gamma_gamma_spend=purchases * per_purchase,
        bgnbd_gamma_gamma_orders=purchases,
        last_period_spend=test["past_spend"].to_numpy(dtype=float))


def metrics_table(metrics: dict[str, ValueMetrics]) -> pd.DataFrame:
    return pd.DataFrame({SCORER_LABELS.get(k, k): m.as_dict() for k, m in metrics.items()}).T


def backtest_value(cfg: ValueTrainConfig, origins: tuple[date, ...],
                   progress: Progress | None = None,
                   on_step: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Train and test once per origin (the origin as test cutoff), on tables loaded once: one
    row per origin and scorer with its metrics on spend."""
    step = on_step or (lambda _: None)
    if not origins:
        raise CutoffError(f"{setting('origins')}: give at least one date")
    if cfg.cutoffs or cfg.validation_cutoff or cfg.test_cutoff:
        raise CutoffError("a backtest places the cutoffs itself at each origin: give a count "
                          f"of training cutoffs ({setting('cutoffs')} N), not dates")
    cfg = replace(cfg, threads=job_threads(cfg.threads))
    rows = []
    with tempfile.TemporaryDirectory(prefix="churn-value-backtest-") as work, \
            connect(cfg.memory_limit, Path(work) / "spill", cfg.threads) as con:
        loaded = load_tables(con, cfg.data, Path(work), cfg.on_bad_rows, progress=progress)
        for origin in sorted(set(origins)):
            result = train_value_on_tables(
                replace(cfg, test_cutoff=origin), con, loaded,
                on_step=lambda text, o=origin: step(f"origin {o}: {text}"))
            rows += [{"origin": origin, "scorer": SCORER_LABELS[name],
                      "customers": len(result.test), "form": result.model.form,
                      **m.as_dict()} for name, m in result.metrics.items()]
    return pd.DataFrame(rows)
