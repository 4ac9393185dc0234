"""Move a registered model's ``champion`` alias only when the candidate wins a fair comparison.

Fair means both models are judged on the same rows, rows neither was fitted on:

- ``churn``: the candidate's test cutoff (logged by its run). The champion scores those rows
  itself, which is allowed only when everything it was fitted on ended by that cutoff (its
  ``fitted_through``) and it predicts the same label (base and horizon); otherwise the
  promotion is refused with what to do instead. A first champion must beat the recency rule
  on its own test cutoff by ``min_gain`` in ROC AUC.
- ``uplift``: the nested out-of-fold Qini (the learner chosen inside each training fold) that
  each run logs. On the same experiment both runs' nested scores are compared; on another
  experiment the champion scores the candidate's rows, if it never saw any of them. A first
  champion must beat random targeting (Qini above 0).
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date, timedelta

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from features.errors import ChurnError, setting
from features.labels import LABEL
from models.registry import CHAMPION, TEST_ARTIFACT, VALIDATION_ARTIFACT
from training.metrics import score_metrics
from training.uplift_metrics import qini_coefficient
from training.value_metrics import normalised_gini


class PromotionError(ChurnError, ValueError):
    """The registry does not hold what the promotion needs."""


MIN_GAIN_OVER_RECENCY = 0.0


@dataclass(frozen=True)
class Promotion:
    """What the promotion decided and why."""

    name: str
    candidate: str
    champion: str | None
    candidate_score: float
    champion_score: float | None
    promoted: bool
    metric: str
    rows: str
    bar: str = ""
    # How the gain compares with the noise of the rows (a paired bootstrap), when it was asked.
    noise: str = ""

    def message(self) -> str:
        if self.champion is None:
            return (f"{self.name} v{self.candidate} is the first champion: {self.metric} "
                    f"{self.candidate_score:.4f} on {self.rows}, against {self.bar}")
        if self.champion == self.candidate:
            return f"{self.name} v{self.candidate} is already the champion"
        assert self.champion_score is not None
        diff = self.candidate_score - self.champion_score
        compared = (f"{self.metric} {self.candidate_score:.4f} vs {self.champion_score:.4f} "
                    f"({diff:+.4f}) on {self.rows}{self.noise}")
        if self.promoted:
            return (f"{self.name} v{self.candidate} beats v{self.champion}: {compared}; "
                    f"champion -> v{self.candidate}")
        return (f"{self.name} v{self.candidate} does not beat v{self.champion}: {compared}; "
                f"champion stays v{self.champion}")


def _candidate(client: MlflowClient, name: str, run_id: str | None) -> ModelVersion:
    """The newest version of ``name`` (from ``run_id``, if given) whose run finished: a run
    killed after registering its model left it without the tags and records it is judged
    by."""
    query = f"name = '{name}'" + (f" AND run_id = '{run_id}'" if run_id else "")
    versions = client.search_model_versions(query)
    where = f" from run {run_id}" if run_id else ""
    if not versions:
        raise PromotionError(f"no registered '{name}' model{where}; train one first")
    finished = [v for v in versions if _run_finished(client, v.run_id)]
    if not finished:
        newest = max(versions, key=lambda v: int(v.version))
        raise PromotionError(f"'{name}' v{newest.version}{where} comes from a run that did not "
                             f"finish (killed or failed while logging); train again")
    return max(finished, key=lambda v: int(v.version))


def _run_finished(client: MlflowClient, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        return client.get_run(run_id).info.status == "FINISHED"
    except MlflowException:
        return False


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _logged_rows(run_id: str, artifact: str, what: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory(prefix="churn-promote-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                       dst_path=tmp)
        except (MlflowException, OSError):
            raise PromotionError(
                f"run {run_id} logged no {what} ({artifact}); it was trained by an earlier "
                f"version of this tool: train it again to compare it fairly") from None
        return pd.read_parquet(path)


def _model_predictions(version: ModelVersion, rows: pd.DataFrame) -> pd.DataFrame:
    model = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    columns = model.metadata.get_input_schema().input_names()
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise PromotionError(f"v{version.version} reads columns the candidate's rows lack "
                             f"({', '.join(missing[:5])}); it cannot be compared on them")
    return model.predict(rows[columns])


def _test_rows(client: MlflowClient, candidate: ModelVersion) -> tuple[pd.DataFrame, str]:
    """The rows of the candidate's test cutoff, which it was not fitted on, and their name."""
    rows = _logged_rows(candidate.run_id, TEST_ARTIFACT, "test rows")
    cutoff = _run_params(client, candidate)["test_cutoff"]
    return rows, f"the candidate's test cutoff {cutoff} ({len(rows):,} customers)"


