"""Online scoring speed: `churn serve` against `mlflow models serve` and in-process predict.

One model for all (LightGBM, 500 trees, 63 leaves, the full feature set), registered and
promoted in a bench-only MLflow store. Load comes from wrk (C, not Python) with a POST body:
1-row requests at concurrency 1 and 8, and 1000-row requests at concurrency 2. The floor is
the same Booster's predict in this process on the same rows (and, for
reference, the compiled forest the service scores with). Needs `wrk` on PATH
(Debian: `apt-get install wrk`).

    python bench/serving.py [--customers 20000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import date
from pathlib import Path

# Run as a script, this folder would shadow the `features` package with bench/features.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lightgbm as lgb  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.job import FeaturesJobConfig, run_features  # noqa: E402
from features.registry import feature_names  # noqa: E402
from features.synthetic import GenerateConfig, as_of_default, generate  # noqa: E402
from models.forest import CompiledForest  # noqa: E402
from models.store import default_tracking_uri  # noqa: E402
from serving.champion import load_champion  # noqa: E402
from training.config import ChurnTrainConfig  # noqa: E402
from training.promote import promote  # noqa: E402
from training.tracking import log_churn_run  # noqa: E402
from training.train_churn import train_churn  # noqa: E402

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BODY")):read("*a")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(work: Path, customers: int, reuse: bool = False) -> pd.DataFrame:
    """Synthetic base, the bench model registered as champion, and features to send.

    ``reuse`` keeps the champion an earlier run of this benchmark left in ``work``."""
    data = work / "data"
    cfg = GenerateConfig(customers=customers, seed=3)
    if not (data / "transactions.parquet").exists():
        generate(cfg, data)
    as_of = as_of_default(cfg)
    run_features(FeaturesJobConfig(data=data, as_of=as_of, out=work / "features.parquet"))
    os.chdir(work)
    mlflow.set_tracking_uri(default_tracking_uri(work))
    if reuse and mlflow.MlflowClient().search_registered_models(filter_string="name='churn'"):
        return _rows_to_send(work)
    train = ChurnTrainConfig(data=data, train_cutoff_count=4, num_leaves=63,
                             max_trees=500, early_stopping_rounds=None, min_data_in_leaf=20)
    result = train_churn(train)
    assert result.model.booster.current_iteration() == 500
    log_churn_run(train, result)
    promote("churn")
    return _rows_to_send(work)


def _rows_to_send(work: Path) -> pd.DataFrame:
    features = pd.read_parquet(work / "features.parquet")
    return features[features["recency_days"] < 365].reset_index(drop=True)


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise SystemExit(f"server at {url} did not start:\n{log.read_text()[-2000:]}")


def start(command: list[str], ready: str, work: Path, name: str) -> subprocess.Popen:
    log = work / f"{name}.log"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": default_tracking_uri(work),
           "BENTOML_HOME": str(work / "bentoml")}
    process = subprocess.Popen(command, cwd=work, env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    wait_ready(ready, process, log)
    return process


def rows_json(frame: pd.DataFrame) -> list[list[float | None]]:
    values = frame[feature_names()].to_numpy(dtype=float)
    return [[None if math.isnan(v) else v for v in row] for row in values]


def bodies(frame: pd.DataFrame, work: Path) -> dict[tuple[str, int], Path]:
    """Request bodies for each server and size, written to files for wrk."""
    out = {}
    for n in (1, 1000):
        part = frame.head(n)
        values = rows_json(part)
        churn = [{"customer_id": cid, "contactable": True,
                  **dict(zip(feature_names(), row, strict=True))}
                 for cid, row in zip(part["customer_id"], values, strict=True)]
        mlflow_body = {"dataframe_split": {"columns": feature_names(), "data": values}}
        table = {"customer_ids": list(part["customer_id"]), "columns": feature_names(),
                 "data": values, "explain": False}
        # Like the peer, probabilities only: reasons (TreeSHAP) are measured on their own.
        for server, body in (("churn serve", {"customers": churn, "explain": False}),
                             ("churn serve table", table),
                             ("churn serve + reasons", {"customers": churn}),
                             ("mlflow serve", mlflow_body)):
            path = work / f"{server.replace(' ', '_').replace('+', 'with')}-{n}.json"
            path.write_text(json.dumps(body))
            out[(server, n)] = path
    return out


def check_answer(url: str, body: Path) -> None:
    request = urllib.request.Request(url, data=body.read_bytes(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.status == 200, r.status


def wrk(url: str, body: Path, connections: int, seconds: int, lua: Path) -> dict[str, float]:
    done = subprocess.run(
        ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "--timeout", "30s",
         "-s", str(lua), url], env={**os.environ, "BODY": str(body)}, capture_output=True,
        text=True, check=True)
    text = done.stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} failed requests\n{text}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"p50_ms": ms("50"), "p99_ms": ms("99"),
            "requests_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}


def in_process(predict: Callable[[np.ndarray], np.ndarray], frame: pd.DataFrame, n: int,
               seconds: float) -> dict[str, float]:
    matrix = frame.head(n)[feature_names()].to_numpy(dtype=np.float64)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        predict(matrix)
        times.append(time.perf_counter() - started)
    arr = np.array(times)
    return {"p50_ms": float(np.percentile(arr, 50)) * 1e3,
            "p99_ms": float(np.percentile(arr, 99)) * 1e3, "requests_s": len(arr) / arr.sum()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--work", type=Path, default=HERE / "data" / "serving")
    parser.add_argument("--only", help="Measure only the servers whose name contains this, "
                        "and requests of --rows rows")
    parser.add_argument("--rows", type=int, choices=(1, 1000))
    parser.add_argument("--reuse", action="store_true",
                        help="Keep the champion an earlier run left in --work")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install wrk)")
    args.work.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()
    frame = prepare(work, args.customers, args.reuse)
    paths = bodies(frame, work)
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text(LUA)
    churn_port, mlflow_port = free_port(), free_port()
    servers = {
        "churn serve": (start([str(BIN / "churn"), "serve", "--port", str(churn_port),
                               "--host", "127.0.0.1"], f"http://127.0.0.1:{churn_port}/readyz",
                              work, "churn-serve"),
                        f"http://127.0.0.1:{churn_port}/score_features"),
        "mlflow serve": (start([str(BIN / "mlflow"), "models", "serve", "-m",
                                "models:/churn@champion", "-p", str(mlflow_port),
                                "--env-manager", "local"],
                               f"http://127.0.0.1:{mlflow_port}/ping", work, "mlflow-serve"),
                         f"http://127.0.0.1:{mlflow_port}/invocations"),
    }
    results = []
    cells = [(url, body) for name, (_, url) in servers.items()
             for body in ((name,) if name == "mlflow serve" else (name, f"{name} + reasons"))]
    cells.append((servers["churn serve"][1].replace("score_features", "score_table"),
                  "churn serve table"))
    try:
        for url, body in cells:
            if args.only and args.only not in body:
                continue
            for n, connections in ((1, 1), (1, 8), (1000, 2)):
                if args.rows and n != args.rows:
                    continue
                check_answer(url, paths[(body, n)])
                measured = wrk(url, paths[(body, n)], connections, args.seconds, lua)
                results.append({"server": body, "rows": n, "connections": connections,
                                **measured})
                print(results[-1], flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    booster = load_champion().model.booster
    forest = CompiledForest.from_booster(booster)
    floors = {"in-process Booster.predict": lambda m: booster.predict(m, raw_score=True),
              "in-process CompiledForest.margins": forest.margins}
    for name, predict in floors.items():
        for n in (1, 1000):
            results.append({"server": name, "rows": n, "connections": 1,
                            **in_process(predict, frame, n, args.seconds)})
    table = pd.DataFrame(results)
    table["rows_s"] = table["requests_s"] * table["rows"]
    print(f"\n# Serving, {date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}, "
          f"lightgbm {lgb.__version__}, wrk, {args.seconds} s per cell\n")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))


if __name__ == "__main__":
    main()
