"""Uplift quality on the Hillstrom e-mail experiment: out-of-fold Qini against peers.

For {Womens, Mens} e-mail vs `No E-Mail` x {spend, conversion}, 5 folds x 3 repeats (the
same stratified folds for every scorer in a repeat), out-of-fold scores ranked within each
fold:
- model: `churn evaluate uplift`'s own path (learner chosen by inner-fold Qini inside each
  outer training fold, so the scored fold never helps choose);
- peers: a T-learner and a transformed-outcome regressor with LightGBM's default settings,
  and ranking by last year's spend (`history`).

    python bench/uplift_hillstrom.py [--data ../shared/data/hillstrom/hillstrom.csv]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lightgbm as lgb  # noqa: E402
import pandas as pd  # noqa: E402

from training.config import BaseParams, UpliftTrainConfig  # noqa: E402
from training.train_uplift import (  # noqa: E402
    evaluate_uplift,
    evaluation_metrics,
    load_experiment,
    summarize_evaluation,
)
from training.uplift_learners import TLearner, TransformedOutcome  # noqa: E402

DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "hillstrom"
                / "hillstrom.csv")
ARMS = ("segment=Womens E-Mail", "segment=Mens E-Mail")
# LightGBM's own defaults (100 trees of 31 leaves, learning rate 0.1, 20 rows per leaf).
DEFAULTS = BaseParams(learning_rate=0.1, num_leaves=31, min_data_in_leaf=20, rounds=100,
                      lambda_l2=0.0, feature_fraction=1.0)


def peers() -> dict:
    def t_learner(X, y, t, X_held):
        return TLearner(DEFAULTS).fit(X, y, t).predict(X_held)

    def transformed(X, y, t, X_held):
        return TransformedOutcome(DEFAULTS).fit(X, y, t).predict(X_held)

    def history(X, y, t, X_held):
        return X_held["history"].to_numpy(dtype=float)

    return {"t_learner_default": t_learner, "transformed_outcome_default": transformed,
            "history": history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--learner", default="auto",
                        help="the model's learner: auto (chosen in each outer fold) or one")
    args = parser.parse_args()
    started = time.time()
    tables, pooled = [], []
    for outcome, other in (("spend", "conversion"), ("conversion", "spend")):
        cfg = UpliftTrainConfig(table=args.data, treatments=ARMS, control="segment=No E-Mail",
                                outcome=outcome, ignore=("visit", other), learner=args.learner)
        experiment = load_experiment(cfg)
        scores = evaluate_uplift(cfg, args.folds, args.repeats, experiment,
                                 progress=lambda m, o=outcome: print(f"[{o}] {m}", flush=True),
                                 scorers=peers())
        chosen = scores.groupby("arm")["learners_chosen"].agg(
            lambda s: pd.Series(",".join(s.unique()).split(",")).value_counts().to_dict())
        print(outcome, "learners chosen per outer fold:", chosen.to_dict(), flush=True)
        for target, ranks in ((tables, False), (pooled, True)):
            metrics = evaluation_metrics(scores, pooled_estimates=ranks)
            target.append(metrics[metrics["outcome"] == outcome])
    summary = summarize_evaluation(pd.concat(tables, ignore_index=True))
    cells = summary.pivot_table(index="scorer", columns=["arm", "outcome"], values="qini")
    cells[("mean of 4", "")] = cells.mean(axis=1)
    spread = summary.pivot_table(index="scorer", columns=["arm", "outcome"], values="qini_sd")
    raw = summarize_evaluation(pd.concat(pooled, ignore_index=True)).pivot_table(
        index="scorer", columns=["arm", "outcome"], values="qini")
    raw[("mean of 4", "")] = raw.mean(axis=1)
    print(f"# Hillstrom uplift, {date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}, "
          f"lightgbm {lgb.__version__}, "
          f"{args.folds} folds x {args.repeats} repeats, model learner {args.learner}, "
          f"{time.time() - started:.0f} s")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("Qini (mean over repeats)")
        print(cells.round(4).to_string())
        print("Qini spread (sd over repeats)")
        print(spread.round(4).to_string())
        print("Qini with the raw estimates of all folds ranked together (mean over repeats)")
        print(raw.round(4).to_string())
        print(summary.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