class Judge(ABC):
    """How one kind of model is compared: on which rows, by what, against which bar.

    ``champion_rows_``, set by ``champion_score`` when the champion scored the candidate's
    own rows, lets the comparison be paired (``paired_gain``)."""

    metric: str
    bar_name: str
    champion_rows_: np.ndarray | None = None

    @abstractmethod
    def rows(self, client: MlflowClient, candidate: ModelVersion) -> tuple[pd.DataFrame, str]:
        """The candidate's held-out rows, and how to name them in messages."""

    @abstractmethod
    def score(self, rows: pd.DataFrame, scores: np.ndarray) -> float:
        """The yardstick of ``scores`` on ``rows`` (higher is better)."""

    @abstractmethod
    def candidate_scores(self, rows: pd.DataFrame) -> np.ndarray:
        """The candidate's own held-out scores on its rows."""

    @abstractmethod
    def bar(self, rows: pd.DataFrame) -> float:
        """What a first champion must beat on its rows."""

    @abstractmethod
    def champion_score(self, client: MlflowClient, champion: ModelVersion,
                       candidate: ModelVersion, rows: pd.DataFrame) -> float:
        """The champion's yardstick on rows it was not fitted on, or PromotionError."""


def _run_params(client: MlflowClient, version: ModelVersion) -> dict[str, str]:
    return client.get_run(version.run_id).data.params


def fitted_through(params: dict[str, str]) -> date | None:
    """The first day of data a churn run's registered model never saw (None if unknown)."""
    if "fitted_through" in params:
        return date.fromisoformat(params["fitted_through"])
    if "validation_cutoff" in params and "horizon_days" in params:
        # Earlier runs refitted on every cutoff, the validation cutoff included.
        return (date.fromisoformat(params["validation_cutoff"])
                + timedelta(days=int(params["horizon_days"])))
    return None


def check_unseen(champion: ModelVersion, own: dict[str, str], theirs: dict[str, str]) -> None:
    """Refuse when the champion was fitted on data after the candidate's test cutoff: it would
    be judged on customers whose outcomes it learned from."""
    seen = fitted_through(theirs)
    test = date.fromisoformat(own["test_cutoff"])
    if seen is None or seen > test:
        when = seen.isoformat() if seen else "an unrecorded date"
        raise PromotionError(
            f"v{champion.version} was fitted on data up to {when}, after the candidate's test "
            f"cutoff {test}: it would be judged on customers whose outcomes it learned from. "
            f"For a fair comparison train the candidate with {setting('test_cutoff')} on or "
            f"after {when}, or retrain the champion's configuration with "
            f"{setting('test_cutoff')} {test}")


class ChurnJudge(Judge):
    """ROC AUC on the candidate's test cutoff."""

    metric = "ROC AUC"
    bar_name = "the recency rule"

    def rows(self, client, candidate):
        return _test_rows(client, candidate)

    def score(self, rows, scores):
        return score_metrics(rows[LABEL].to_numpy(), scores, True).roc_auc

    def candidate_scores(self, rows):
        return rows["churn_probability"].to_numpy()

    def bar(self, rows):
        return score_metrics(rows[LABEL].to_numpy(), rows["recency_days"].to_numpy(),
                             False).roc_auc

    def champion_score(self, client, champion, candidate, rows):
        own, theirs = _run_params(client, candidate), _run_params(client, champion)
        for label in ("horizon_days", "base_days"):
            if own.get(label) != theirs.get(label):
                raise PromotionError(
                    f"v{champion.version} predicts another label ({label} {theirs.get(label)} "
                    f"against the candidate's {own.get(label)}), so the two cannot be judged on "
                    f"the same rows; train the candidate with the champion's "
                    f"{setting('horizon_days')} and "
                    f"{setting('base_days')}, or register it under another model name")
        check_unseen(champion, own, theirs)
        self.champion_rows_ = _model_predictions(champion, rows)["churn_probability"].to_numpy()
        return self.score(rows, self.champion_rows_)


