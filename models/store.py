"""The MLflow store: where it is, whether it can be used, and how runs are named and started.

Shared by every job that records a run (training, scoring, monitoring, campaigns).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
from mlflow import MlflowClient

from features.errors import ChurnError


class StoreError(ChurnError, RuntimeError):
    """The MLflow store cannot be used: missing, unreadable or unreachable."""


def check_store(uri: str, read_only: bool = False, timeout: float = 5.0,
                writes: bool | None = None) -> None:
    """Fail fast, naming the store and the cause.

    A SQLite or folder store must be readable (and, for ``read_only`` use, exist: reading
    never creates a store) and, when the command ``writes`` (by default: when not
    ``read_only``), writable. A tracking server must answer both its ``/health`` and its API
    within ``timeout`` seconds each, without a server error.
    """
    writes = not read_only if writes is None else writes
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        _check_server(uri, timeout)
        return
    if parts.scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            if read_only:
                raise StoreError(f"no MLflow store at {path}: run from the folder you trained "
                                 f"in, or set MLFLOW_TRACKING_URI to its store")
            _check_writable(path.parent, uri, writes)
            return
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as err:
            raise StoreError(f"the MLflow store {path} cannot be read: {err}") from None
        _check_writable(path, uri, writes)
        _check_writable(path.parent, uri, writes)  # SQLite writes its journal beside it
    elif parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme else uri)
        if read_only and not path.is_dir():
            raise StoreError(f"no MLflow store at {path}: set MLFLOW_TRACKING_URI to an "
                             f"existing store")
        _check_writable(path if path.exists() else path.parent, uri, writes)


class ReadOnlyStoreError(StoreError):
    """The store can be read but this command must write to it."""


def _check_writable(path: Path, uri: str, writes: bool) -> None:
    if writes and path.exists() and not os.access(path, os.W_OK):
        what = "folder" if path.is_dir() else "file"
        raise ReadOnlyStoreError(
            f"the MLflow store {uri} is read-only (this user cannot write the {what} {path}), "
            f"and this command writes to it: use a writable store (MLFLOW_TRACKING_URI)")


def _check_server(uri: str, timeout: float) -> None:
    """``/health`` and one cheap API call, each answered within ``timeout`` seconds with no
    server error: a proxy can answer ``/health`` for a server whose API is down."""
    base = uri.rstrip("/")
    for what, url in (("/health", f"{base}/health"),
                      ("its API", f"{base}/api/2.0/mlflow/experiments/search?max_results=1")):
        try:
            with urllib.request.urlopen(url, timeout=timeout):
                pass
        except urllib.error.HTTPError as err:
            # /health must answer 200; the API may refuse the probe (4xx) but not fail (5xx).
            if err.code >= 500 or what == "/health":
                raise StoreError(f"cannot reach the MLflow tracking server at {uri}: {what} "
                                 f"answered HTTP {err.code} (MLFLOW_TRACKING_URI)") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                reason = f"no answer from {what} within {timeout:g} s"
            raise StoreError(f"cannot reach the MLflow tracking server at {uri}: {reason} "
                             f"(MLFLOW_TRACKING_URI)") from None


def default_tracking_uri(folder: Path) -> str:
    """The embedded default: a SQLite store in ``folder`` (artifacts next to it)."""
    return f"sqlite:///{(folder / 'mlflow.db').resolve()}"


EXPERIMENT_KIND = "custom_model_development"


def use_experiment(name: str, description: str) -> mlflow.entities.Experiment:
    """``mlflow.set_experiment``, tagged as model development (MLflow 3's UI otherwise opens
    it as a GenAI experiment) and described."""
    experiment = mlflow.set_experiment(name)
    tags = experiment.tags or {}
    if tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
        mlflow.set_experiment_tag("mlflow.experimentKind", EXPERIMENT_KIND)
    if "mlflow.note.content" not in tags:
        mlflow.set_experiment_tag("mlflow.note.content", description)
    return experiment


def now_ms() -> int:
    """Now, as MLflow stamps runs: pass it to the ``log_*_run`` functions when work starts."""
    return int(time.time() * 1000)


@contextmanager
def start_run(experiment_id: str, name: str, started_ms: int | None = None,
              description: str = "") -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run`` for a run that began at ``started_ms`` (when its work started,
    so the run's duration in the UI is the work's, not the logging's), with the
    ``description`` the UI shows on the run's page."""
    tags = {"mlflow.note.content": description} if description else None
    if started_ms is None:
        with mlflow.start_run(run_name=name, tags=tags) as run:
            yield run
        return
    created = MlflowClient().create_run(experiment_id, start_time=started_ms, run_name=name,
                                        tags=tags)
    with mlflow.start_run(run_id=created.info.run_id) as run:
        yield run


def run_name(kind: str, data: Path | str, detail: str) -> str:
    """A run's name: what, on which data, at which cutoff: ``churn-cdnow-test-1998-04-01``."""
    return f"{kind}-{Path(data).resolve().stem}-{detail}"


def use_tracking_store(read_only: bool = False, writes: bool | None = None) -> str:
    """MLFLOW_TRACKING_URI when set, else the embedded SQLite store in the working folder.

    The store is checked first (``check_store``), so a store that is down, unreadable, for a
    command that only reads (``read_only``) missing, or for one that ``writes`` read-only ends
    in one line within seconds.
    """
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # The command draws its own progress; MLflow's per-download bars would only add noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow retries an unreachable server 7 times with back-off (about 4 minutes): fewer.
    # A server that fails mid-command is reported within about 15 s, not minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path.cwd())
    check_store(uri, read_only, writes=writes)
    mlflow.set_tracking_uri(uri)
    return uri
