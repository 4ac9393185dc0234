"""`churn demo` as a newcomer runs it, and campaigns run as experiments on its output: a
balanced, reproducible holdout from the demo's win_back segment, and a readout that recovers
the generator's true effect. The demo runs once for the whole file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from features.point_in_time import connect
from features.registry import feature_names
from features.tables import load_tables
from models.store import default_tracking_uri
from tests.conftest import build, migrated_store, process_env

AS_OF = date(2026, 1, 1)  # the demo scores as of the day its data ends


def churn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "churn", *args], cwd=cwd,
                          env=process_env(COLUMNS="250"), capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`churn demo` on 6,000 customers (enough for a win_back segment of about 1,200), run
    once: its folder (``demo/`` holds the data, features and scores; ``mlflow.db`` the
    store) and the finished process."""
    folder = tmp_path_factory.mktemp("demo")
    migrated_store(folder)
    done = subprocess.run([sys.executable, "-m", "churn", "demo", "--customers", "6000",
                           "--out", "demo"], cwd=folder,
                          env=process_env(COLUMNS="200"), capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder, done


def test_demo_builds_features_trains_and_promotes(demo_output):
    tmp_path, done = demo_output
    assert "Features as of 2025-10-03" in done.stdout
    features = pd.read_parquet(tmp_path / "demo" / "features.parquet")
    assert list(features.columns) == ["customer_id", "as_of", *feature_names()]
    assert 4_800 < len(features) <= 6_000
    assert "Churn model vs baselines on the test cutoff 2025-10-01" in done.stdout
    for row in ("ROC AUC", "ECE", "lift top 10%", "verdict"):
        assert row in done.stdout
    assert "churn v1 is the first champion" in done.stdout
    assert "against the recency rule" in done.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in done.stdout
    assert (tmp_path / "mlflow.db").exists()
    assert "Segments: " in done.stdout
    scores = pd.read_parquet(tmp_path / "demo" / "scores.parquet")
    assert "Nested out-of-fold Qini" in done.stdout and "<- the model" in done.stdout
    assert "Nested out of fold" in done.stdout
    assert set(scores["as_of"].astype(str)) == {"2026-01-01"}
    took = re.search(r"Demo finished in (-?[\d.]+) s", done.stdout)
    assert took and 0 < float(took.group(1)) < 300
    # The uplift model becomes champion only if its nested out-of-fold Qini beats random
    # targeting, and scoring follows what happened.
    if "uplift v1 is the first champion" in done.stdout:
        assert set(scores["model_versions"]) == {"churn:v1,uplift:v1"}
        assert scores[["uplift_spend", "uplift_conversion", "uplift_order_value"]].notna(
        ).all().all()
        # Each customer's interval: that of the fifth of the ranking they fall in.
        assert "Effect by fifth of the ranking" in done.stdout
        assert (scores["uplift_spend_low"] < scores["uplift_spend_high"]).all()
        assert scores["uplift_spend_low"].nunique() == 5
    else:
        assert "note: uplift v1 does not beat random targeting" in done.stdout
        assert set(scores["model_versions"]) == {"churn:v1"}
        assert scores["uplift_spend"].isna().all()


def plan(folder: Path, out: str, seed: int) -> subprocess.CompletedProcess:
    done = churn("campaign", "plan", "--scores", "demo/scores.parquet", "--campaign", "spring",
                 "--segment", "win_back", "--holdout", "0.1", "--seed", str(seed),
                 "--data", "demo/data", "--out", out, cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def planned(demo_output):
    folder, _ = demo_output
    return folder, plan(folder, "spring", 7)


def test_holdout_is_stratified_and_balanced_on_every_feature(planned):
    folder, done = planned
    assert "balanced, largest standardised difference" in done.stdout
    exposures = pd.read_parquet(folder / "spring" / "exposures" / "spring.parquet")
    scores = pd.read_parquet(folder / "demo" / "scores.parquet").set_index("customer_id")
    segment = scores[(scores["segment"] == "win_back") & scores["contactable"]]
    assert set(exposures["customer_id"]) == set(segment.index)
    assert exposures["treatment"].isin([0, 1]).all()
    held = exposures.set_index("customer_id")["treatment"] == 0
    assert held.mean() == pytest.approx(0.1, abs=0.01)
    # Every decile of predicted uplift holds out its tenth (to rounding).
    deciles = pd.qcut(segment["uplift_spend"].rank(method="first"), 10, labels=False)
    per_decile = held.groupby(deciles.reindex(held.index)).mean()
    assert per_decile.between(0.08, 0.12).all(), per_decile
    contacts = pd.read_csv(folder / "spring" / "contacts.csv")
    assert set(contacts["customer_id"]) == set(held.index[~held])
    # Balance, measured here from the features job's own output.
    features = build(folder / "demo" / "data", AS_OF, folder / "features.parquet").loc[
        held.index, feature_names()]
    for name in features.columns:
        values = features[name].astype(float)
        if values.notna().sum() < 2 or values.std() == 0:
            continue
        filled = values.fillna(values.mean())
        difference = (filled[~held].mean() - filled[held].mean()) / filled.std(ddof=0)
        assert abs(difference) <= 0.1 + 1e-9, (name, difference)


def test_the_same_seed_draws_the_same_holdout(planned):
    folder, _ = planned
    plan(folder, "again", 7)
    plan(folder, "other", 8)
    first, again, other = (pd.read_parquet(folder / name / "exposures" / "spring.parquet")
                           .set_index("customer_id")["treatment"]
                           for name in ("spring", "again", "other"))
    pd.testing.assert_series_equal(first, again)
    assert (first != other.reindex(first.index)).any()


def test_written_exposures_are_contract_exposures_and_the_plan_is_recorded(planned, tmp_path):
    folder, _ = planned
    data = tmp_path / "data"
    (data / "exposures").mkdir(parents=True)
    shutil.copy(folder / "demo" / "data" / "transactions.parquet", data)
    shutil.copy(folder / "spring" / "exposures" / "spring.parquet", data / "exposures")
    with connect() as con:
        tables = load_tables(con, data, tmp_path / "work")
        found = con.sql(f"SELECT campaign_id, min(exposed_at), count(*) FROM "
                        f"{tables.relations['exposures']} GROUP BY 1").fetchall()
    assert [(c, n) for c, _, n in found] == [("spring", len(pd.read_parquet(
        data / "exposures" / "spring.parquet")))]
    assert found[0][1].date() == AS_OF
    recorded = json.loads((folder / "spring" / "plan.json").read_text())
    assert recorded["seed"] == 7 and recorded["holdout"] == 0.1
    mlflow.set_tracking_uri(default_tracking_uri(folder))
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("campaigns").experiment_id],
                              "tags.kind = 'plan' AND tags.campaign_id = 'spring'")
    assert runs and runs[0].data.metrics["max_abs_smd"] <= 0.1


