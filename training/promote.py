"""Move a registered model's ``champion`` alias only when the candidate is better.

The two are compared on the candidate's validation rows. The candidate's scores there are
its out-of-time ones (logged by its run, from the model fitted before the validation
cutoff). The champion's are its own out-of-time scores when its run validated on the very
same rows (same digest); otherwise the champion model scores those rows.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from features.registry import feature_names
from training.dataset import LABEL
from training.metrics import score_metrics
from training.tracking import VALIDATION_ARTIFACT

CHAMPION = "champion"


class PromotionError(ValueError):
    """The registry does not hold what the promotion needs."""


@dataclass(frozen=True)
class Promotion:
    """What the promotion decided and why."""

    name: str
    candidate: str
    champion: str | None
    candidate_auc: float
    champion_auc: float | None
    promoted: bool

    def message(self) -> str:
        if self.champion is None:
            return (f"{self.name} v{self.candidate} is the first champion "
                    f"(validation ROC AUC {self.candidate_auc:.4f})")
        if self.champion == self.candidate:
            return f"{self.name} v{self.candidate} is already the champion"
        assert self.champion_auc is not None
        diff = self.candidate_auc - self.champion_auc
        compared = (f"ROC AUC {self.candidate_auc:.4f} vs {self.champion_auc:.4f} ({diff:+.4f}) "
                    f"on the candidate's validation rows")
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


def _champion_scores(client: MlflowClient, champion: ModelVersion,
                     rows: pd.DataFrame, digest: str | None) -> pd.Series:
    if digest and client.get_run(champion.run_id).data.tags.get("validation_digest") == digest:
        return _validation_rows(champion.run_id)["churn_probability"]
    model = mlflow.pyfunc.load_model(f"models:/{champion.name}/{champion.version}")
    return model.predict(rows[feature_names()])["churn_probability"]


def promote(name: str, run_id: str | None = None) -> Promotion:
    """Make the candidate (the newest version, or the one from ``run_id``) champion if better."""
    client = MlflowClient()
    candidate = _candidate(client, name, run_id)
    champion = _champion(client, name)
    rows = _validation_rows(candidate.run_id)
    y = rows[LABEL].to_numpy()
    candidate_auc = score_metrics(y, rows["churn_probability"].to_numpy(), True).roc_auc
    if champion is None or str(champion.version) == str(candidate.version):
        if champion is None:
            client.set_registered_model_alias(name, CHAMPION, str(candidate.version))
        return Promotion(name, str(candidate.version), champion and str(champion.version),
                         candidate_auc, candidate_auc if champion else None, champion is None)
    digest = client.get_run(candidate.run_id).data.tags.get("validation_digest")
    champion_auc = score_metrics(
        y, _champion_scores(client, champion, rows, digest).to_numpy(), True).roc_auc
    better = candidate_auc > champion_auc
    if better:
        client.set_registered_model_alias(name, CHAMPION, str(candidate.version))
    client.set_model_version_tag(name, str(candidate.version), "promotion",
                                 f"roc_auc {candidate_auc:.4f} vs v{champion.version} "
                                 f"{champion_auc:.4f}")
    return Promotion(name, str(candidate.version), str(champion.version), candidate_auc,
                     champion_auc, better)
