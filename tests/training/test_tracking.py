"""MLflow on a local SQLite store: what a run records, the registered model, fair promotion."""

from __future__ import annotations

import dataclasses
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from features.registry import feature_names
from models.registry import CHAMPION, TEST_ARTIFACT
from tests.conftest import TEST_CUTOFF
from training.promote import PromotionError, promote
from training.tracking import log_churn_run
from training.train_churn import train_churn

PLOTS = {"roc.png", "reliability.png", "gains_lift.png", "feature_importance.png",
         "shap_summary.png"}


def test_run_records_lineage_metrics_plots_and_model(mlflow_store, trained, churn_config):
    logged = log_churn_run(churn_config, trained)
    client = MlflowClient()
    run = client.get_run(logged.run_id)
    params = run.data.params
    assert params["train_cutoffs"] == "2025-02-01,2025-03-01,2025-04-01"
    assert params["validation_cutoff"] == "2025-07-01"
    assert params["test_cutoff"] == "2025-10-01"
    assert params["fitted_through"] == "2025-09-29"
    assert params["data_source"] == str(churn_config.data.resolve())
    assert int(params["rows_transactions"]) > 0
    assert int(params["test_rows"]) == len(trained.test)
    metrics = run.data.metrics
    assert metrics["test_roc_auc"] == pytest.approx(trained.metrics["model"].roc_auc)
    assert metrics["validation_roc_auc"] == pytest.approx(trained.validation_metrics.roc_auc)
    for baseline in ("recency_rule", "bgnbd_p_alive", "bgnbd_expected_purchases"):
        assert metrics[f"test_{baseline}_roc_auc"] < metrics["test_roc_auc"]
    assert {"test_ece", "test_brier", "test_log_loss", "test_pr_auc",
            "test_top_decile_lift"} <= metrics.keys()

    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    assert inputs["test"].digest == run.data.tags["test_digest"]
    assert len({d.digest for d in inputs.values()}) == 3

    plots = {f.path.split("/")[-1] for f in client.list_artifacts(logged.run_id, "plots")}
    assert plots == PLOTS

    version = client.get_model_version("churn", logged.model_version)
    assert version.run_id == logged.run_id
    model = mlflow.pyfunc.load_model(f"models:/churn/{logged.model_version}")
    assert model.metadata.get_input_schema().input_names() == feature_names()
    rows = trained.test.head(50)
    got = model.predict(rows[feature_names()])["churn_probability"].to_numpy()
    np.testing.assert_allclose(got, trained.model.predict_proba(rows))


def test_promotion_moves_the_alias_only_for_a_better_model(mlflow_store, trained, churn_config):
    weak_cfg = dataclasses.replace(churn_config, num_leaves=2, max_trees=3)
    weak = log_churn_run(weak_cfg, train_churn(weak_cfg))
    first = promote("churn", min_gain=-1.0)
    assert first.promoted and first.champion is None
    assert "first champion" in first.message() and "the recency rule" in first.message()

    strong = log_churn_run(churn_config, trained)
    better = promote("churn")
    assert better.promoted
    assert better.candidate_score > better.champion_score
    assert f"beats v{weak.model_version}" in better.message()
    assert f"test cutoff {TEST_CUTOFF}" in better.message()
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("churn", CHAMPION).version) == strong.model_version

    # Asking again for the weak run's model: both are judged on its test rows, which neither
    # was fitted on, and it loses.
    again = promote("churn", run_id=weak.run_id)
    assert not again.promoted
    assert again.candidate_score < again.champion_score
    assert "champion stays" in again.message()
    assert str(client.get_model_version_by_alias("churn", CHAMPION).version) == strong.model_version


