"""Uplift against the synthetic campaign's ground truth: does the model rank the true effect?

Generates 20,000 customers (about 12,500 in the randomised campaign), trains each learner
with LightGBM's default trees and with smaller, slower-learning ones, and reports the
Spearman correlation of the learned effect with `true_uplift_spend` (fitted, and out of
fold) and the out-of-fold Qini.

    python bench/uplift_synthetic.py [--customers 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lightgbm as lgb  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from features.synthetic import GenerateConfig, generate  # noqa: E402
from training.train_uplift import UpliftTrainConfig, load_experiment, train_uplift  # noqa: E402
from training.uplift_learners import LEARNERS, BaseParams  # noqa: E402

SMOOTH = BaseParams(learning_rate=0.03, num_leaves=7, min_data_in_leaf=200, rounds=150,
                    lambda_l2=10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="uplift-synthetic-") as tmp:
        data = Path(tmp)
        generate(GenerateConfig(customers=args.customers, seed=11), data)
        truth = pd.read_parquet(data / "ground_truth.parquet").set_index("customer_id")
        experiment = load_experiment(UpliftTrainConfig(data=data))
        effect = truth.loc[experiment.ids, "true_uplift_spend"].to_numpy()
        for trees, params in (("LightGBM defaults", BaseParams()), ("smaller trees", SMOOTH)):
            for learner in LEARNERS:
                cfg = UpliftTrainConfig(data=data, learner=learner, params=params)
                result = train_uplift(cfg, experiment=experiment)
                arm = experiment.arms[0]
                fitted = result.model.predict(experiment.features)[f"uplift_{arm}"]
                r = result.arms[arm]
                rows.append({"trees": trees, "learner": learner,
                             "spearman_fitted": spearmanr(fitted, effect).statistic,
                             "spearman_out_of_fold": spearmanr(r.selection.scores,
                                                               effect).statistic,
                             "oof_qini": r.metrics["spend"].qini})
                print(rows[-1], flush=True)
    print(f"# synthetic uplift, {date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, lightgbm {lgb.__version__}, {args.customers:,} customers "
          f"({len(experiment.ids):,} in the experiment), {time.time() - started:.0f} s")
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
