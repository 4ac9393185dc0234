"""Churn quality on CDNOW: train with cutoffs up to 1998-01-01, test at 1998-04-01.

The test labels come from what customers did in [1998-04-01, 1998-06-30). The model and its
peers (recency rule, BG/NBD P(alive) and expected purchases, an RFM-only LightGBM trained
the same way) are scored on the same test customers in the same run.

    python bench/churn_cdnow.py [--data ../shared/data/cdnow] [--cutoffs ...]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# Run as a script, this folder would shadow the `features` package with bench/features.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.labels import ChurnLabelConfig  # noqa: E402
from features.point_in_time import connect  # noqa: E402
from features.tables import load_tables  # noqa: E402
from training.bgnbd import BGNBD  # noqa: E402
from training.dataset import LABEL, clv_summary, snapshot  # noqa: E402
from training.metrics import score_metrics  # noqa: E402
from training.train_churn import ChurnTrainConfig, monthly_cutoffs, train_churn  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow"
RFM = ["recency_days", "orders_total", "spend_total"]


def rfm_lightgbm(cfg: ChurnTrainConfig, frame: pd.DataFrame, validation_cutoff: date,
                 test: pd.DataFrame) -> np.ndarray:
    """The RFM-only peer: same protocol (early stopping on the latest cutoff, then refit)."""
    is_valid = frame["cutoff"] == pd.Timestamp(validation_cutoff)
    train, valid = frame[~is_valid], frame[is_valid]
    params = cfg.lightgbm_params()
    first = lgb.train(params, lgb.Dataset(train[RFM], train[LABEL]), cfg.max_trees,
                      valid_sets=[lgb.Dataset(valid[RFM], valid[LABEL])],
                      callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    refit = lgb.train(params, lgb.Dataset(frame[RFM], frame[LABEL]), first.best_iteration)
    return refit.predict(test[RFM])


def test_snapshot(data: Path, cutoff: date, labels: ChurnLabelConfig):
    with tempfile.TemporaryDirectory() as work, connect() as con:
        loaded = load_tables(con, data, Path(work))
        return snapshot(con, loaded.relations, cutoff, labels), clv_summary(
            con, loaded.relations, cutoff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cutoffs", default=",".join(
        c.isoformat() for c in monthly_cutoffs(date(1998, 1, 1), 10)))
    parser.add_argument("--test-cutoff", type=date.fromisoformat, default=date(1998, 4, 1))
    args = parser.parse_args()
    cutoffs = tuple(date.fromisoformat(c) for c in args.cutoffs.split(","))
    cfg = ChurnTrainConfig(data=args.data, cutoffs=cutoffs)

    started = time.perf_counter()
    result = train_churn(cfg)
    seconds = time.perf_counter() - started
    test, summary = test_snapshot(args.data, args.test_cutoff, cfg.labels)
    y = test[LABEL].to_numpy()
    rows = summary.set_index("customer_id").loc[test["customer_id"]]
    bgnbd = BGNBD().fit(summary)
    horizon = cfg.labels.horizon_days / 7.0
    scores = {
        "churn model (this project)": (result.model.predict_proba(test), True),
        "recency rule": (test["recency_days"].to_numpy(), False),
        "BG/NBD P(alive)": (1 - bgnbd.p_alive(rows), True),
        "BG/NBD expected purchases": (-bgnbd.expected_purchases(rows, horizon), False),
        "RFM-only LightGBM": (rfm_lightgbm(cfg, result.frame, result.validation_cutoff, test),
                              True),
    }
    print(f"# CDNOW churn, {date.today()}, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, lightgbm {lgb.__version__}")
    print(f"train cutoffs {', '.join(c.isoformat() for c in result.train_cutoffs)}; "
          f"validation {result.validation_cutoff}; {result.trees} trees, "
          f"{result.model.calibrator.method} calibration; training took {seconds:.1f} s")
    print(f"test: base at {args.test_cutoff} = {len(test):,} customers, "
          f"{y.mean():.1%} churned by {args.test_cutoff + pd.Timedelta(days=90)}\n")
    print("| scorer | ROC AUC | PR AUC | ECE | log loss | lift top 10% |")
    print("|---|---|---|---|---|---|")
    for name, (score, is_prob) in scores.items():
        m = score_metrics(y, score, is_prob)
        prob = f"{m.ece:.4f} | {m.log_loss:.4f}" if is_prob else "- | -"
        print(f"| {name} | {m.roc_auc:.4f} | {m.pr_auc:.4f} | {prob} | {m.top_decile_lift:.3f} |")


if __name__ == "__main__":
    main()