def test_a_challenger_must_beat_the_champion_by_more_than_the_noise(mlflow_store, trained,
                                                                   churn_config):
    log_churn_run(churn_config, trained)
    assert promote("churn").promoted
    # The same configuration again: identical scores never move the alias.
    again = log_churn_run(churn_config, trained)
    same = promote("churn", run_id=again.run_id)
    assert not same.promoted and same.candidate_score == same.champion_score
    # Another seed: whatever it gains or loses is within the noise of the same rows.
    reseeded_cfg = dataclasses.replace(churn_config, seed=8)
    reseeded = log_churn_run(reseeded_cfg, train_churn(reseeded_cfg))
    outcome = promote("churn", run_id=reseeded.run_id)
    assert not outcome.promoted, outcome.message()
    assert "paired bootstrap lower bound" in outcome.message()
    assert str(MlflowClient().get_model_version_by_alias("churn", CHAMPION).version) == "1"
    with pytest.raises(PromotionError, match="unknown kind of model 'churnn'"):
        promote("churn", kind="churnn")


def test_a_first_champion_must_beat_the_recency_rule(mlflow_store, trained, churn_config):
    logged = log_churn_run(churn_config, trained)
    rows = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=logged.run_id, artifact_path=TEST_ARTIFACT))
    gain = (roc_auc_score(rows["churned"], rows["churn_probability"])
            - roc_auc_score(rows["churned"], rows["recency_days"]))
    with pytest.raises(PromotionError, match=rf"does not beat the recency rule .* short by "
                                             rf"{0.5 - gain:.4f}"):
        promote("churn", min_gain=0.5)
    with pytest.raises(mlflow.exceptions.MlflowException):
        MlflowClient().get_model_version_by_alias("churn", CHAMPION)
    assert promote("churn").promoted


def test_a_version_from_a_run_that_never_finished_is_not_a_candidate(mlflow_store, trained,
                                                                     churn_config):
    logged = log_churn_run(churn_config, trained)
    assert promote("churn").promoted
    client = MlflowClient()
    done = client.get_model_version("churn", logged.model_version)
    killed = client.create_run(client.get_run(logged.run_id).info.experiment_id)  # RUNNING
    orphan = client.create_model_version("churn", done.source, killed.info.run_id)
    outcome = promote("churn")
    assert outcome.candidate == logged.model_version != orphan.version
    assert "already the champion" in outcome.message()
    with pytest.raises(PromotionError, match=rf"v{orphan.version} from run .* did not finish"):
        promote("churn", run_id=killed.info.run_id)


def test_promotion_without_a_model_says_so(mlflow_store):
    with pytest.raises(PromotionError, match="no registered 'churn' model"):
        promote("churn")


def test_a_champion_is_never_judged_on_rows_it_was_fitted_on(mlflow_store, trained,
                                                             churn_config):
    """The champion (fitted through 2025-09-29) against a candidate tested at 2025-07-01:
    comparing them there would score the champion on customers it learned from."""
    log_churn_run(churn_config, trained)
    promote("churn")
    earlier = dataclasses.replace(churn_config, test_cutoff=date(2025, 7, 1))
    candidate = log_churn_run(earlier, train_churn(earlier))
    with pytest.raises(PromotionError, match=r"fitted on data up to 2025-09-29, after the "
                                             r"candidate's test cutoff 2025-07-01"):
        promote("churn", run_id=candidate.run_id)
    champion = MlflowClient().get_model_version_by_alias("churn", CHAMPION)
    assert champion.run_id != candidate.run_id


def test_an_older_champion_scores_the_newer_candidates_test_rows(mlflow_store, churn_config):
    earlier = dataclasses.replace(churn_config, test_cutoff=date(2025, 7, 1))
    log_churn_run(earlier, train_churn(earlier))
    promote("churn")
    candidate = log_churn_run(churn_config, train_churn(churn_config))
    outcome = promote("churn", run_id=candidate.run_id)
    rows = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=candidate.run_id, artifact_path=TEST_ARTIFACT))
    assert set(rows["cutoff"]) == {pd.Timestamp(TEST_CUTOFF)}
    assert outcome.champion_score is not None and 0.5 < outcome.champion_score <= 1.0
    assert outcome.promoted == (outcome.candidate_score > outcome.champion_score)
