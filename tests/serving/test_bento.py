"""`churn build`: a bento with the champions inside serves with the registry gone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from serving.service import TransactionIn, history_features
from tests.conftest import crown, free_port, process_env, wait_until_up
from training.promote import promote
from training.tracking import log_churn_run
from training.uplift_tracking import log_uplift_run

BIN = Path(sys.executable).parent
ORDERS = [{"customer_id": "C1", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80.0},
          {"customer_id": "C1", "order_id": "o2", "ordered_at": "2025-09-20", "amount": 35.0}]


def test_the_built_bento_serves_without_the_registry(mlflow_store, trained, churn_config,
                                                    uplift_trained, tmp_path):
    log_churn_run(churn_config, trained)
    promote("churn")
    crown("uplift", log_uplift_run(*uplift_trained).model_version)
    home = tmp_path / "bentoml"
    built = subprocess.run([str(BIN / "churn"), "build"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, check=False,
                           env=process_env(MLFLOW_TRACKING_URI=mlflow_store,
                                           BENTOML_HOME=str(home)))
    assert built.returncode == 0, built.stderr[-3000:]
    tag = built.stdout.split("Built bento ", 1)[1].split()[0]
    assert "with churn:v1,uplift:v1" in built.stdout and f"bentoml containerize {tag}" in (
        built.stdout)

    # The registry is gone: the bento must carry what it serves.
    (tmp_path / "mlflow.db").unlink()
    shutil.rmtree(tmp_path / "mlruns")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    log = tmp_path / "bento.log"
    server = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", tag, "--port", str(port), "--host", "127.0.0.1"],
        cwd=elsewhere, stdout=log.open("w"), stderr=subprocess.STDOUT,
        env=process_env(BENTOML_HOME=str(home),
                        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'gone' / 'none.db'}"))
    try:
        wait_until_up(f"http://127.0.0.1:{port}/readyz", server, log, "bentoml serve")
        body = json.dumps({"as_of": "2026-01-01", "transactions": ORDERS}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score_history", data=body,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata", timeout=30) as response:
            metadata = json.loads(response.read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (answer["model_version"], answer["uplift_model_version"]) == ("1", "1")
    # The bento serves the models built into it: there is no registry to watch.
    assert metadata["model_version"] == "1" and metadata["watching_champion"] is False
    features = history_features(date(2026, 1, 1), [TransactionIn(**o) for o in ORDERS], [], [])
    expected = trained.model.predict_proba(features)
    assert answer["scores"][0]["churn_probability"] == pytest.approx(float(expected[0]),
                                                                     rel=1e-12)
    assert np.isfinite(answer["scores"][0]["uplift_spend"])
