"""Uplift against the synthetic campaign's ground truth: does the model rank the true effect?

Generates 20,000 customers (about 12,500 in the randomised campaign), trains each learner
(and the default ensemble) with LightGBM's default trees and with smaller, slower-learning
ones, and reports the Spearman correlation of the learned effect with `true_uplift_spend`
(fitted, and out of fold), the out-of-fold Qini, the top-30% check (observed uplift of the
30% with the highest predicted uplift, out of fold, over everyone's average effect), and
the Spearman of `uplift_conversion` and `uplift_order_value` with the true effects on
buying and on spend among buyers.

    python bench/uplift_synthetic.py [--customers 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from features.synthetic import GenerateConfig, generate  # noqa: E402
from training.config import BaseParams, UpliftTrainConfig  # noqa: E402
from training.train_uplift import load_experiment, train_uplift  # noqa: E402
from training.uplift_data import Experiment  # noqa: E402
from training.uplift_learners import LEARNERS  # noqa: E402
from training.uplift_metrics import UpliftMetrics, uplift_at  # noqa: E402

SMOOTH = BaseParams(learning_rate=0.03, num_leaves=7, min_data_in_leaf=200, rounds=150,
                    lambda_l2=10.0)


def capped(experiment: Experiment, quantile: float | None) -> Experiment:
    """The experiment with spend cut at ``quantile`` of its positive values, for training."""
    if quantile is None:
        return experiment
    spend = experiment.outcomes["spend"]
    cap = float(np.quantile(spend[spend > 0], quantile))
    return replace(experiment, outcomes=experiment.outcomes.assign(spend=spend.clip(upper=cap)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--cap-quantile", type=float, default=None,
                        help="train on spend capped at this quantile of the experiment's "
                             "positive spend (e.g. 0.99); every figure uses the raw outcome")
    parser.add_argument("--trees", choices=["both", "defaults", "smaller"], default="both")
    parser.add_argument("--huber-quantile", type=float, default=None,
                        help="train every regression with LightGBM's Huber loss, its delta "
                             "the quantile of positive spend (e.g. 0.9)")
    parser.add_argument("--learners", nargs="+", choices=sorted(LEARNERS), default=list(LEARNERS),
                        help="fit only these learners (default: every one)")
    args = parser.parse_args()
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="uplift-synthetic-") as tmp:
        data = Path(tmp)
        generate(GenerateConfig(customers=args.customers, seed=11), data)
        truth = pd.read_parquet(data / "ground_truth.parquet").set_index("customer_id")
        experiment = load_experiment(UpliftTrainConfig(data=data))
        truth = truth.loc[experiment.ids]
        effect = truth["true_uplift_spend"].to_numpy()
        y, t = experiment.outcome(), experiment.treated()
        everyone = y[t == 1].mean() - y[t == 0].mean()
        training = capped(experiment, args.cap_quantile)
        settings = {"defaults": [("LightGBM defaults", BaseParams())],
                    "smaller": [("smaller trees", SMOOTH)]}
        chosen = [*settings["defaults"], *settings["smaller"]] if args.trees == "both" \
            else settings[args.trees]
        if args.huber_quantile is not None:
            spend = training.outcome()
            delta = float(np.quantile(spend[spend > 0], args.huber_quantile))
            chosen = [(f"{name}, Huber at {delta:.0f}",
                       replace(params, extra={"objective": "huber", "alpha": delta}))
                      for name, params in chosen]
        for trees, params in chosen:
            for learner in args.learners:
                cfg = UpliftTrainConfig(data=data, learner=learner, params=params)
                result = train_uplift(cfg, experiment=training)
                arm = experiment.arms[0]
                predicted = result.model.predict(experiment.features)
                r = result.arms[arm]
                rows.append({
                    "trees": trees, "learner": learner,
                    "spearman_fitted": spearmanr(predicted[f"uplift_{arm}"], effect).statistic,
                    "spearman_out_of_fold": spearmanr(r.selection.scores, effect).statistic,
                    "oof_qini": UpliftMetrics.of(y, t, r.selection.scores).qini,
                    "top30_over_all": uplift_at(y, t, r.selection.scores, 0.3) / everyone,
                    "spearman_conversion": spearmanr(predicted[f"uplift_conversion_{arm}"],
                                                     truth["true_uplift_conversion"]).statistic,
                    "spearman_order_value": spearmanr(
                        predicted[f"uplift_order_value_{arm}"],
                        truth["true_uplift_order_value"]).statistic,
                    "combination": r.combination})
                print(rows[-1], flush=True)
    print(f"# synthetic uplift, {date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, lightgbm {lgb.__version__}, {args.customers:,} customers "
          f"({len(experiment.ids):,} in the experiment), training spend capped at quantile "
          f"{args.cap_quantile}, Huber loss at quantile {args.huber_quantile} of positive "
          f"spend, {time.time() - started:.0f} s")
    with pd.option_context("display.width", 200):
        print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
