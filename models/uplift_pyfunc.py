"""The uplift model as an MLflow pyfunc (models-from-code).

MLflow copies this file into the logged model and runs it to get the model object; the
learners travel as the ``uplift_model`` artifact folder written by ``UpliftModel.save``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from models.uplift_model import ARTIFACT_KEY, UpliftModel


class UpliftPyfunc(mlflow.pyfunc.PythonModel):
    """Feature rows in, one ``uplift_<arm>`` column (estimated effect) per arm out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = UpliftModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context: mlflow.pyfunc.PythonModelContext,
                model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.model.predict(model_input)


mlflow.models.set_model(UpliftPyfunc())
