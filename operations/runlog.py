"""The scoring run log: what each `churn score` run said, for monitoring to check later.

Each run is an MLflow run under the ``scoring`` experiment, opened when scoring starts and
closed FINISHED (or FAILED) when it ends. It holds the as-of, the data's source and span, the
model versions (tags linking the churn and uplift versions and the churn model's training run),
where the scores went, rows, customers per segment, churn-probability quantiles and the scored
base counted into the model's reference bins (``profile.json``, for drift). A PostgreSQL
destination also gets a row in ``<table>_runs``, in the same transaction as the scores. The
scores themselves stay where they were written.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from datetime import date, timedelta
from pathlib import Path

import mlflow
import pandas as pd
import psycopg
from mlflow import MlflowClient

from models.store import EXPERIMENT_KIND, run_name
from serving.batch import (
    Destination,
    PostgresDestination,
    ScoreJobConfig,
    ScoreJobResult,
    destination_label,
    parse_postgres_url,
)
from serving.champion import LoadedModel

SCORING_EXPERIMENT = "scoring"
PROFILE_ARTIFACT = "profile.json"
QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)


RUN_LOG_OFF = "off"


def run_log_client(cfg: ScoreJobConfig) -> MlflowClient | None:
    """The client of the store the run is recorded in (``cfg.run_log``), None when off."""
    if cfg.run_log == RUN_LOG_OFF:
        return None
    return MlflowClient(cfg.run_log) if cfg.run_log else MlflowClient()


def scoring_experiment(client: MlflowClient) -> str:
    """The id of the ``scoring`` experiment in the client's store, made if missing."""
    found = client.get_experiment_by_name(SCORING_EXPERIMENT)
    if found is not None:
        return found.experiment_id
    experiment_id = client.create_experiment(SCORING_EXPERIMENT, tags={
        "mlflow.experimentKind": EXPERIMENT_KIND,
        "mlflow.note.content": "Batch scoring runs: what each `churn score` said (segments, "
                               "score quantiles, drift profile), for `churn monitor` to check "
                               "against outcomes."})
    return experiment_id


def fail_abandoned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark FAILED the scoring runs this machine left RUNNING in a process that is gone (a
    run killed before it could say so); returns their ids."""
    host, failed = socket.gethostname(), []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'",
                                  max_results=1000):
        tags = run.data.tags
        if tags.get("host") != host or not tags.get("pid", "").isdigit():
            continue
        if not process_alive(int(tags["pid"])):
            client.set_terminated(run.info.run_id, "FAILED")
            failed.append(run.info.run_id)
    return failed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def open_run(cfg: ScoreJobConfig, loaded: LoadedModel, client: MlflowClient) -> str:
    """Start the run that records this scoring (after marking runs killed earlier on this
    machine FAILED); returns its id."""
    experiment_id = scoring_experiment(client)
    tags = {"kind": "scoring", "churn_model": loaded.name, "churn_version": loaded.version,
            "churn_run_id": loaded.run_id, "as_of": cfg.as_of.isoformat(),
            "destination": destination_label(cfg.out), "model_versions": loaded.label,
            "host": socket.gethostname(), "pid": str(os.getpid()),
            "mlflow.note.content": f"Scores as of {cfg.as_of} of {cfg.data.resolve()} by "
                                   f"{loaded.label}, written to {destination_label(cfg.out)}."}
    fail_abandoned_runs(client, experiment_id)
    if loaded.uplift is not None:
        tags.update({"uplift_model": loaded.uplift.name, "uplift_version": loaded.uplift.version})
    run = client.create_run(experiment_id, run_name=run_name(
        "score", cfg.data, cfg.as_of.isoformat()), tags=tags)
    return run.info.run_id


def _segments(result: ScoreJobResult) -> dict[str, int]:
    return {str(k): int(v) for k, v in result.summary["customers"].items()}


def record_in_destination(run_id: str, cfg: ScoreJobConfig, loaded: LoadedModel,
                          destination: Destination, result: ScoreJobResult) -> None:
    """The ``<table>_runs`` row, for a PostgreSQL destination (nothing for Parquet)."""
    if not isinstance(destination, PostgresDestination):
        return
    start, end = result.data_span or (None, None)
    destination.record_run({
        "run_id": run_id, "as_of": cfg.as_of, "data_source": str(cfg.data.resolve()),
        "data_start": start, "data_end": end and end - timedelta(days=1),
        "model_versions": loaded.label, "rows": result.rows,
        "scored": result.scored,
        "segments": _segments(result),
        "churn_quantiles": {f"p{q:02d}": result.quantiles[q] for q in QUANTILES}
        if result.quantiles else None})


def close_run(run_id: str, cfg: ScoreJobConfig, loaded: LoadedModel,
              result: ScoreJobResult, client: MlflowClient) -> None:
    """Log what the run said and mark it FINISHED."""
    start, end = result.data_span or (None, None)
    params = {"as_of": cfg.as_of.isoformat(), "data_source": str(cfg.data.resolve()),
              "data_start": start.isoformat() if start else "",
              "data_end": (end - timedelta(days=1)).isoformat() if end else "",
              "horizon_days": loaded.model.label.horizon_days,
              "base_days": loaded.model.label.base_days,
              "destination": destination_label(cfg.out), "reasons": cfg.reasons}
    for key, value in params.items():
        client.log_param(run_id, key, value)
    metrics = {"rows": result.rows, "scored": result.scored, "seconds": result.seconds}
    metrics.update({f"segment_{k}": v for k, v in _segments(result).items()})
    if result.quantiles:
        metrics.update({f"churn_p{q:02d}": result.quantiles[q] for q in QUANTILES})
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    with tempfile.TemporaryDirectory(prefix="churn-scoring-run-") as tmp:
        payload = {"as_of": cfg.as_of.isoformat(), "segments": _segments(result),
                   "churn_percentiles": result.quantiles,
                   "profile": result.profile.to_dict() if result.profile else None}
        path = Path(tmp) / PROFILE_ARTIFACT
        path.write_text(json.dumps(payload))
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")


def fail_run(run_id: str, client: MlflowClient) -> None:
    """Mark a run whose scoring did not finish (nothing of it was written)."""
    try:
        client.set_terminated(run_id, "FAILED")
    except mlflow.exceptions.MlflowException:
        pass


SCORE_COLUMNS = ("customer_id", "churn_probability", "segment")


def read_scores(destination: str, as_of: date) -> pd.DataFrame | None:
    """A run's scores back from where it wrote them (id, probability, segment), or None
    when they are gone: the file was removed or a later run replaced it with another as-of."""
    if destination.startswith(("postgresql://", "postgres://")):
        dsn, table = parse_postgres_url(destination)
        try:
            with psycopg.connect(dsn, connect_timeout=10) as con:
                rows = con.execute(f"SELECT {', '.join(SCORE_COLUMNS)} FROM {table} "
                                   f"WHERE as_of = %s", (as_of,)).fetchall()
        except psycopg.Error:
            return None
        frame = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    else:
        path = Path(destination)
        if not path.is_file():
            return None
        frame = pd.read_parquet(path, columns=[*SCORE_COLUMNS, "as_of"])
        frame = frame[frame.pop("as_of") == as_of]
    if frame.empty:
        return None
    return frame.astype({"churn_probability": float})