def test_report_recovers_the_generators_true_effect(demo_output):
    folder, _ = demo_output
    done = churn("campaign", "report", "--data", "demo/data", "--campaign", "autumn_offer",
                 "--expected-holdout", "0.5", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chi-square" in done.stdout and "(ok)" in done.stdout
    mlflow.set_tracking_uri(default_tracking_uri(folder))
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("campaigns").experiment_id],
                             "tags.kind = 'report' AND tags.campaign_id = 'autumn_offer'")[0]
    metrics = run.data.metrics
    truth = pd.read_parquet(folder / "demo" / "data" / "ground_truth.parquet")
    truth = truth[truth["in_experiment"]]
    for outcome, column in (("spend", "true_uplift_spend"),
                            ("conversion", "true_uplift_conversion")):
        true = truth[column].mean()
        assert metrics[f"{outcome}_low"] <= true <= metrics[f"{outcome}_high"], (outcome, true)
    assert metrics["conversion_low"] > 0  # the offer brings buyers back, visibly
    assert metrics["srm_p"] > 0.001
    assert np.isclose(metrics["treated"] + metrics["held_out"], len(truth))


def test_report_before_the_window_matures_says_not_yet(demo_output, tmp_path):
    folder, _ = demo_output
    done = churn("campaign", "report", "--data", "demo/data", "--campaign", "autumn_offer",
                 "--horizon-days", "120", cwd=folder)
    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stdout.startswith("not yet: campaign 'autumn_offer'")
    # The data's real end: its last day, not the day after it.
    assert "the data's last day is 2025-12-31" in done.stdout
    assert "Traceback" not in done.stderr


def test_the_plan_says_what_effect_its_holdout_can_detect(planned):
    folder, done = planned
    summary = json.loads((folder / "spring" / "plan.json").read_text())
    held, contacted = summary["held_out"], summary["contacted"]
    # The textbook formula, from the segment's own last 30 days of spend.
    features = build(folder / "demo" / "data", AS_OF, folder / "features-power.parquet")
    exposures = pd.read_parquet(folder / "spring" / "exposures" / "spring.parquet")
    spend = features.loc[exposures["customer_id"], "spend_30d"].fillna(0.0)
    expected = 2.8016 * spend.std(ddof=1) * np.sqrt(1 / held + 1 / contacted)
    assert summary["mde_spend"] == pytest.approx(expected, rel=1e-3)
    assert 0 < summary["mde_conversion"] < 1
    assert f"spend {summary['mde_spend']:+,.2f} per customer" in done.stdout
    predicted = summary["predicted_spend_effect"]
    assert summary["detectable"] == (abs(predicted) >= summary["mde_spend"])
    assert ("below what this holdout can detect" in done.stdout) == (not summary["detectable"])
