"""The churn model as an MLflow pyfunc (models-from-code), for `mlflow models serve` and batch.

MLflow copies this file into the logged model and runs it to get the model object; the
weights travel as the ``churn_model`` artifact folder written by ``ChurnModel.save``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from models.churn_model import ARTIFACT_KEY, ChurnModel


class ChurnPyfunc(mlflow.pyfunc.PythonModel):
    """Feature rows in, calibrated ``churn_probability`` out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = ChurnModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context: mlflow.pyfunc.PythonModelContext,
                model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return pd.DataFrame({"churn_probability": self.model.predict_proba(model_input)},
                            index=model_input.index)


mlflow.models.set_model(ChurnPyfunc())
