"""Outside the checkout: a built wheel (not an editable install) trains, promotes and serves, and
a logged model loads in a Python that has never seen this project."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import mlflow
import pytest

from tests.conftest import free_port, process_env, wait_until_up
from training.tracking import log_churn_run
from training.uplift_tracking import log_uplift_run

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project's wheel, built and installed into a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(work / "dist"), str(REPO)], capture_output=True, text=True,
                           timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((work / "dist").glob("*.whl"))
    target = work / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                           "--target", str(target), str(wheel)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def test_the_wheel_trains_scores_and_serves(installed, tmp_path):
    env = process_env(PYTHONPATH=str(installed), COLUMNS="200",
                      BENTOML_HOME=str(tmp_path / "bentoml"),
                      PATH=f"{BIN}:{os.environ['PATH']}")
    probe = "import serving.policy as p; print(p.__file__); print(p.SegmentPolicy.load())"
    where = subprocess.run([sys.executable, "-c", probe],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(installed))  # the wheel's copy, not the checkout

    # The demo's path, on the wheel's code (the demo itself runs in tests/churn/test_demo.py):
    # data, features, a churn model trained, registered and promoted, then served.
    for step in (("generate", "--customers", "1000", "--out", "data"),
                 ("features", "--data", "data", "--as-of", "2025-10-01", "--out", "f.parquet"),
                 ("train", "churn", "--data", "data", "--cutoffs", "2", "--max-trees", "50"),
                 ("promote", "churn")):
        done = subprocess.run([sys.executable, "-m", "churn", *step], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, (step, done.stderr[-3000:])
    assert "churn v1 is the first champion" in done.stdout

    port = free_port()
    log = tmp_path / "serve.log"
    server = subprocess.Popen([sys.executable, "-m", "churn", "serve", "--port", str(port),
                               "--host", "127.0.0.1"], cwd=tmp_path, env=env,
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/readyz", server, log, "churn serve")
        body = json.dumps({"as_of": "2026-01-01", "transactions": [
            {"customer_id": "C1", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80}]})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score_history",
                                         data=body.encode(),
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert answer["scores"][0]["customer_id"] == "C1"
        assert answer["scores"][0]["churn_probability"] is not None
    finally:
        server.terminate()
        server.wait(timeout=30)


CLEAN_LOAD = textwrap.dedent("""
    import sys
    sys.path.append({site!r})
    try:
        import features
    except ImportError:
        pass
    else:
        raise SystemExit("the project is importable: not a clean interpreter")
    import mlflow.pyfunc
    import pandas as pd
    model = mlflow.pyfunc.load_model({model!r})
    rows = pd.read_parquet({rows!r})
    print(model.predict(rows).to_json(orient="split", double_precision=15))
""")


def _load_in_a_clean_python(model: str, rows: Path, cwd: Path) -> dict:
    """Load and predict with -I -S: no PYTHONPATH, no .pth files (so no editable install)."""
    code = CLEAN_LOAD.format(site=site.getsitepackages()[0], model=model, rows=str(rows))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_logged_models_load_without_the_project(mlflow_store, trained, churn_config,
                                                uplift_trained, tmp_path):
    churn = log_churn_run(churn_config, trained)
    uplift = log_uplift_run(*uplift_trained)
    for name, version, rows, expected in (
        ("churn", churn.model_version, trained.test.head(20),
         trained.model.predict_proba(trained.test.head(20))),
        ("uplift", uplift.model_version, trained.test.head(20),
         uplift_trained[1].model.predict(trained.test.head(20)).iloc[:, 0].to_numpy()),
    ):
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}",
                                                    dst_path=str(tmp_path / name))
        # Loading ships the models and the feature registry they read, not the trainers,
        # and pins what it needs from PyPI.
        assert sorted(p.name for p in (Path(local) / "code").iterdir()) == ["features", "models"]
        requirements = (Path(local) / "requirements.txt").read_text()
        assert "lightgbm==" in requirements and "scikit-learn==" in requirements
        assert not list(Path(local).rglob("*.joblib")) and not list(Path(local).rglob("*.pkl"))
        path = tmp_path / f"{name}-rows.parquet"
        rows.to_parquet(path)
        got = _load_in_a_clean_python(local, path, tmp_path)
        assert [v[0] for v in got["data"]] == pytest.approx(list(expected), rel=1e-12)


def test_make_demo_installs_the_project_without_the_test_tools(tmp_path):
    plan = subprocess.run(["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    assert "pip install --quiet -e ." in plan
    assert "[dev]" not in plan
    tests = subprocess.run(["make", "-n", "test", f"VENV={tmp_path / 'venv'}"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout
    assert "-e '.[dev]'" in tests
