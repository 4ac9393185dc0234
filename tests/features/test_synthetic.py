"""The generator: deterministic, valid under the contract, and realistic enough to learn from."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.metrics import r2_score, roc_auc_score

from features.synthetic import GenerateConfig, as_of_default, chunks, generate
from tests.conftest import build


def _tables(cfg: GenerateConfig) -> dict[str, pa.Table]:
    chunk = next(chunks(cfg))
    return {name: getattr(chunk, name) for name in ("transactions", "events", "ground_truth")}


def test_same_seed_same_data_other_seed_other_data():
    first, again = _tables(GenerateConfig(customers=500, seed=3)), _tables(
        GenerateConfig(customers=500, seed=3))
    other = _tables(GenerateConfig(customers=500, seed=4))
    for name in first:
        assert first[name].equals(again[name]), name
    assert not first["transactions"].equals(other["transactions"])


def test_output_passes_the_contract_and_csv_equals_parquet(tmp_path):
    cfg = GenerateConfig(customers=400, seed=5)
    generate(cfg, tmp_path / "pq")
    generate(cfg, tmp_path / "csv", fmt="csv")
    as_of = as_of_default(cfg)
    from_parquet = build(tmp_path / "pq", as_of)
    from_csv = build(tmp_path / "csv", as_of)
    assert len(from_parquet) > 300
    pd.testing.assert_frame_equal(from_csv, from_parquet)


def _days_before_departure(truth: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    gone = truth.dropna(subset=["departed_at"])[["customer_id", "departed_at"]]
    ev = events.merge(gone, on="customer_id")
    return ev.assign(before=(ev["departed_at"] - ev["occurred_at"]).dt.days)


def test_engagement_fades_and_trouble_rises_before_customers_leave(synthetic_data):
    folder, _ = synthetic_data
    truth = pd.read_parquet(folder / "ground_truth.parquet")
    ev = _days_before_departure(truth, pd.read_parquet(folder / "events.parquet"))
    early = ev[(ev["before"] >= 180) & (ev["before"] < 240)]
    late = ev[(ev["before"] >= 0) & (ev["before"] < 60)]

    def share(frame: pd.DataFrame, kind: str) -> float:
        return (frame["event_type"] == kind).sum() / (frame["event_type"] == "email_sent").sum()

    assert share(late, "email_open") < 0.6 * share(early, "email_open")
    assert share(late, "site_visit") < 0.6 * share(early, "site_visit")
    assert share(late, "support_contact") > 1.5 * share(early, "support_contact")
    assert share(late, "unsubscribe") > 3 * share(early, "unsubscribe")


def test_randomised_campaign_effect_matches_the_ground_truth(synthetic_data):
    folder, cfg = synthetic_data
    truth = pd.read_parquet(folder / "ground_truth.parquet")
    exposures = pd.read_parquet(folder / "exposures.parquet")
    tx = pd.read_parquet(folder / "transactions.parquet").merge(exposures, on="customer_id")
    window = tx[(tx["ordered_at"] >= tx["exposed_at"])
                & (tx["ordered_at"] < tx["exposed_at"] + pd.Timedelta(days=cfg.outcome_days))]
    spend = window.groupby("customer_id")["amount"].sum().reindex(
        exposures["customer_id"], fill_value=0.0).to_numpy()
    treated = exposures["treatment"].to_numpy() == 1
    observed = spend[treated].mean() - spend[~treated].mean()
    stderr = np.sqrt(spend[treated].var() / treated.sum()
                     + spend[~treated].var() / (~treated).sum())
    true_effect = truth.loc[truth["in_experiment"], "true_uplift_spend"]
    assert abs(observed - true_effect.mean()) < 3 * stderr
    assert true_effect.mean() > 0
    assert (true_effect < -0.5).mean() > 0.02  # a few respond negatively
    assert (true_effect.abs() < 0.5).mean() > 0.2  # many do not respond


def test_campaign_raises_conversion_and_can_lower_order_value(synthetic_data):
    folder, cfg = synthetic_data
    truth = pd.read_parquet(folder / "ground_truth.parquet").set_index("customer_id")
    exposures = pd.read_parquet(folder / "exposures.parquet").set_index("customer_id")
    tx = pd.read_parquet(folder / "transactions.parquet").join(exposures, on="customer_id",
                                                               how="inner")
    window = tx[(tx["ordered_at"] >= tx["exposed_at"])
                & (tx["ordered_at"] < tx["exposed_at"] + pd.Timedelta(days=cfg.outcome_days))]
    spend = window.groupby("customer_id")["amount"].sum().reindex(exposures.index, fill_value=0)
    bought = (spend > 0).to_numpy()
    treated = exposures["treatment"].to_numpy() == 1
    observed = bought[treated].mean() - bought[~treated].mean()
    stderr = np.sqrt(bought[treated].var() / treated.sum() + bought[~treated].var()
                     / (~treated).sum())
    true = truth.loc[exposures.index]
    assert abs(observed - true["true_uplift_conversion"].mean()) < 3 * stderr
    # A discount: some customers buy more often but spend less when they do.
    coupon = (true["true_uplift_conversion"] > 0.01) & (true["true_uplift_order_value"] < 0)
    assert coupon.mean() > 0.05
    assert (true["true_uplift_order_value"] < 0).mean() > 0.1


def test_sizes_scale_to_about_ten_orders_and_fifty_events_per_customer(synthetic_data):
    folder, cfg = synthetic_data
    orders = pd.read_parquet(folder / "transactions.parquet", columns=["amount"])
    events = pd.read_parquet(folder / "events.parquet", columns=["event_type"])
    assert 7 < (orders["amount"] >= 0).sum() / cfg.customers < 14
    assert 35 < len(events) / cfg.customers < 70


def _features_and_truth(folder, cfg):
    as_of = as_of_default(cfg)
    features = build(folder, as_of, out=folder.parent / f"learn-{as_of}.parquet")
    truth = pd.read_parquet(folder / "ground_truth.parquet").set_index("customer_id")
    tx = pd.read_parquet(folder / "transactions.parquet")
    cutoff = pd.Timestamp(as_of, tz="UTC")
    future = tx[(tx["ordered_at"] >= cutoff) & (tx["ordered_at"] < cutoff + pd.Timedelta(days=90))
                & (tx["amount"] >= 0)]
    active = features[features["orders_365d"] > 0].copy()
    active["churned"] = ~active.index.isin(future["customer_id"])
    return active, truth


def _holdout_auc(frame: pd.DataFrame, columns: list[str]) -> float:
    train = frame.index.str[-1].isin(list("01234"))
    model = lgb.LGBMClassifier(n_estimators=150, learning_rate=0.05, num_leaves=15,
                               verbose=-1, random_state=0)
    model.fit(frame.loc[train, columns], frame.loc[train, "churned"])
    scores = model.predict_proba(frame.loc[~train, columns])[:, 1]
    return roc_auc_score(frame.loc[~train, "churned"], scores)


def test_churn_is_learnable_and_engagement_adds_signal(synthetic_data):
    folder, cfg = synthetic_data
    active, _ = _features_and_truth(folder, cfg)
    assert 0.2 < active["churned"].mean() < 0.8
    rfm = ["recency_days", "orders_30d", "orders_90d", "orders_365d", "orders_total",
           "spend_365d", "tenure_days"]
    everything = [c for c in active.columns if c not in ("as_of", "churned")]
    auc_rfm, auc_all = _holdout_auc(active, rfm), _holdout_auc(active, everything)
    assert auc_rfm > 0.7
    assert auc_all > auc_rfm + 0.02


def test_campaign_effect_can_be_told_from_features(synthetic_data):
    folder, cfg = synthetic_data
    features = build(folder, as_of_default(cfg), out=folder.parent / "uplift-features.parquet")
    truth = pd.read_parquet(folder / "ground_truth.parquet").set_index("customer_id")
    frame = features.join(truth["true_uplift_spend"], how="inner").dropna(
        subset=["true_uplift_spend"])
    columns = [c for c in features.columns if c != "as_of"]
    train = frame.index.str[-1].isin(list("01234"))
    model = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.05, num_leaves=15, verbose=-1,
                              random_state=0)
    model.fit(frame.loc[train, columns], frame.loc[train, "true_uplift_spend"])
    predicted = model.predict(frame.loc[~train, columns])
    assert r2_score(frame.loc[~train, "true_uplift_spend"], predicted) > 0.1
