"""Shared helpers: write small contract tables and build features from them."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
import uuid
from contextlib import closing
from datetime import date
from pathlib import Path

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # Under `pytest -n`, each worker's OpenMP (LightGBM) gets its share of the cores, here
    # and in the commands the tests start. Left to take every core, two workers' spinning
    # threads made one LightGBM fit 15 times slower on 2 cores.
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

if "CHURN_FOREST_CACHE" not in os.environ:
    # Forests built to machine code are cached in a folder of the run's own, not the user's.
    os.environ["CHURN_FOREST_CACHE"] = tempfile.mkdtemp(prefix="churn-forests-")
    atexit.register(shutil.rmtree, os.environ["CHURN_FOREST_CACHE"], True)

import mlflow
import pandas as pd
import psycopg
import pytest
from mlflow import MlflowClient

from features.job import FeaturesJobConfig, run_features
from features.synthetic import GenerateConfig, generate
from models.store import default_tracking_uri
from training.config import ChurnTrainConfig, UpliftTrainConfig, ValueTrainConfig
from training.propensity import train_propensity
from training.tracking import log_churn_run
from training.train_churn import ChurnTrainResult, train_churn
from training.train_uplift import train_uplift
from training.train_value import ValueTrainResult, train_value

SHARED_DATA = Path(os.environ.get(
    "CHURN_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_file(relative: str) -> Path:
    """A file of the public datasets; skipped where absent, but never under CI."""
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"{path} not found (set CHURN_SHARED_DATA to the shared/data folder)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def chromium() -> str:
    path = shutil.which("chromium")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing: `make browser` (run by `make test`) installs it")
    pytest.skip("needs Debian's chromium for the browser test: apt-get install chromium "
                "(`make test` as root installs it)")


def process_env(**extra: str) -> dict[str, str]:
    """This environment without MLflow settings (an earlier test's leak in), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, **extra}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, what: str,
                  timeout: float = 120) -> None:
    """Wait until GET ``url`` answers 200; fail with the server's log if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def write_table(folder: Path, name: str, frame: pd.DataFrame, fmt: str = "csv") -> Path:
    """Write one contract table as NAME.csv or NAME.parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def build(data: Path, as_of: date, out: Path | None = None, **options) -> pd.DataFrame:
    """Run the features job and return its output indexed by customer_id."""
    out = out or data.parent / f"features-{as_of}.parquet"
    run_features(FeaturesJobConfig(data=data, as_of=as_of, out=out, memory_limit="1GB",
                                   **options))
    return pd.read_parquet(out).set_index("customer_id")


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> tuple[Path, GenerateConfig]:
    """A small synthetic base, generated once per test session."""
    cfg = GenerateConfig(customers=3_000, seed=11)
    folder = tmp_path_factory.mktemp("synthetic")
    generate(cfg, folder)
    return folder, cfg


POSTGRES_DSN = os.environ.get("CHURN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
POSTGRES_HINT = ("PostgreSQL does not answer at {dsn}. Start one (for example "
                 "`pg_ctlcluster 15 main start`, or `docker run -p 5432:5432 "
                 "-e POSTGRES_HOST_AUTH_METHOD=trust postgres`) or point CHURN_TEST_POSTGRES "
                 "at a server where this user may create databases.")


@pytest.fixture
def postgres_database() -> str:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards; yields its URL.

    Skipped with a hint where no server answers, but never under CI.
    """
    try:
        admin = psycopg.connect(f"{POSTGRES_DSN}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        message = POSTGRES_HINT.format(dsn=POSTGRES_DSN)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"churn_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{POSTGRES_DSN}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The synthetic data ends 2026-01-01, so by default the test cutoff is 2025-10-01 (the last
# first of a month whose 90-day label window is over), validation 2025-07-01, and training
# three monthly cutoffs ending 2025-04-01.
TRAIN_CUTOFFS = (date(2025, 2, 1), date(2025, 3, 1), date(2025, 4, 1))
VALIDATION_CUTOFF = date(2025, 7, 1)
TEST_CUTOFF = date(2025, 10, 1)


@pytest.fixture(scope="session")
def churn_config(synthetic_data) -> ChurnTrainConfig:
    folder, _ = synthetic_data
    return ChurnTrainConfig(data=folder, train_cutoff_count=3, learning_rate=0.05)


@pytest.fixture(scope="session")
def trained(churn_config) -> ChurnTrainResult:
    return train_churn(churn_config)


@pytest.fixture(scope="session")
def propensity_trained(churn_config) -> ChurnTrainResult:
    """A propensity model (30 days) on the small synthetic base."""
    return train_propensity(churn_config, horizon_days=30)


@pytest.fixture(scope="session")
def value_config(synthetic_data) -> ValueTrainConfig:
    folder, _ = synthetic_data
    return ValueTrainConfig(data=folder, train_cutoff_count=3, horizon_days=90,
                            learning_rate=0.1)


@pytest.fixture(scope="session")
def value_trained(value_config) -> ValueTrainResult:
    return train_value(value_config)


def crown(name: str, version: str) -> None:
    """Give ``version`` of ``name`` the champion alias directly, whatever its quality: for
    tests of scoring, which need a champion, not of promotion, which would judge it."""
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version)


def crowned_store(folder: Path, churn_config, trained) -> str:
    """A store in ``folder`` (artifacts beside it) whose churn v1 is ``trained`` and
    champion; the caller's tracking URI and working folder are left as they were."""
    previous, cwd = mlflow.get_tracking_uri(), Path.cwd()
    os.chdir(folder)
    uri = migrated_store(folder)
    mlflow.set_tracking_uri(uri)
    try:
        log_churn_run(churn_config, trained)
        crown("churn", "1")
    finally:
        mlflow.set_tracking_uri(previous)
        os.chdir(cwd)
    return uri


@functools.cache
def _migrated_template() -> Path:
    """An empty SQLite store with every migration applied, made once per test process: a
    new store spends about 8 s in migrations, a copy of this one 0.1 s."""
    folder = Path(tempfile.mkdtemp(prefix="churn-store-template-"))
    MlflowClient(default_tracking_uri(folder)).search_experiments()
    return folder / "mlflow.db"


def migrated_store(folder: Path) -> str:
    """A fresh, empty tracking store at ``folder/mlflow.db`` (artifacts beside it, in
    ``folder/mlruns``), copied from a migrated one; its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "mlflow.db"
    shutil.copyfile(_migrated_template(), target)
    with closing(sqlite3.connect(target)) as con, con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    [(folder / "mlruns" / "0").resolve().as_uri()])
    return default_tracking_uri(folder)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store (artifacts beside it) for one test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous = mlflow.get_tracking_uri()
    uri = migrated_store(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def uplift_trained(synthetic_data):
    """An uplift model trained on the small synthetic base's campaign (one learner, fast)."""
    folder, _ = synthetic_data
    cfg = UpliftTrainConfig(data=folder, learner="x_learner", selection_folds=2)
    return cfg, train_uplift(cfg)


# The longest files, started first: under `pytest -n` (a file per worker) no worker is then
# left alone with one of them at the end while the others idle.
LONGEST_FIRST = ("tests/notebooks/test_notebook_hillstrom.py",
                 "tests/notebooks/test_notebook_cdnow.py", "tests/spark/test_spark_engine.py",
                 "tests/training/test_uplift.py",
                 "tests/churn/test_demo.py", "tests/operations/test_monitor.py",
                 "tests/serving/test_service.py", "tests/churn/test_cli.py",
                 "tests/training/test_backtest.py", "tests/churn/test_packaging.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a file, and among the rest, the order stays

