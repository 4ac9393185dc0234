"""The rolling-origin backtest and the base boundary, on the real CDNOW log and synthetic data."""

from __future__ import annotations

import dataclasses
from datetime import date

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from serving.batch import ScoreJobConfig, run_score
from serving.champion import load_champion
from tests.conftest import shared_file
from training.backtest import run_backtest
from training.config import ChurnTrainConfig
from training.cutoffs import CutoffError
from training.promote import promote
from training.tracking import log_backtest_run, log_churn_run
from training.train_churn import train_churn

CDNOW_ORIGINS = (date(1997, 10, 1), date(1998, 1, 1), date(1998, 4, 1))


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory):
    """A data folder holding only CDNOW's transactions.csv: the commonest real input."""
    folder = tmp_path_factory.mktemp("cdnow")
    (folder / "transactions.csv").symlink_to(shared_file("cdnow/transactions.csv"))
    return folder


def test_cdnow_backtest_measures_every_scorer_on_the_same_customers(cdnow, mlflow_store):
    cfg = ChurnTrainConfig(data=cdnow)
    result = run_backtest(cfg, CDNOW_ORIGINS)
    table = result.per_origin
    assert list(table["origin"].unique()) == list(CDNOW_ORIGINS)
    for origin, part in table.groupby("origin"):
        assert list(part["scorer"]) == ["model", "recency_rule", "bgnbd_p_alive",
                                        "bgnbd_expected_purchases"]
        assert part["customers"].nunique() == 1
        model = part.set_index("scorer")["roc_auc"]
        # On every origin the model ranks better than the recency rule it must beat.
        assert model["model"] > model["recency_rule"], origin
    # The base at 1998-04-01 is every customer with an order in the year before.
    assert table.loc[table["origin"] == date(1998, 4, 1), "customers"].iloc[0] == 9_526
    # The earliest origin's default training months before the first order were left out.
    assert any("left out training cutoffs" in n for n in result.notes)
    summary = result.summary()
    assert summary.loc["model", ("mean", "roc_auc")] == pytest.approx(
        table.query("scorer == 'model'")["roc_auc"].mean())

    logged = log_backtest_run(cfg, result)
    run = MlflowClient().get_run(logged.run_id)
    assert run.data.params["origins"] == "1997-10-01,1998-01-01,1998-04-01"
    origins = "1997-10-01,1998-01-01,1998-04-01"
    assert run.info.run_name == f"backtest-{cfg.data.resolve().name}-{origins}"
    experiment = MlflowClient().get_experiment(logged.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.data.metrics["mean_model_roc_auc"] == pytest.approx(
        summary.loc["model", ("mean", "roc_auc")])
    history = MlflowClient().get_metric_history(logged.run_id, "model_roc_auc")
    assert [m.step for m in history] == [0, 1, 2]
    artifacts = {a.path for a in MlflowClient().list_artifacts(logged.run_id, "plots")}
    assert artifacts == {"plots/backtest.png"}
    csv = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=logged.run_id,
                                                          artifact_path="backtest.csv"))
    assert len(csv) == 12


def test_cdnow_every_customer_in_the_base_gets_a_probability(cdnow, mlflow_store, tmp_path):
    """Trained with the defaults (test cutoff 1998-04-01), scored as of that day: the base
    the label counts (an order in [T - 365 d, T)) is exactly who gets a probability."""
    cfg = ChurnTrainConfig(data=cdnow)
    trained = train_churn(cfg)
    assert trained.plan.test == date(1998, 4, 1)
    assert trained.plan.validation == date(1998, 1, 1)
    assert max(trained.plan.train) == date(1997, 10, 1)
    log_churn_run(cfg, trained)
    promote("churn")
    out = tmp_path / "scores.parquet"
    run_score(ScoreJobConfig(data=cdnow, as_of=date(1998, 4, 1), out=str(out)),
              load_champion("churn"))
    scores = pd.read_parquet(out).set_index("customer_id")
    probability = scores["churn_probability"]
    assert set(probability.dropna().index) == set(trained.test["customer_id"])
    assert probability.notna().sum() == 9_526
    # Everyone else has ordered, but not within the base window: lapsed.
    assert (scores.loc[probability.isna(), "segment"] == "lapsed").all()


def test_synthetic_backtest_and_its_refusals(churn_config):
    result = run_backtest(churn_config, (date(2025, 10, 1), date(2025, 7, 1)))
    assert result.origins == [date(2025, 7, 1), date(2025, 10, 1)]
    model = result.per_origin.query("scorer == 'model'").set_index("origin")["roc_auc"]
    recency = result.per_origin.query("scorer == 'recency_rule'").set_index("origin")["roc_auc"]
    assert (model > recency + 0.02).all()
    with pytest.raises(CutoffError, match="places the cutoffs itself"):
        run_backtest(dataclasses.replace(churn_config, test_cutoff=date(2025, 7, 1)),
                     (date(2025, 10, 1),))
    with pytest.raises(CutoffError, match="give at least one date"):
        run_backtest(churn_config, ())
