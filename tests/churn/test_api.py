"""The Python API on DataFrames, as a data scientist calls it: the same numbers as the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest

import churn
from features.contract import ContractError
from features.registry import feature_names
from tests.conftest import TEST_CUTOFF, build, crown, process_env, shared_file
from training.tracking import log_churn_run


def _same_features(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal tables (DuckDB's parallel float sums may differ in the last bits)."""
    got = got.set_index("customer_id").sort_index()
    expected = expected.set_index("customer_id").sort_index()
    assert list(got.columns) == list(expected.columns)
    assert got.index.equals(expected.index)
    pd.testing.assert_frame_equal(got[feature_names()], expected[feature_names()],
                                  check_exact=False, rtol=1e-9, atol=1e-9)
    assert (pd.to_datetime(got["as_of"]) == pd.to_datetime(expected["as_of"])).all()


@pytest.fixture(scope="module")
def cdnow_frame() -> pd.DataFrame:
    path = shared_file("cdnow/transactions.csv")
    return pd.read_csv(path, dtype={"customer_id": str, "order_id": str})


def test_features_from_cdnow_dataframes_equal_the_cli_on_the_folder(cdnow_frame, tmp_path):
    folder = shared_file("cdnow/transactions.csv").parent
    out = tmp_path / "features.parquet"
    done = subprocess.run([sys.executable, "-m", "churn", "features", "--data", str(folder),
                           "--as-of", "1998-01-01", "--out", str(out)], cwd=tmp_path,
                          env=process_env(), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    from_cli = pd.read_parquet(out)
    assert len(from_cli) > 20_000

    _same_features(churn.features_at(cdnow_frame, as_of="1998-01-01"), from_cli)
    # Timestamps parsed by pandas (naive, read as UTC) give the same features as ISO text.
    parsed = cdnow_frame.assign(ordered_at=pd.to_datetime(cdnow_frame["ordered_at"]))
    _same_features(churn.features_at(parsed, as_of=date(1998, 1, 1)), from_cli)
    # And so does the folder given to the API.
    _same_features(churn.features_at(folder, as_of="1998-01-01"), from_cli)


def test_features_from_every_table_as_dataframes(synthetic_data):
    folder, _ = synthetic_data
    tables = churn.Tables(
        transactions=pd.read_parquet(folder / "transactions.parquet"),
        events=pd.read_parquet(folder / "events.parquet"),
        customers=pd.read_parquet(folder / "customers.parquet"))
    expected = build(folder, TEST_CUTOFF).reset_index()
    got = churn.features_at(tables, as_of=TEST_CUTOFF)
    _same_features(got, expected)
    assert got["email_open_90d"].sum() > 0  # engagement came through


def test_a_dataframe_breaking_the_contract_is_refused_by_name(cdnow_frame):
    bad = cdnow_frame.head(1000).copy()
    bad.loc[[3, 7], "ordered_at"] = "last tuesday"
    with pytest.raises(ContractError, match=r"(?s)transactions: 2 rows of 1,000 .*column "
                                            r"'ordered_at', rule 'parse as timestamp'.*row 4"):
        churn.features_at(bad, as_of="1998-01-01")
    with pytest.raises(ContractError, match="missing required column 'amount'"):
        churn.features_at(cdnow_frame.drop(columns=["amount"]), as_of="1998-01-01")
    with pytest.raises(TypeError, match="folder path, a DataFrame of transactions or Tables"):
        churn.features_at([1, 2, 3], as_of="1998-01-01")
    with pytest.raises(ContractError, match="not a date"):
        churn.features_at(cdnow_frame, as_of="soon")


def test_labels_and_snapshot_agree(synthetic_data):
    folder, _ = synthetic_data
    labels = churn.churn_labels(folder, "2025-07-01")
    shot = churn.snapshot(folder, "2025-07-01")
    assert labels["customer_id"].tolist() == shot["customer_id"].tolist()
    assert (labels["churned"].to_numpy() == shot["churned"].to_numpy()).all()
    assert 0.05 < labels["churned"].mean() < 0.95
    assert set(feature_names()) <= set(shot.columns)
    with pytest.raises(ContractError, match="label window"):
        churn.churn_labels(folder, "2025-12-01")


def test_train_track_promote_and_score_from_dataframes(synthetic_data, mlflow_store):
    folder, _ = synthetic_data
    tables = churn.Tables(
        transactions=pd.read_parquet(folder / "transactions.parquet"),
        events=pd.read_parquet(folder / "events.parquet"),
        customers=pd.read_parquet(folder / "customers.parquet"), name="shop")
    before = time.time()
    result = churn.train_churn(tables, cutoffs=3, learning_rate=0.05)
    metrics = churn.metrics_table(result)
    assert metrics.loc["model", "roc_auc"] > metrics.loc["recency_rule", "roc_auc"]

    run = mlflow.get_run(result.run.run_id)
    assert run.info.run_name == f"churn-shop-test-{TEST_CUTOFF}"
    assert run.data.params["data_source"] == f"dataframes:shop:{tables.digest()}"
    # The run started when training did, not when logging began.
    assert run.info.start_time / 1000 == pytest.approx(before, abs=2)
    assert result.run.model_version == "1"
    description = run.data.tags["mlflow.note.content"]
    assert description.startswith(f"Churn model on dataframes:shop:{tables.digest()}: 3 "
                                  f"training cutoffs")
    assert f"Test ROC AUC {metrics.loc['model', 'roc_auc']:.3f}" in description

    promoted = churn.promote("churn")
    assert promoted.promoted and "first champion" in promoted.message()
    scores = churn.score(tables, as_of="2026-01-01", explain=False)
    assert scores["customer_id"].is_unique
    assert set(scores["model_versions"]) == {"churn:v1"}
    assert scores["segment"].isin(["new", "active", "at_risk", "lapsed", "win_back"]).all()
    in_base = scores["churn_probability"].notna()
    assert in_base.mean() > 0.3
    assert scores.loc[in_base, "churn_probability"].between(0, 1).all()


def test_scores_from_the_api_equal_the_batch_job(synthetic_data, trained, churn_config,
                                                 mlflow_store, tmp_path):
    folder, _ = synthetic_data
    logged = log_churn_run(churn_config, trained)
    crown("churn", logged.model_version)
    out = tmp_path / "scores.parquet"
    done = subprocess.run([sys.executable, "-m", "churn", "score", "--data", str(folder),
                           "--as-of", "2026-01-01", "--out", str(out)], cwd=tmp_path,
                          env=process_env(MLFLOW_TRACKING_URI=mlflow_store),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    batch = pd.read_parquet(out)
    api = churn.score(folder, as_of="2026-01-01", model=churn.load_champion())
    assert api["customer_id"].tolist() == batch["customer_id"].tolist()
    assert np.allclose(api["churn_probability"], batch["churn_probability"], equal_nan=True)
    assert (api["segment"] == batch["segment"]).all()
    with_reasons = api["reasons"].notna()
    assert with_reasons.any()
    first = api.loc[with_reasons, "reasons"].iloc[0][0]
    assert set(first) == {"feature", "label", "value", "unit", "typical", "contribution", "text"}


def test_uplift_on_a_hillstrom_dataframe(mlflow_store):
    hillstrom = pd.read_csv(shared_file("hillstrom/hillstrom.csv"))
    arms = {"treatments": ["segment=Mens E-Mail"], "control": "segment=No E-Mail",
            "ignore": ["visit", "conversion", "history_segment"]}
    evaluation = churn.evaluate_uplift(table=hillstrom, learner="t_learner", folds=3, **arms)
    row = evaluation.summary.set_index("outcome").loc["spend"]
    assert evaluation.scores["id"].nunique() == len(evaluation.scores)
    assert -1 < row["qini"] < 1 and row["auuc"] == row["auuc"]
    result = churn.train_uplift(table=hillstrom, learner="t_learner", name="hillstrom", **arms)
    assert list(result.arms) == ["Mens E-Mail"]
    effect = result.model.predict(result.experiment.features.head(50))
    assert list(effect.columns) == ["uplift_Mens E-Mail", "uplift_conversion_Mens E-Mail",
                                    "uplift_order_value_Mens E-Mail"]
    assert np.isfinite(effect.to_numpy()).all()
    run = mlflow.get_run(result.run.run_id)
    assert run.data.params["data_source"].startswith("dataframe:")
    assert run.info.run_name == "uplift-hillstrom-spend"
    assert "Mens E-Mail: 21,307 treated, 21,306 control, learner t_learner" in \
        run.data.tags["mlflow.note.content"]
