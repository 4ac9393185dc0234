"""Every uplift learner on the Hillstrom e-mail experiment, on the same folds: which default?

For {Womens, Mens} e-mail vs `No E-Mail` x {spend, conversion}, 5 folds x 3 repeats (folds
stratified by group, seeds 0-2, the same for every learner in a repeat): each single learner
(T, X, DR, DR with ridge final stage, transformed outcome, two-part) is fitted once per outer
fold with LightGBM's default trees and scores the held-out fold; the ensemble is the mean of
their estimates (what `--learner ensemble` fits). Out-of-fold scores are ranked within their
fold, then pooled; Qini as in the README (0 = random). Also the top-30% check: observed
uplift of the 30% with the highest predicted uplift against everyone's average effect.

    python bench/uplift_learners.py [--data ../shared/data/hillstrom/hillstrom.csv]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from training.config import BaseParams, UpliftTrainConfig  # noqa: E402
from training.train_uplift import _folds, fold_rank, load_experiment  # noqa: E402
from training.uplift_learners import (  # noqa: E402
    EnsembleLearner,
    fit_linear,
    fit_regressor,
    make_learner,
    standardised_mean,
)
from training.uplift_metrics import UpliftMetrics, uplift_at  # noqa: E402

DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "hillstrom"
                / "hillstrom.csv")
ARMS = ("segment=Womens E-Mail", "segment=Mens E-Mail")
SINGLES = EnsembleLearner.members


SMALLER = BaseParams(learning_rate=0.03, num_leaves=7, min_data_in_leaf=200, rounds=150,
                     lambda_l2=10.0)


def capped(y: np.ndarray, quantile: float | None) -> np.ndarray:
    """``y`` with values above the ``quantile`` of its positive values cut to it (training
    only: the metrics always use the raw outcome)."""
    if quantile is None or not (y > 0).any():
        return y
    return np.minimum(y, np.quantile(y[y > 0], quantile))


def out_of_fold(X: pd.DataFrame, y: np.ndarray, t: np.ndarray, folds: int, seed: int,
                params: BaseParams, cap: float | None = None,
                also: tuple[str, ...] = (), decisions: list | None = None
                ) -> dict[str, np.ndarray]:
    """Within-fold ranks of every single learner and of ways to combine them: the
    standardised mean of their estimates (what `--learner ensemble` fits), their plain
    mean, the mean weighted by the inverse of each estimate's variance on the fitted rows,
    and the mean of their within-fold ranks."""
    combined = ("ensemble", "ensemble_plain_mean", "ensemble_inverse_variance",
                "ensemble_of_ranks", "ensemble_distilled_trees", "ensemble_distilled_linear")
    scores = {name: np.empty(len(y)) for name in (*SINGLES, *combined)}
    for fit, held in _folds(t, folds, seed):
        estimates, fitted = {}, {}
        for name in SINGLES:
            learner = make_learner(name, params, seed=seed).fit(X.iloc[fit],
                                                                capped(y[fit], cap), t[fit])
            estimates[name] = learner.predict(X.iloc[held])
            fitted[name] = learner.predict(X.iloc[fit])
        weights = {n: 1.0 / max(float(np.var(fitted[n])), 1e-12) for n in SINGLES}
        total = sum(weights.values())
        singles = [estimates[n] for n in SINGLES]
        scale, constant = standardised_mean([fitted[n] for n in SINGLES])
        estimates["ensemble"] = np.asarray(scale) @ np.asarray(singles) + constant
        estimates["ensemble_plain_mean"] = np.mean(singles, axis=0)
        estimates["ensemble_inverse_variance"] = sum(weights[n] / total * estimates[n]
                                                     for n in SINGLES)
        estimates["ensemble_of_ranks"] = np.mean([fold_rank(e) for e in singles], axis=0)
        on_fit = np.asarray(scale) @ np.asarray([fitted[n] for n in SINGLES]) + constant
        estimates["ensemble_distilled_trees"] = fit_regressor(
            X.iloc[fit], on_fit, SMALLER).predict(X.iloc[held])
        estimates["ensemble_distilled_linear"] = fit_linear(X.iloc[fit], on_fit).predict(
            X.iloc[held])
        for name in also:
            learner = make_learner(name, params, seed=seed).fit(X.iloc[fit],
                                                                capped(y[fit], cap), t[fit])
            estimates[name] = learner.predict(X.iloc[held])
            scores.setdefault(name, np.empty(len(y)))
            if decisions is not None and hasattr(learner, "gain_"):
                decisions.append({"learner": name, "distilled": learner.distilled_,
                                  "gain": learner.gain_[0], "error": learner.gain_[1]})
        for name, values in estimates.items():
            scores[name][held] = fold_rank(values)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smaller-trees", action="store_true",
                        help="7 leaves, 200 rows per leaf, rate 0.03, 150 trees, L2 10 "
                             "(as in bench/uplift_synthetic.py) instead of LightGBM's defaults")
    parser.add_argument("--cap-quantile", type=float, default=None,
                        help="train on spend capped at this quantile of the training rows' "
                             "positive spend (e.g. 0.99); metrics on the raw outcome")
    parser.add_argument("--huber-quantile", type=float, default=None,
                        help="train every regression with LightGBM's Huber loss, its delta "
                             "the quantile of positive spend (e.g. 0.9); metrics on the raw "
                             "outcome")
    parser.add_argument("--stacked", action="store_true",
                        help="also fit the R-loss stacked ensemble (`--learner stacked`) in "
                             "each fold (about three times the singles' cost)")
    parser.add_argument("--also", nargs="+", default=[],
                        help="also fit these learners by name in each fold (e.g. "
                             "ensemble_or_distilled); whether it distilled is printed")
    parser.add_argument("--outcomes", nargs="+", default=["spend", "conversion"])
    args = parser.parse_args()
    started = time.time()
    rows, decisions = [], []
    also = tuple(args.also) + (("stacked",) if args.stacked else ())
    for outcome in args.outcomes:
        other = "conversion" if outcome == "spend" else "spend"
        cfg = UpliftTrainConfig(table=args.data, treatments=ARMS, control="segment=No E-Mail",
                                outcome=outcome, ignore=("visit", other))
        experiment = load_experiment(cfg)
        for arm in experiment.arms:
            part = experiment.arm(arm)
            t, y = part.treated(), part.outcome()
            everyone = y[t == 1].mean() - y[t == 0].mean()
            params = SMALLER if args.smaller_trees else BaseParams()
            if args.huber_quantile is not None and outcome == "spend":
                delta = float(np.quantile(y[y > 0], args.huber_quantile))
                params = replace(params, extra={"objective": "huber", "alpha": delta})
            for repeat in range(args.repeats):
                before = len(decisions)
                scores = out_of_fold(part.features, y, t, args.folds, repeat, params,
                                     args.cap_quantile, also, decisions)
                for name, score in scores.items():
                    rows.append({"arm": arm.replace(" E-Mail", ""), "outcome": outcome,
                                 "learner": name, "repeat": repeat,
                                 "qini": UpliftMetrics.of(y, t, score).qini,
                                 "top30_over_all": uplift_at(y, t, score, 0.3) / everyone})
                print(f"[{time.time() - started:5.0f} s] {outcome} {arm} repeat {repeat}: "
                      + ", ".join(f"{r['learner']} {r['qini']:.3f}"
                                  for r in rows[-len(scores):]), flush=True)
                for d in decisions[before:]:
                    print(f"    {d['learner']}: distilled {d['distilled']} (R-loss gain "
                          f"{d['gain']:.4g}, standard error {d['error']:.4g})", flush=True)
    frame = pd.DataFrame(rows)
    qini = frame.pivot_table(index="learner", columns=["arm", "outcome"], values="qini")
    qini[("mean", "")] = qini.mean(axis=1)
    spread = frame.pivot_table(index="learner", columns=["arm", "outcome"], values="qini",
                               aggfunc="std")
    top = frame.pivot_table(index="learner", columns=["arm", "outcome"],
                            values="top30_over_all")
    print(f"# Hillstrom uplift learners, {date.today()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, lightgbm {lgb.__version__}, {args.folds} folds x "
          f"{args.repeats} repeats, {'smaller' if args.smaller_trees else 'LightGBM default'} "
          f"trees, training outcome capped at quantile {args.cap_quantile}, Huber loss at "
          f"quantile {args.huber_quantile} of positive spend, "
          f"{time.time() - started:.0f} s")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("Qini (mean over repeats)")
        print(qini.sort_values(("mean", "")).round(4).to_string())
        print("Qini spread (sd over repeats)")
        print(spread.round(4).to_string())
        print("Top 30% observed uplift / everyone's average effect (mean over repeats)")
        print(top.round(3).to_string())
        if decisions:
            print("Distilled inside how many outer folds")
            print(pd.DataFrame(decisions).groupby("learner")["distilled"].value_counts()
                  .to_string())


if __name__ == "__main__":
    main()
