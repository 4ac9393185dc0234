"""Churn quality on CDNOW: the default protocol (training cutoffs up to 1997-10-01, validation
1998-01-01, test 1998-04-01), the model against its peers on the same test customers.

The test labels come from what customers did in [1998-04-01, 1998-06-30). The peers (recency
rule, BG/NBD P(alive) and expected purchases, and an RFM-only LightGBM trained on the same
cutoffs with the same early stopping and refit) are scored in the same run.

    python bench/churn_cdnow.py [--data ../shared/data/cdnow] [--test-cutoff 1998-04-01]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

# Run as a script, this folder would shadow the `features` package with bench/features.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.labels import LABEL  # noqa: E402
from training.config import ChurnTrainConfig  # noqa: E402
from training.metrics import score_metrics  # noqa: E402
from training.train_churn import ChurnTrainResult, train_churn  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow"
RFM = ["recency_days", "orders_total", "spend_total"]


def rfm_lightgbm(cfg: ChurnTrainConfig, result: ChurnTrainResult) -> np.ndarray:
    """The RFM-only peer on the same cutoffs: early stopping on validation, refit, test."""
    frame, plan = result.frame, result.plan
    train = frame[frame["cutoff"].isin([pd.Timestamp(c) for c in plan.train])]
    valid = frame[frame["cutoff"] == pd.Timestamp(plan.validation)]
    params = cfg.lightgbm_params()
    first = lgb.train(params, lgb.Dataset(train[RFM], train[LABEL]), cfg.max_trees,
                      valid_sets=[lgb.Dataset(valid[RFM], valid[LABEL])],
                      callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    both = pd.concat([train, valid])
    refit = lgb.train(params, lgb.Dataset(both[RFM], both[LABEL]), first.best_iteration)
    return refit.predict(result.test[RFM])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--test-cutoff", type=date.fromisoformat, default=date(1998, 4, 1))
    args = parser.parse_args()
    cfg = ChurnTrainConfig(data=args.data, test_cutoff=args.test_cutoff)

    started = time.perf_counter()
    result = train_churn(cfg)
    seconds = time.perf_counter() - started
    test = result.test
    y = test[LABEL].to_numpy()
    scores = {"churn model (this project)": (test["churn_probability"].to_numpy(), True),
              **{name: (result.baseline_scores[key], key == "bgnbd_p_alive") for name, key in (
                  ("recency rule", "recency_rule"), ("BG/NBD P(alive)", "bgnbd_p_alive"),
                  ("BG/NBD expected purchases", "bgnbd_expected_purchases"))},
              "RFM-only LightGBM": (rfm_lightgbm(cfg, result), True)}
    plan = result.plan
    print(f"# CDNOW churn, {date.today()}, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, lightgbm {lgb.__version__}")
    print(f"train cutoffs {', '.join(c.isoformat() for c in plan.train)}; validation "
          f"{plan.validation}; {result.trees} trees, {result.model.calibrator.method} "
          f"calibration; training took {seconds:.1f} s")
    print(f"test: base at {plan.test} = {len(test):,} customers, {y.mean():.1%} churned\n")
    print("| scorer | ROC AUC | PR AUC | ECE | log loss | lift top 10% |")
    print("|---|---|---|---|---|---|")
    for name, (score, is_prob) in scores.items():
        m = score_metrics(y, score, is_prob)
        prob = f"{m.ece:.4f} | {m.log_loss:.4f}" if is_prob else "- | -"
        print(f"| {name} | {m.roc_auc:.4f} | {m.pr_auc:.4f} | {prob} | {m.top_decile_lift:.3f} |")


if __name__ == "__main__":
    main()
