"""Against a real `mlflow server` backed by PostgreSQL: train, promote and read back over HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from playwright.sync_api import sync_playwright

from models.registry import CHAMPION
from tests.conftest import chromium, free_port, process_env, wait_until_up

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def mlflow_server(postgres_database, tmp_path):
    """`mlflow server` with the test's own database as backend and a temporary artifact root."""
    port = free_port()
    backend = postgres_database.replace("postgresql://", "postgresql+psycopg://", 1)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", backend,
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        env=process_env(PATH=f"{BIN}:{os.environ['PATH']}"))
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/health", server, tmp_path / "server.log", "mlflow server")
    yield url
    server.terminate()
    server.wait(timeout=30)
    log.close()


def test_train_and_promote_against_a_tracking_server(mlflow_server, synthetic_data, tmp_path):
    folder, _ = synthetic_data
    env = process_env(MLFLOW_TRACKING_URI=mlflow_server, PATH=f"{BIN}:{os.environ['PATH']}",
                      COLUMNS="200")
    # Through the MLproject entry point, as `mlflow run` users would.
    trained = subprocess.run(
        [str(BIN / "mlflow"), "run", str(REPO), "-e", "train_churn", "--env-manager", "local",
         "--experiment-name", "churn", "-P", f"data={folder}",
         "-P", "cutoffs=3"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "ROC AUC" in trained.stdout
    promoted = subprocess.run([str(BIN / "churn"), "promote", "churn"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, check=False)
    assert promoted.returncode == 0, promoted.stderr
    assert "churn v1 is the first champion" in promoted.stdout
    # Nothing was written locally: it all went to the server.
    assert not (tmp_path / "mlflow.db").exists()

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    champion = client.get_model_version_by_alias("churn", CHAMPION)
    run = client.get_run(champion.run_id)
    assert run.data.params["test_cutoff"] == "2025-10-01"
    assert run.data.params["validation_cutoff"] == "2025-07-01"
    assert run.data.metrics["test_roc_auc"] > run.data.metrics["test_recency_rule_roc_auc"]
    assert {d.tags[0].value for d in run.inputs.dataset_inputs} == {
        "training", "validation", "test"}
    rows = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=champion.run_id, artifact_path="test/test.parquet",
        dst_path=str(tmp_path / "download"), tracking_uri=mlflow_server))
    assert len(rows) == int(run.data.params["test_rows"])
    assert (tmp_path / "artifacts").exists()
    # The address the command prints opens the experiment as model training in MLflow's UI
    # (without asking, MLflow 3 opens it as a GenAI experiment: traces, no runs table).
    page = re.search(r"See it with: open (\S+)", trained.stdout).group(1)
    assert page.endswith("?workflowType=machine_learning")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        tab = browser.new_page()
        tab.goto(page)
        tab.wait_for_selector("text=Run Name", timeout=60_000)
        shown = tab.inner_text("body")
        browser.close()
    assert "churn-synthetic" in shown and "Detect Issues" not in shown