def mean_qini(rows: pd.DataFrame, scores: np.ndarray) -> float:
    """Qini of ``scores`` on spend (the trained outcome), averaged over arms."""
    values = []
    for _, part in rows.assign(_score=scores).groupby("arm"):
        values.append(qini_coefficient(part["spend"].to_numpy(float), part["treated"].to_numpy(),
                                       part["_score"].to_numpy(float)))
    return float(np.mean(values))


class UpliftJudge(Judge):
    """Mean Qini over arms of nested out-of-fold scores."""

    metric = "nested out-of-fold Qini"
    bar_name = "random targeting"

    def rows(self, client, candidate):
        rows = _logged_rows(candidate.run_id, VALIDATION_ARTIFACT, "nested out-of-fold rows")
        if client.get_run(candidate.run_id).data.tags.get("evaluation") != "nested":
            raise PromotionError(
                f"run {candidate.run_id} logged no nested out-of-fold scores; it was trained by "
                f"an earlier version of this tool: train it again to compare it fairly")
        return rows, f"the candidate's experiment ({len(rows):,} rows, nested out of fold)"

    def score(self, rows, scores):
        return mean_qini(rows, scores)

    def candidate_scores(self, rows):
        return rows["uplift_score"].to_numpy()

    def bar(self, rows):
        return 0.0

    def champion_score(self, client, champion, candidate, rows):
        tags = client.get_run(champion.run_id).data.tags
        if tags.get("experiment_digest") == client.get_run(candidate.run_id).data.tags.get(
                "experiment_digest"):
            theirs, _ = self.rows(client, champion)
            return self.score(theirs, theirs["uplift_score"].to_numpy())
        seen = _logged_rows(champion.run_id, VALIDATION_ARTIFACT, "out-of-fold rows")
        shared = set(seen["id"].astype(str)) & set(rows["id"].astype(str))
        if shared:
            raise PromotionError(
                f"v{champion.version} was fitted on another version of this experiment that "
                f"shares {len(shared):,} rows with the candidate's (e.g. {sorted(shared)[0]}), so "
                f"it cannot be judged on them; retrain the champion's configuration on the "
                f"candidate's experiment and promote the better one")
        predicted = _model_predictions(champion, rows)
        out = np.empty(len(rows))
        for arm, index in rows.groupby("arm").indices.items():
            column = f"uplift_{arm}"
            if column not in predicted.columns:
                raise PromotionError(f"v{champion.version} has no arm {arm!r}; it cannot be "
                                     f"compared on this experiment")
            out[index] = predicted[column].to_numpy()[index]
        return self.score(rows, out)


class ValueJudge(Judge):
    """Normalised Gini of forecast spend on the candidate's test cutoff."""

    metric = "normalised Gini"
    bar_name = "last period's spend repeated"

    def rows(self, client, candidate):
        return _test_rows(client, candidate)

    def score(self, rows, scores):
        return normalised_gini(rows["future_spend"].to_numpy(), np.asarray(scores, float))

    def candidate_scores(self, rows):
        return rows["model_spend"].to_numpy()

    def bar(self, rows):
        return self.score(rows, rows["past_spend"].to_numpy())

    def champion_score(self, client, champion, candidate, rows):
        own, theirs = _run_params(client, candidate), _run_params(client, champion)
        if own.get("horizon_days") != theirs.get("horizon_days"):
            raise PromotionError(
                f"v{champion.version} forecasts {theirs.get('horizon_days')} days, the candidate "
                f"{own.get('horizon_days')}: train the candidate with the champion's "
                f"{setting('horizon_days')}, or register it under another model name")
        check_unseen(champion, own, theirs)
        self.champion_rows_ = _model_predictions(champion, rows)["predicted_spend"].to_numpy()
        return self.score(rows, self.champion_rows_)


