"""A churn model trained once per session on the synthetic base, and per-test MLflow stores."""

from __future__ import annotations

from datetime import date

import mlflow
import pytest

from training.tracking import default_tracking_uri
from training.train_churn import ChurnTrainConfig, ChurnTrainResult, train_churn

# Four monthly cutoffs; the synthetic data ends 2026-01-01, so 2025-10-01 is the last whose
# 90-day label window is over.
CUTOFFS = (date(2025, 7, 1), date(2025, 8, 1), date(2025, 9, 1), date(2025, 10, 1))


@pytest.fixture(scope="session")
def churn_config(synthetic_data) -> ChurnTrainConfig:
    folder, _ = synthetic_data
    return ChurnTrainConfig(data=folder, cutoffs=CUTOFFS, learning_rate=0.05)


@pytest.fixture(scope="session")
def trained(churn_config) -> ChurnTrainResult:
    return train_churn(churn_config)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store (artifacts beside it) for one test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous = mlflow.get_tracking_uri()
    uri = default_tracking_uri(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous)
