"""`churn train|promote|backtest propensity|value` and scoring with them, on the generator's
data, as a user runs them: no traceback, and the scores gain the forecast columns."""

from __future__ import annotations

import re

import pandas as pd
from typer.testing import CliRunner

from churn.cli import app
from tests.conftest import migrated_store


def churn(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"churn {' '.join(args)} raised {result.exception!r}:\n{result.output}")
    assert "Traceback" not in result.output
    return result


def test_propensity_and_value_train_promote_backtest_and_score(synthetic_data, tmp_path,
                                                                monkeypatch):
    data, _ = synthetic_data
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    migrated_store(tmp_path)
    steps = [("train", "churn", "--data", str(data), "--cutoffs", "3", "--max-trees", "80"),
             ("promote", "churn", "--min-gain", "-1"),
             ("--verbose", "train", "propensity", "--data", str(data), "--cutoffs", "3",
              "--max-trees", "80"),
             ("promote", "propensity"),
             ("train", "value", "--data", str(data), "--cutoffs", "3", "--horizon-days", "90",
              "--max-trees", "200"),
             ("promote", "value")]
    outputs = {}
    for step in steps:
        done = churn(*step)
        assert done.exit_code == 0, (step, done.output)
        outputs[step[:2]] = done.output
    trained = outputs[("--verbose", "train")]
    assert "Propensity (an order within 30 days) vs baselines" in trained
    assert "BG/NBD P(any order)" in trained
    # --verbose: every step of the training as a line.
    assert "LightGBM with early stopping on the validation cutoff" in trained
    assert re.search(r"features and labels at \d{4}-\d{2}-01", trained)
    assert "kept" in outputs[("train", "value")], outputs[("train", "value")]
    assert "BG/NBD x Gamma-Gamma" in outputs[("train", "value")]
    assert "is the first champion" in outputs[("promote", "value")]

    backtest = churn("backtest", "propensity", "--data", str(data), "--origins", "2025-10-01",
                     "--cutoffs", "2")
    # The table names the purchase baselines (its width follows the terminal).
    assert backtest.exit_code == 0 and "BG/NBD" in backtest.output, backtest.output
    backtest = churn("backtest", "value", "--data", str(data), "--origins", "2025-10-01",
                     "--cutoffs", "2", "--horizon-days", "90")
    assert backtest.exit_code == 0 and "Gini" in backtest.output, backtest.output

    scored = churn("score", "--data", str(data), "--as-of", "2026-01-01", "--out", "s.parquet",
                   "--no-reasons")
    assert scored.exit_code == 0, scored.output
    scores = pd.read_parquet("s.parquet")
    assert {"purchase_probability_30d", "predicted_spend_90d", "predicted_orders_90d",
            "p_alive", "next_order_expected_by"} <= set(scores.columns)
    assert set(scores["model_versions"]) == {"churn:v1,propensity:v1,value:v1"}


def test_a_value_horizon_longer_than_the_data_allows_is_one_line(synthetic_data, tmp_path,
                                                                  monkeypatch):
    data, _ = synthetic_data
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    migrated_store(tmp_path)
    done = churn("train", "value", "--data", str(data))  # 365 days on three years of data
    assert done.exit_code == 1
    assert "error: no training cutoff fits" in done.output
    assert "--horizon-days" in done.output