BOOTSTRAP_RESAMPLES = 200
CONFIDENCE = 0.95


def paired_gain(judge: Judge, rows: pd.DataFrame, candidate: np.ndarray, champion: np.ndarray,
                seed: int = 0) -> tuple[float, float]:
    """The candidate's gain over the champion on the same rows, and the lower bound of its
    one-sided 95% interval from a paired bootstrap (rows resampled, both models scored on
    each resample): a gain the noise of these rows could produce has a bound at or below 0."""
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        pick = rng.integers(0, len(rows), len(rows))
        sample = rows.iloc[pick]
        gains.append(judge.score(sample, candidate[pick]) - judge.score(sample, champion[pick]))
    gain = judge.score(rows, candidate) - judge.score(rows, champion)
    return gain, float(np.quantile(gains, 1 - CONFIDENCE))


JUDGES = {"churn": ChurnJudge, "propensity": ChurnJudge, "uplift": UpliftJudge,
          "value": ValueJudge}


def promote(name: str, run_id: str | None = None,
            min_gain: float = MIN_GAIN_OVER_RECENCY, kind: str | None = None) -> Promotion:
    """Make the candidate (the newest version, or the one from ``run_id``) champion if it wins.

    ``kind`` is ``churn``, ``propensity``, ``uplift`` or ``value`` (default: the name's). A first
    champion must beat the bar (the recency rule for churn, by ``min_gain`` in ROC AUC;
    random targeting for uplift) on its own held-out rows.
    """
    client = MlflowClient()
    kind = kind or next((k for k in JUDGES if k in name), "churn")
    if kind not in JUDGES:
        raise PromotionError(f"unknown kind of model {kind!r}: use one of {', '.join(JUDGES)}")
    judge = JUDGES[kind]()
    candidate = _candidate(client, name, run_id)
    champion = _champion(client, name)
    rows, described = judge.rows(client, candidate)
    candidate_score = judge.score(rows, judge.candidate_scores(rows))
    if champion is not None and str(champion.version) == str(candidate.version):
        return Promotion(name, str(candidate.version), str(champion.version), candidate_score,
                         candidate_score, False, judge.metric, described)
    if champion is None:
        bar = judge.bar(rows)
        margin = min_gain if isinstance(judge, ChurnJudge) else 0.0
        if not candidate_score > bar + margin:
            raise PromotionError(
                f"{name} v{candidate.version} does not beat {judge.bar_name} on {described}: "
                f"{judge.metric} {candidate_score:.4f} against {bar:.4f}, short by "
                f"{bar + margin - candidate_score:.4f}"
                + (f" (the margin asked is {margin:.4f})" if margin else "")
                + "; it is not made champion")
        client.set_registered_model_alias(name, CHAMPION, str(candidate.version))
        return Promotion(name, str(candidate.version), None, candidate_score, None, True,
                         judge.metric, described, f"{judge.bar_name} {bar:.4f}")
    champion_score = judge.champion_score(client, champion, candidate, rows)
    noise = ""
    if judge.champion_rows_ is not None:
        _, bound = paired_gain(judge, rows, judge.candidate_scores(rows), judge.champion_rows_)
        better = candidate_score > champion_score and bound > 0
        noise = (f"; the gain's {CONFIDENCE:.0%} paired bootstrap lower bound is {bound:+.4f}"
                 + ("" if better or candidate_score <= champion_score
                    else ", within the noise of these rows"))
    else:
        better = candidate_score > champion_score
    if better:
        client.set_registered_model_alias(name, CHAMPION, str(candidate.version))
    client.set_model_version_tag(name, str(candidate.version), "promotion",
                                 f"{judge.metric} {candidate_score:.4f} vs v{champion.version} "
                                 f"{champion_score:.4f} on {described}{noise}")
    return Promotion(name, str(candidate.version), str(champion.version), candidate_score,
                     champion_score, better, judge.metric, described, noise=noise)
