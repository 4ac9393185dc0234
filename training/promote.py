"""Move a registered model's ``champion`` alias only when the candidate is better.

The two are compared on the candidate's validation rows: ROC AUC for ``churn``, mean Qini
over arms for ``uplift``. The candidate's scores there are its held-out ones (logged by its
run: out-of-time for churn, out-of-fold for uplift). The champion's are its own held-out
scores when its run validated on the very same rows (same digest); otherwise the champion
model scores those rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from training.dataset import LABEL
from training.metrics import score_metrics
from training.tracking import VALIDATION_ARTIFACT
from training.uplift_metrics import qini_coefficient

CHAMPION = "champion"


class PromotionError(ValueError):
    """The registry does not hold what the promotion needs."""


@dataclass(frozen=True)
class Promotion:
    """What the promotion decided and why."""

    name: str
    candidate: str
    champion: str | None
    candidate_score: float
    champion_score: float | None
    promoted: bool
    metric: str = "ROC AUC"

    def message(self) -> str:
        if self.champion is None:
            return (f"{self.name} v{self.candidate} is the first champion "
                    f"(validation {self.metric} {self.candidate_score:.4f})")
        if self.champion == self.candidate:
            return f"{self.name} v{self.candidate} is already the champion"
        assert self.champion_score is not None
        diff = self.candidate_score - self.champion_score
        compared = (f"{self.metric} {self.candidate_score:.4f} vs {self.champion_score:.4f} "
                    f"({diff:+.4f}) on the candidate's validation rows")
        if self.promoted:
            return (f"{self.name} v{self.candidate} beats v{self.champion}: {compared}; "
                    f"champion -> v{self.candidate}")
        return (f"{self.name} v{self.candidate} does not beat v{self.champion}: {compared}; "
                f"champion stays v{self.champion}")


def _candidate(client: MlflowClient, name: str, run_id: str | None) -> ModelVersion:
    query = f"name = '{name}'" + (f" AND run_id = '{run_id}'" if run_id else "")
    versions = client.search_model_versions(query)
    if not versions:
        where = f" from run {run_id}" if run_id else ""
        raise PromotionError(f"no registered '{name}' model{where}; train one first")
    return max(versions, key=lambda v: int(v.version))


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _validation_rows(run_id: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory(prefix="churn-promote-") as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=VALIDATION_ARTIFACT,
                                                   dst_path=tmp)
        return pd.read_parquet(path)


@dataclass(frozen=True)
class Yardstick:
    """How one kind of model is judged on validation rows."""

    metric: str
    score_column: str
    measure: Callable[[pd.DataFrame, np.ndarray], float]
    model_scores: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]


def _churn_auc(rows: pd.DataFrame, scores: np.ndarray) -> float:
    return score_metrics(rows[LABEL].to_numpy(), scores, True).roc_auc


def _churn_model_scores(rows: pd.DataFrame, predicted: pd.DataFrame) -> np.ndarray:
    return predicted["churn_probability"].to_numpy()


def _mean_qini(rows: pd.DataFrame, scores: np.ndarray) -> float:
    values = []
    for _, part in rows.assign(_score=scores).groupby("arm"):
        values.append(qini_coefficient(part["spend"].to_numpy(float), part["treated"].to_numpy(),
                                       part["_score"].to_numpy(float)))
    return float(np.mean(values))


def _uplift_model_scores(rows: pd.DataFrame, predicted: pd.DataFrame) -> np.ndarray:
    out = np.empty(len(rows))
    for arm, index in rows.groupby("arm").indices.items():
        column = f"uplift_{arm}"
        if column not in predicted.columns:
            raise PromotionError(f"the champion has no arm {arm!r}; it cannot be compared "
                                 f"on this experiment")
        out[index] = predicted[column].to_numpy()[index]
    return out


YARDSTICKS = {
    "churn": Yardstick("ROC AUC", "churn_probability", _churn_auc, _churn_model_scores),
    "uplift": Yardstick("Qini", "uplift_score", _mean_qini, _uplift_model_scores),
}


def yardstick(name: str) -> Yardstick:
    """Uplift models (registered under a name containing ``uplift``) by Qini, others by AUC."""
    return YARDSTICKS["uplift" if "uplift" in name else "churn"]


def _champion_scores(client: MlflowClient, champion: ModelVersion, rows: pd.DataFrame,
                     digest: str | None, judge: Yardstick) -> np.ndarray:
    if digest and client.get_run(champion.run_id).data.tags.get("validation_digest") == digest:
        return _validation_rows(champion.run_id)[judge.score_column].to_numpy()
    model = mlflow.pyfunc.load_model(f"models:/{champion.name}/{champion.version}")
    columns = model.metadata.get_input_schema().input_names()
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise PromotionError(f"the champion reads columns these validation rows lack "
                             f"({', '.join(missing[:5])}); it cannot be compared on them")
    return judge.model_scores(rows, model.predict(rows[columns]))


def promote(name: str, run_id: str | None = None) -> Promotion:
    """Make the candidate (the newest version, or the one from ``run_id``) champion if better."""
    client = MlflowClient()
    judge = yardstick(name)
    candidate = _candidate(client, name, run_id)
    champion = _champion(client, name)
    rows = _validation_rows(candidate.run_id)
    candidate_score = judge.measure(rows, rows[judge.score_column].to_numpy())
    if champion is None or str(champion.version) == str(candidate.version):
        if champion is None:
            client.set_registered_model_alias(name, CHAMPION, str(candidate.version))
        return Promotion(name, str(candidate.version), champion and str(champion.version),
                         candidate_score, candidate_score if champion else None,
                         champion is None, judge.metric)
    digest = client.get_run(candidate.run_id).data.tags.get("validation_digest")
    champion_score = judge.measure(rows, _champion_scores(client, champion, rows, digest, judge))
    better = candidate_score > champion_score
    if better:
        client.set_registered_model_alias(name, CHAMPION, str(candidate.version))
    client.set_model_version_tag(name, str(candidate.version), "promotion",
                                 f"{judge.metric} {candidate_score:.4f} vs v{champion.version} "
                                 f"{champion_score:.4f}")
    return Promotion(name, str(candidate.version), str(champion.version), candidate_score,
                     champion_score, better, judge.metric)
