"""The value model as an MLflow pyfunc (models-from-code).

MLflow copies this file into the logged model and runs it to get the model object; the
boosters travel as the ``value_model`` artifact folder written by ``ValueModel.save``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from models.value_model import ARTIFACT_KEY, ValueModel


class ValuePyfunc(mlflow.pyfunc.PythonModel):
    """Feature rows in; ``predicted_spend`` and ``predicted_orders`` over the horizon out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = ValueModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context: mlflow.pyfunc.PythonModelContext,
                model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return pd.DataFrame({"predicted_spend": self.model.predict_spend(model_input),
                             "predicted_orders": self.model.predict_orders(model_input)},
                            index=model_input.index)


mlflow.models.set_model(ValuePyfunc())
