"""Do BG/NBD's outputs help the churn model as features? Measured on CDNOW's test cutoff.

The churn model's protocol (six monthly training cutoffs, validation 1998-01-01, test
1998-04-01, the same LightGBM settings), trained twice on the same rows: on the feature
registry alone, and with three more columns per cutoff from a BG/NBD fitted on the history
before that cutoff only (P(alive), expected purchases in the horizon, P(at least one
purchase in the horizon)). Both are scored with ROC AUC on the test cutoff, uncalibrated
(calibration does not change ROC AUC).

    python bench/churn_bgnbd_features.py [--data ../shared/data/cdnow]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lightgbm as lgb  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from features.labels import LABEL  # noqa: E402
from features.point_in_time import connect  # noqa: E402
from features.registry import feature_names  # noqa: E402
from features.tables import load_tables  # noqa: E402
from training.bgnbd import BGNBD  # noqa: E402
from training.config import ChurnTrainConfig  # noqa: E402
from training.dataset import clv_summary, training_frame  # noqa: E402
from training.train_churn import resolve_plan  # noqa: E402

HERE = Path(__file__).resolve().parent
EXTRA = ["bgnbd_p_alive", "bgnbd_expected_purchases", "bgnbd_p_any_purchase"]


def with_bgnbd(con, loaded, frame: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """``frame`` with BG/NBD's outputs per cutoff, each fitted on that cutoff's history."""
    parts = []
    for cutoff, rows in frame.groupby("cutoff"):
        summary = clv_summary(con, loaded.relations, cutoff.date())
        model = BGNBD().fit(summary)
        at = summary.set_index("customer_id").loc[rows["customer_id"]]
        weeks = horizon_days / 7.0
        parts.append(rows.assign(
            bgnbd_p_alive=model.p_alive(at), bgnbd_expected_purchases=model.expected_purchases(
                at, weeks), bgnbd_p_any_purchase=model.p_any_purchase(at, weeks)))
    return pd.concat(parts, ignore_index=True)


def roc_auc(cfg: ChurnTrainConfig, frame: pd.DataFrame, plan, names: list[str]) -> float:
    cutoff = frame["cutoff"]
    train = frame[cutoff.isin([pd.Timestamp(c) for c in plan.train])]
    valid = frame[cutoff == pd.Timestamp(plan.validation)]
    test = frame[cutoff == pd.Timestamp(plan.test)]
    train_set = lgb.Dataset(train[names], train[LABEL])
    booster = lgb.train(cfg.lightgbm_params(), train_set, cfg.max_trees,
                        valid_sets=[lgb.Dataset(valid[names], valid[LABEL], reference=train_set)],
                        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    trees = booster.best_iteration
    refit = lgb.train(cfg.lightgbm_params(), lgb.Dataset(
        pd.concat([train, valid])[names], pd.concat([train, valid])[LABEL]), trees)
    return float(roc_auc_score(test[LABEL], refit.predict(test[names])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        default=HERE.parents[1] / "shared" / "data" / "cdnow")
    args = parser.parse_args()
    cfg = ChurnTrainConfig(data=args.data, test_cutoff=date(1998, 4, 1), threads=2)
    with tempfile.TemporaryDirectory() as work, connect(temp_dir=Path(work) / "spill") as con:
        loaded = load_tables(con, args.data, Path(work))
        plan = resolve_plan(cfg, loaded)
        frame = training_frame(con, loaded, plan.all(), cfg.labels)
        frame = with_bgnbd(con, loaded, frame, cfg.labels.horizon_days)
    base = roc_auc(cfg, frame, plan, feature_names())
    more = roc_auc(cfg, frame, plan, [*feature_names(), *EXTRA])
    print(f"test ROC AUC on {plan.test}: registry features {base:.4f}, "
          f"with BG/NBD outputs {more:.4f} ({more - base:+.4f})")


if __name__ == "__main__":
    main()
