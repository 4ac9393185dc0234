"""MLflow on a local SQLite store: what a run records, the registered model, promotion."""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from features.registry import feature_names
from training.promote import CHAMPION, PromotionError, promote
from training.tracking import log_churn_run
from training.train_churn import train_churn

PLOTS = {"roc.png", "reliability.png", "gains_lift.png", "feature_importance.png",
         "shap_summary.png"}


def test_run_records_lineage_metrics_plots_and_model(mlflow_store, trained, churn_config):
    logged = log_churn_run(churn_config, trained)
    client = MlflowClient()
    run = client.get_run(logged.run_id)
    params = run.data.params
    assert params["validation_cutoff"] == "2025-10-01"
    assert params["train_cutoffs"] == "2025-07-01,2025-08-01,2025-09-01"
    assert params["data_source"] == str(churn_config.data.resolve())
    assert int(params["rows_transactions"]) > 0
    assert int(params["validation_rows"]) == len(trained.validation)
    metrics = run.data.metrics
    assert metrics["roc_auc"] == pytest.approx(trained.metrics["model"].roc_auc)
    for baseline in ("recency_rule", "bgnbd_p_alive", "bgnbd_expected_purchases"):
        assert metrics[f"{baseline}_roc_auc"] < metrics["roc_auc"]
    assert {"ece", "brier", "log_loss", "pr_auc", "top_decile_lift"} <= metrics.keys()

    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation"}
    assert inputs["validation"].digest == run.data.tags["validation_digest"]
    assert inputs["training"].digest != inputs["validation"].digest

    plots = {f.path.split("/")[-1] for f in client.list_artifacts(logged.run_id, "plots")}
    assert plots == PLOTS

    version = client.get_model_version("churn", logged.model_version)
    assert version.run_id == logged.run_id
    model = mlflow.pyfunc.load_model(f"models:/churn/{logged.model_version}")
    assert model.metadata.get_input_schema().input_names() == feature_names()
    rows = trained.validation.head(50)
    got = model.predict(rows[feature_names()])["churn_probability"].to_numpy()
    np.testing.assert_allclose(got, trained.model.predict_proba(rows))


def test_promotion_moves_the_alias_only_for_a_better_model(mlflow_store, trained, churn_config):
    weak_cfg = dataclasses.replace(churn_config, num_leaves=2, max_trees=3)
    weak = log_churn_run(weak_cfg, train_churn(weak_cfg))
    first = promote("churn")
    assert first.promoted and first.champion is None
    assert "first champion" in first.message()

    strong = log_churn_run(churn_config, trained)
    better = promote("churn")
    assert better.promoted
    assert better.candidate_score > better.champion_score
    assert f"beats v{weak.model_version}" in better.message()
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("churn", CHAMPION).version) == strong.model_version

    # Asking again for the weak run's model: it is compared on its own validation rows
    # (the same rows, so each side's out-of-time scores) and loses.
    again = promote("churn", run_id=weak.run_id)
    assert not again.promoted
    assert again.candidate_score < again.champion_score
    assert "champion stays" in again.message()
    assert str(client.get_model_version_by_alias("churn", CHAMPION).version) == strong.model_version


def test_promotion_without_a_model_says_so(mlflow_store):
    with pytest.raises(PromotionError, match="no registered 'churn' model"):
        promote("churn")


def test_champion_scored_on_rows_it_did_not_validate_on(mlflow_store, trained, churn_config):
    log_churn_run(churn_config, trained)
    promote("churn")
    shorter = dataclasses.replace(churn_config, cutoffs=churn_config.cutoffs[:3])
    candidate = log_churn_run(shorter, train_churn(shorter))
    outcome = promote("churn", run_id=candidate.run_id)
    # The champion model scores the candidate's validation rows (2025-09-01) itself.
    rows = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=candidate.run_id, artifact_path="validation/validation.parquet"))
    assert set(rows["cutoff"]) == {pd.Timestamp("2025-09-01")}
    assert outcome.champion_score is not None and 0.5 < outcome.champion_score <= 1.0
