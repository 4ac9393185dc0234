"""Load the registered churn model that holds the ``champion`` alias, as a plain Booster."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from training.churn_model import ARTIFACT_KEY, ChurnModel
from training.promote import CHAMPION
from training.tracking import VALIDATION_ARTIFACT


class NoChampionError(LookupError):
    """The registry has no champion to score with."""


@dataclass(frozen=True)
class LoadedModel:
    """A churn model with where it came from in the registry."""

    model: ChurnModel
    name: str
    version: str
    run_id: str

    @property
    def label(self) -> str:
        return f"{self.name}:v{self.version}"

    def validation_rows(self) -> pd.DataFrame:
        """The validation rows (features, label, probability) its training run logged."""
        with tempfile.TemporaryDirectory(prefix="churn-validation-") as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=self.run_id, artifact_path=VALIDATION_ARTIFACT, dst_path=tmp)
            return pd.read_parquet(path)


def load_champion(name: str = "churn") -> LoadedModel:
    """The ``champion`` version of ``name`` from the MLflow registry in use."""
    try:
        version = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise NoChampionError(
            f"no '{name}' model holds the '{CHAMPION}' alias in {mlflow.get_tracking_uri()}; "
            f"train one with `churn train {name}` and promote it with `churn promote {name}`"
        ) from None
    with tempfile.TemporaryDirectory(prefix="churn-champion-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}", dst_path=tmp)
        model = ChurnModel.load(Path(local) / "artifacts" / ARTIFACT_KEY)
    return LoadedModel(model, name, str(version.version), version.run_id)
