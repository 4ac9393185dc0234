"""The `churn` command as a user runs it: real processes, real files."""

from __future__ import annotations

import http.server
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import crowned_store, migrated_store, process_env

CHURN = [sys.executable, "-m", "churn"]


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    env = process_env(COLUMNS="200", **env)
    return subprocess.run([*CHURN, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_train_and_promote_errors_are_one_line(tmp_path):
    data = tmp_path / "data"
    assert run("generate", "--customers", "300", "--out", "data", cwd=tmp_path).returncode == 0
    late = run("train", "churn", "--data", str(data), "--test-cutoff", "2025-12-01",
               cwd=tmp_path)
    assert late.returncode == 1
    assert "error: cutoff 2025-12-01: the 90-day label window is not over yet" in late.stderr
    # Refused before anything was recorded.
    assert not (tmp_path / "mlruns").exists()
    overlap = run("train", "churn", "--data", str(data), "--cutoffs", "2025-05-01,2025-06-01",
                  cwd=tmp_path)
    assert overlap.returncode == 1
    assert ("error: training cutoff 2025-05-01, 2025-06-01: its 90-day label window ends after "
            "the validation cutoff 2025-07-01") in overlap.stderr
    assert "The latest training cutoff that works is 2025-04-02" in overlap.stderr
    bad = run("train", "churn", "--data", str(data), "--cutoffs", "2025-09-01,sept",
              cwd=tmp_path)
    assert bad.returncode == 2 and "'sept' is not an ISO date" in bad.stderr
    # Nothing trained, so no store: reading commands say so (and create none).
    nothing = run("promote", "churn", cwd=tmp_path)
    assert nothing.returncode == 1
    assert "error: no MLflow store at" in nothing.stderr
    migrated_store(tmp_path)  # an empty store
    nothing = run("promote", "churn", cwd=tmp_path)
    assert "error: no registered 'churn' model; train one first" in nothing.stderr
    no_champion = run("score", "--data", str(data), "--as-of", "2025-10-01", "--out",
                      "s.parquet", cwd=tmp_path)
    assert no_champion.returncode == 1
    assert "error: no 'churn' model holds the 'champion' alias" in no_champion.stderr
    for done in (late, overlap, bad, nothing, no_champion):
        assert "Traceback" not in done.stderr


def test_generate_then_features(tmp_path):
    done = run("generate", "--customers", "300", "--seed", "1", "--out", "data",
               "--format", "csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "data").iterdir()} == {
        "transactions.csv", "events.csv", "customers.csv", "exposures.csv",
        "ground_truth.parquet"}
    done = run("features", "--data", "data", "--as-of", "2025-06-01", "--out", "f.csv",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp_path / "f.csv")) > 200


def test_bad_data_gives_a_short_error_and_writes_nothing(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "transactions.csv").write_text(
        "customer_id,order_id,ordered_at,amount\na,1,1997-01-01,10\nb,2,yesterday,5\n")
    done = run("features", "--data", "data", "--as-of", "1998-01-01", "--out", "f.parquet",
               cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error: transactions: 1 row of 2 break the contract" in done.stderr
    assert "row 2: 'yesterday'" in done.stderr
    assert not (tmp_path / "f.parquet").exists()


def test_user_mistakes_are_one_line_errors(tmp_path):
    missing = run("features", "--data", "nowhere", "--as-of", "1998-01-01", "--out", "f.parquet",
                  cwd=tmp_path)
    assert missing.returncode == 1 and "error: --data nowhere: not a folder" in missing.stderr
    bad_date = run("features", "--data", ".", "--as-of", "01/02/1998", "--out", "f.parquet",
                   cwd=tmp_path)
    assert bad_date.returncode == 2 and "is not an ISO date" in bad_date.stderr
    bad_out = run("features", "--data", ".", "--as-of", "1998-01-01", "--out", "f.xlsx",
                  cwd=tmp_path)
    assert bad_out.returncode == 1 and "use a .parquet or .csv file name" in bad_out.stderr
    for done in (missing, bad_date, bad_out):
        assert "Traceback" not in done.stderr


def test_out_of_range_options_are_refused_before_any_work(tmp_path):
    for args, option in ((("train", "churn", "--data", ".", "--max-trees", "0"), "--max-trees"),
                         (("train", "churn", "--data", ".", "--learning-rate=-1"),
                          "--learning-rate"),
                         (("train", "churn", "--data", ".", "--num-leaves", "1"), "--num-leaves"),
                         (("serve", "--port", "70000"), "--port")):
        done = run(*args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert f"Invalid value for '{option}'" in done.stderr
        assert "Traceback" not in done.stderr


def test_a_store_that_cannot_be_used_fails_fast_in_one_line(tmp_path):
    """Down, corrupt or mistyped: seconds, one line naming the store; no store is created."""
    score = ("score", "--data", ".", "--as-of", "2025-01-01", "--out", "s.parquet")
    cases = [({}, "no MLflow store at"),  # a read path never creates a store
             ({"MLFLOW_TRACKING_URI": "http://127.0.0.1:9/"},
              "cannot reach the MLflow tracking server"),
             ({"MLFLOW_TRACKING_URI": "http://10.255.255.1:5000"}, "cannot reach"),  # no answer
             ({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'bad.db'}"}, "cannot be read")]
    (tmp_path / "bad.db").write_text("not a database")
    # Every command in every case at once (each mostly waits on imports or the network).
    # The first case touches no network: a store that is down or silent may add seconds to
    # that, not the minutes of the client's default retries. (Relative, because twelve
    # processes importing at once on a loaded machine take as long as they take.)
    started = time.monotonic()
    running = [(args, env, message,
                subprocess.Popen([*CHURN, *args], cwd=tmp_path, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=process_env(COLUMNS="200", **env)))
               for env, message in cases
               for args in (score, ("promote", "churn"), ("serve", "--port", "3999"))]
    local = None
    for args, env, message, process in running:
        _, stderr = process.communicate(timeout=120)
        if not env:  # the first case's three commands, the last of which ends at ``local``
            local = time.monotonic() - started
        assert time.monotonic() - started < local + 30, (args, env)
        assert process.returncode == 1 and message in stderr, (args, env, stderr)
        assert "Traceback" not in stderr
    assert not (tmp_path / "mlflow.db").exists()


class HalfDownServer(http.server.BaseHTTPRequestHandler):
    """A tracking server's proxy whose /health answers while the API behind it fails (503)
    or hangs, as the class attribute ``api`` says."""

    api = "503"

    def do_GET(self) -> None:
        if self.path == "/health":
            self._answer(200, b"OK")
        elif self.api == "hang":
            time.sleep(60)
        else:
            self._answer(503, b"Service Unavailable")

    do_POST = do_GET

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_tracking_server_whose_api_fails_is_named_within_seconds(tmp_path):
    for api, message in (("503", "its API answered HTTP 503"),
                         ("hang", "no answer from its API within 5 s")):
        handler = type(f"Half{api}", (HalfDownServer,), {"api": api})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            commands = [("score", "--data", ".", "--as-of", "2025-01-01", "--out", "s.parquet"),
                        ("promote", "churn"), ("train", "churn", "--data", ".")]
            started = time.monotonic()
            running = [(args, subprocess.Popen(
                [*CHURN, *args], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=process_env(COLUMNS="300", MLFLOW_TRACKING_URI=uri)))
                for args in commands]
            for args, process in running:
                _, stderr = process.communicate(timeout=120)
                assert time.monotonic() - started < 45, args  # three at once, imports included
                assert process.returncode == 1, (args, stderr)
                assert f"the MLflow tracking server at {uri}" in stderr and message in stderr, (
                    args, stderr)
                assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, (
                    args, stderr)
        finally:
            server.shutdown()


def as_nobody(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The command as a user who may read the store but not write it (tests run as root,
    whom file permissions do not stop)."""
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *CHURN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False,
                          env=process_env(COLUMNS="300", HOME=str(cwd), **env))


def test_a_read_only_store_is_one_line_and_scoring_can_record_elsewhere(
        tmp_path_factory, trained, churn_config, synthetic_data):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run a command as another user")
    data, _ = synthetic_data
    # A folder others may read but not write, outside pytest's private temporary folders.
    shared = Path(tempfile.mkdtemp(prefix="churn-read-only-"))
    try:
        shared.chmod(0o755)
        uri = crowned_store(shared, churn_config, trained)
        shutil.copytree(data, shared / "data")
        out = shared / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        for path in shared.rglob("*"):
            if path != out:
                path.chmod(0o755 if path.is_dir() else 0o644)
        score = ("score", "--data", str(shared / "data"), "--as-of", "2025-10-01",
                 "--allow-data-mismatch")  # a copy of the data it was trained on
        cases = [((*score, "--out", str(out / "a.parquet")), "--run-log off"),
                 (("promote", "churn"), "writes to it"),
                 (("train", "churn", "--data", str(shared / "data")), "writes to it"),
                 (("monitor", "--data", str(shared / "data"), "--as-of", "2025-10-01"),
                  "writes to it")]
        for args, hint in cases:
            done = as_nobody(*args, cwd=out, MLFLOW_TRACKING_URI=uri)
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            assert f"the MLflow store {uri} is read-only" in done.stderr and hint in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        done = as_nobody(*score, "--out", str(out / "b.parquet"), "--run-log", "off", cwd=out,
                         MLFLOW_TRACKING_URI=uri)
        assert done.returncode == 0, done.stderr
        assert len(pd.read_parquet(out / "b.parquet")) > 0
        runs = f"sqlite:///{out / 'runs.db'}"
        done = as_nobody(*score, "--out", str(out / "c.parquet"), "--run-log", runs, cwd=out,
                         MLFLOW_TRACKING_URI=uri)
        assert done.returncode == 0, done.stderr
        logged = MlflowClient(runs)
        [run] = logged.search_runs([logged.get_experiment_by_name("scoring").experiment_id])
        assert run.info.status == "FINISHED" and run.data.tags["churn_version"] == "1"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_retrain_on_a_mistyped_store_creates_nothing(tmp_path):
    typo = tmp_path / "mlfow.db"
    done = run("retrain", "--data", ".", cwd=tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{typo}")
    assert done.returncode == 1 and f"no MLflow store at {typo}" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_serve_without_a_champion_stops_at_once(tmp_path, mlflow_store):
    MlflowClient().search_registered_models()  # the store exists, with no model in it
    done = run("serve", "--port", "3999", "--model-name", "nothing-here", cwd=tmp_path)
    assert done.returncode == 1
    assert "no 'nothing-here' model holds the 'champion' alias" in done.stderr


def test_piped_output_keeps_every_column_whole(tmp_path, mlflow_store):
    assert run("generate", "--customers", "1000", "--out", "data", cwd=tmp_path).returncode == 0
    env = {k: v for k, v in process_env().items() if k != "COLUMNS"}  # as in a pipe or a log
    done = subprocess.run([*CHURN, "train", "churn", "--data", "data"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    header = next(line for line in done.stdout.splitlines() if "metric" in line)
    assert "BG/NBD P(alive)" in header and "BG/NBD E(buys)" in header
    assert "one-time buyer by construction" in done.stdout
    run_info = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("churn").experiment_id])[0]
    assert run_info.info.run_name == "churn-data-test-2025-10-01"
    experiment = MlflowClient().get_experiment_by_name("churn")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_help_teaches_the_first_steps(tmp_path):
    done = run("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "churn demo" in done.stdout.replace("`", "")
    features_help = run("features", "--help", cwd=tmp_path).stdout
    assert "--on-bad-rows" in features_help and "quarantine" in features_help
    train_help = run("train", "churn", "--help", cwd=tmp_path).stdout
    for option in ("--cutoffs", "--validation-cutoff", "--test-cutoff", "--horizon-days"):
        assert option in train_help


def test_version_names_the_package(tmp_path):
    done = run("--version", cwd=tmp_path)
    assert done.returncode == 0
    version = importlib.metadata.version("churn-propensity")
    assert done.stdout.strip() == f"churn-propensity {version}"
