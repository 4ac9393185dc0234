"""The production loop on a world that shifts: score, monitor, retrain, as a scheduler runs it.

The synthetic base loses the tracking of half its customers' engagement from 2025-01-01
(their e-mail opens, clicks, site visits and app sessions fall to a twentieth while they go
on buying). A champion fitted before the shift is scored before and after it; `churn
monitor` must call the first healthy and the second degraded, naming the features that
moved; `churn retrain` must then promote a challenger that beats the champion on the
shifted data.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from features.synthetic import GenerateConfig, generate
from models.store import default_tracking_uri
from tests.conftest import migrated_store, process_env, shared_file

SHIFT = date(2025, 1, 1)
BEFORE, AFTER = "2024-10-01", "2025-07-01"


def churn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "churn", *args], cwd=cwd,
                          env=process_env(COLUMNS="250"), capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> Path:
    """A folder with shifted data, a champion fitted before the shift, and two scoring runs."""
    folder = tmp_path_factory.mktemp("shifted")
    generate(GenerateConfig(customers=5_000, seed=5, shift_at=SHIFT),
             folder / "data")
    migrated_store(folder)
    steps = [("train", "churn", "--data", "data", "--test-cutoff", BEFORE, "--cutoffs", "3"),
             ("promote", "churn"),
             ("score", "--data", "data", "--as-of", BEFORE, "--out", f"scores/{BEFORE}.parquet",
              "--no-reasons"),
             ("score", "--data", "data", "--as-of", AFTER, "--out", f"scores/{AFTER}.parquet",
              "--no-reasons")]
    for step in steps:
        done = churn(*step, cwd=folder)
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    return folder


def test_scoring_runs_are_recorded(shifted):
    mlflow.set_tracking_uri(default_tracking_uri(shifted))
    client = MlflowClient()
    experiment = client.get_experiment_by_name("scoring")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    assert [r.data.params["as_of"] for r in runs] == [BEFORE, AFTER]
    first = runs[0]
    assert first.info.status == "FINISHED"
    assert first.data.tags["churn_version"] == "1"
    assert first.data.params["destination"] == str(shifted / "scores" / f"{BEFORE}.parquet")
    segments = {k: v for k, v in first.data.metrics.items() if k.startswith("segment_")}
    assert sum(segments.values()) == first.data.metrics["rows"]
    assert 0 < first.data.metrics["churn_p10"] < first.data.metrics["churn_p90"] < 1
    profile = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=first.info.run_id, artifact_path="profile.json")).read_text())
    counts = profile["profile"]["recency_days"]["counts"]
    assert sum(counts) == first.data.metrics["scored"]


def test_monitor_is_healthy_before_the_shift(shifted):
    done = churn("monitor", "--data", "data", "--as-of", "2025-01-01", cwd=shifted)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: healthy (exit 0)" in done.stdout
    assert BEFORE in done.stdout and AFTER not in done.stdout


def test_monitor_with_nothing_matured_says_so_and_not_healthy(shifted):
    done = churn("monitor", "--data", "data", "--as-of", "2024-10-15", cwd=shifted)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "verdict: unchecked (exit 3)" in done.stdout
    assert "no scoring run's outcomes have matured by 2024-10-15" in done.stdout


def test_an_ageing_cohort_whose_quality_holds_is_not_degrading(tmp_path):
    """CDNOW is one cohort that only ages: scored on its own test cutoff and monitored once
    the outcomes are in, the realised ROC AUC is the test ROC AUC; days since the last order
    and tenure move with the calendar. That is not a model going wrong."""
    data = shared_file("cdnow/transactions.csv").parent
    migrated_store(tmp_path)
    for step in (("train", "churn", "--data", str(data), "--test-cutoff", "1998-04-01"),
                 ("promote", "churn"),
                 ("score", "--data", str(data), "--as-of", "1998-04-01", "--out",
                  "s.parquet", "--no-reasons")):
        assert churn(*step, cwd=tmp_path).returncode == 0, step
    done = churn("monitor", "--data", str(data), "--as-of", "1998-07-01", cwd=tmp_path)
    assert done.returncode in (0, 5), done.stdout + done.stderr
    # Realised ROC AUC beside the test ROC AUC: the same 0.745.
    assert re.search(r"\b0\.745\s+\S\s+0\.745\b", done.stdout), done.stdout
    assert done.stdout.split("verdict:")[1].split()[0] in ("healthy", "drifted")
    moved = [line for line in done.stdout.splitlines() if "drifted from the training" in line]
    assert not any(name in line for line in moved
                   for name in ("tenure_days", "recency_days", "days_since_"))


def test_monitor_sees_drift_and_degradation_after_it(shifted):
    done = churn("monitor", "--data", "data", "--as-of", "2025-10-01", cwd=shifted)
    assert done.returncode in (10, 20), done.stdout + done.stderr
    verdict = "degrading" if done.returncode == 10 else "retrain"
    assert f"verdict: {verdict} (exit {done.returncode})" in done.stdout
    assert "realised ROC AUC" in done.stdout
    moved = next(line for line in done.stdout.splitlines() if "drifted from the training" in line)
    engagement = ("email_open", "email_click", "site_visit", "app_session")
    assert any(name in moved for name in engagement), moved
    assert "orders_" not in moved and "spend_" not in moved
    mlflow.set_tracking_uri(default_tracking_uri(shifted))
    client = MlflowClient()
    experiment = client.get_experiment_by_name("monitoring")
    latest = client.search_runs([experiment.experiment_id],
                                order_by=["attributes.start_time DESC"])[0]
    assert latest.data.tags["verdict"] == verdict
    history = client.get_metric_history(latest.info.run_id, "roc_auc")
    assert len(history) == 2 and history[1].value < history[0].value
    artifacts = {a.path for a in client.list_artifacts(latest.info.run_id, "plots")}
    assert {"plots/reliability.png", "plots/drift_psi.png"} <= artifacts
    tag = client.get_model_version("churn", "1").tags["monitor_verdict"]
    assert tag.startswith(verdict)


def test_retrain_promotes_a_challenger_that_wins_on_the_shifted_data(shifted):
    done = churn("retrain", "--data", "data", cwd=shifted)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promoted (exit 0): churn v2 beats v1" in done.stdout
    assert "on the candidate's test cutoff 2025-10-01" in done.stdout
    again = churn("retrain", "--data", "data", cwd=shifted)
    assert again.returncode == 10, again.stdout + again.stderr
    assert "nothing was trained; champion stays v2" in again.stdout
