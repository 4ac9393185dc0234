"""With propensity and value champions, scores carry purchase probability, predicted orders
and spend, P(alive) and the next order's due date: the same in Parquet, PostgreSQL and the
Python API, and value at risk follows predicted spend."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner

import churn
from churn.cli import app
from serving.batch import ScoreJobConfig, run_score
from serving.champion import NoChampionError, load_champion
from serving.policy import DEFAULT_POLICY, SegmentPolicy
from tests.conftest import crown, migrated_store
from training.promote import promote
from training.tracking import log_churn_run
from training.value_tracking import log_value_run

AS_OF = date(2025, 10, 1)
FORECASTS = ["purchase_probability_30d", "predicted_orders_90d", "predicted_spend_90d",
             "p_alive", "next_order_expected_by"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained, churn_config, propensity_trained, value_config,
          value_trained) -> str:
    folder = tmp_path_factory.mktemp("forecast-store")
    uri, previous, cwd = migrated_store(folder), mlflow.get_tracking_uri(), Path.cwd()
    os.chdir(folder)
    mlflow.set_tracking_uri(uri)
    try:
        log_churn_run(churn_config, trained)
        promote("churn")
        propensity = replace(churn_config, labels=propensity_trained.model.label)
        log_churn_run(propensity, propensity_trained, "propensity", "propensity")
        assert promote("propensity", kind="propensity").promoted
        crown("value", log_value_run(value_config, value_trained).model_version)
    finally:
        mlflow.set_tracking_uri(previous)
        os.chdir(cwd)
    return uri


@pytest.fixture
def loaded(store):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    try:
        yield load_champion()
    finally:
        mlflow.set_tracking_uri(previous)


def read_table(url: str, table: str) -> pd.DataFrame:
    with psycopg.connect(url) as con:
        cursor = con.execute(f"SELECT * FROM {table} ORDER BY as_of, customer_id")
        names = [d.name for d in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=names)


def test_forecasts_agree_in_parquet_postgres_and_the_api(loaded, synthetic_data, tmp_path,
                                                          postgres_database):
    data, _ = synthetic_data
    assert loaded.label == "churn:v1,propensity:v1,value:v1"
    run_score(ScoreJobConfig(data=data, as_of=AS_OF, out=str(tmp_path / "s.parquet")), loaded)
    parquet = pd.read_parquet(tmp_path / "s.parquet")
    at = list(parquet.columns).index("value_at_risk")
    assert list(parquet.columns)[at + 1:at + 6] == FORECASTS
    bought = parquet["predicted_spend_90d"].notna()
    assert bought.mean() > 0.5 and parquet.loc[bought, FORECASTS[:4]].notna().all().all()
    assert parquet.loc[bought, "purchase_probability_30d"].between(0, 1).all()
    assert parquet["next_order_expected_by"].dropna().between(
        AS_OF, AS_OF + pd.Timedelta(days=90)).all()
    # Value at risk: churn probability x forecast spend over the policy's horizon.
    policy = SegmentPolicy.load(DEFAULT_POLICY)
    expected = (parquet["churn_probability"] * parquet["predicted_spend_90d"].fillna(0)
                * policy.horizon_days / 90)
    np.testing.assert_allclose(parquet["value_at_risk"], expected, rtol=1e-12)

    run_score(ScoreJobConfig(data=data, as_of=AS_OF, out=f"{postgres_database}?table=scores"),
              loaded)
    table = read_table(postgres_database, "scores")
    assert list(table.columns) == list(parquet.columns)
    for column in FORECASTS[:4]:
        np.testing.assert_allclose(table[column].astype(float), parquet[column], rtol=1e-12)
    assert table["next_order_expected_by"].tolist() == parquet["next_order_expected_by"].tolist()

    api = churn.score(data, as_of=AS_OF, model=loaded, explain=False)
    for column in FORECASTS[:4]:
        np.testing.assert_allclose(api[column], parquet[column], rtol=1e-12)


def test_a_table_from_before_the_forecasts_gains_their_columns(loaded, synthetic_data,
                                                               postgres_database):
    data, _ = synthetic_data
    url = f"{postgres_database}?table=scores"
    churn_only = replace(loaded, propensity=None, value=None)
    run_score(ScoreJobConfig(data=data, as_of=date(2025, 9, 1), out=url), churn_only)
    assert "p_alive" not in read_table(postgres_database, "scores").columns
    run_score(ScoreJobConfig(data=data, as_of=AS_OF, out=url), loaded)
    table = read_table(postgres_database, "scores")
    before, after = table[table["as_of"] == date(2025, 9, 1)], table[table["as_of"] == AS_OF]
    assert len(before) and len(after)
    assert before["p_alive"].isna().all() and after["p_alive"].notna().any()


def test_spend_tiers_can_follow_predicted_spend(loaded, synthetic_data, tmp_path):
    data, _ = synthetic_data
    past = churn.score(data, as_of=AS_OF, model=loaded, explain=False)
    rules = replace(SegmentPolicy.load(DEFAULT_POLICY), tier_source="predicted")
    ahead = churn.score(data, as_of=AS_OF, model=loaded, policy=rules, explain=False)
    spend = ahead["predicted_spend_90d"].fillna(0)
    means = spend.groupby(ahead["spend_tier"]).mean()
    assert means["low"] < means["medium"] < means["high"]
    assert (ahead["spend_tier"] != past["spend_tier"]).any()
    # Cut at the policy's quantiles of the forecasts over the model's test customers.
    share_high = (ahead.loc[spend > 0, "spend_tier"] == "high").mean()
    assert 0.05 < share_high < 0.5
    bad = tmp_path / "policy.toml"
    bad.write_text(DEFAULT_POLICY.read_text().replace('source = "last_year"',
                                                      'source = "next_year"'))
    with pytest.raises(ValueError, match=r"spend_tier\.source must be one of"):
        SegmentPolicy.load(bad)


def test_an_unknown_uplift_name_is_an_error_not_a_silent_switch(store, synthetic_data,
                                                                 tmp_path, monkeypatch):
    data, _ = synthetic_data
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    try:
        with pytest.raises(NoChampionError, match=r"no uplift model is registered as "
                                                  r"'nosuch' \(a typo\?\).*no_uplift"):
            load_champion(uplift=True, uplift_name="nosuch")
        # The default name with no uplift model registered: scoring goes on without one.
        assert load_champion(uplift=True).uplift is None
    finally:
        mlflow.set_tracking_uri(previous)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    done = CliRunner().invoke(app, ["score", "--data", str(data), "--as-of", "2025-10-01",
                                    "--out", "s.parquet", "--uplift-model-name", "typo_uplift"],
                              env={"COLUMNS": "200"})
    assert done.exit_code == 1, done.output
    assert "no uplift model is registered as 'typo_uplift'" in done.output
    assert "--no-uplift" in done.output and not (tmp_path / "s.parquet").exists()


def test_scoring_with_a_mistaken_argument_leaves_no_failed_run(store, synthetic_data, tmp_path,
                                                               monkeypatch):
    data, _ = synthetic_data
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    for mistake in (("--as-of", "2030-01-01", "--out", "s.parquet"),
                    ("--as-of", "2025-10-01", "--out", "s.csv")):
        done = CliRunner().invoke(app, ["score", "--data", str(data), "--no-uplift", *mistake],
                                  env={"COLUMNS": "200"})
        assert done.exit_code == 1, done.output
    client = mlflow.MlflowClient(store)
    scoring = client.get_experiment_by_name("scoring")
    runs = client.search_runs([scoring.experiment_id]) if scoring else []
    assert [r.info.status for r in runs if r.info.status != "FINISHED"] == []
