"""Every input the contract allows: transactions alone or with any subset of events, customers
and exposures, as CSV and as Parquet. The features job reads each; every command runs end to
end on the two ends (transactions alone, every table) in each format. No traceback anywhere."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from churn.cli import app
from features.synthetic import GenerateConfig, generate
from tests.conftest import migrated_store

OPTIONAL = ("events", "customers", "exposures")
SUBSETS = [subset for n in range(len(OPTIONAL) + 1)
           for subset in itertools.combinations(OPTIONAL, n)]
# Every command reads the tables through the same loaders as the features job.
ENDS = [(), OPTIONAL]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("every-input")
    generate(GenerateConfig(customers=1_000, seed=5), folder)
    return folder


def data_folder(base: Path, target: Path, tables: tuple[str, ...], fmt: str) -> Path:
    target.mkdir(parents=True)
    for name in ("transactions", *tables):
        if fmt == "parquet":
            shutil.copy(base / f"{name}.parquet", target / f"{name}.parquet")
        else:
            pd.read_parquet(base / f"{name}.parquet").to_csv(target / f"{name}.csv", index=False)
    return target


def churn(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"churn {' '.join(args)} raised {result.exception!r}:\n{result.output}")
    assert "Traceback" not in result.output
    return result


def tables_id(tables: tuple[str, ...]) -> str:
    return "+".join(("transactions", *tables))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("tables", SUBSETS, ids=tables_id)
def test_features_on_every_input(tables, fmt, base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = str(data_folder(base, tmp_path / "data", tables, fmt))
    features = churn("features", "--data", data, "--as-of", "2025-10-01", "--out", "f.parquet")
    assert features.exit_code == 0, features.output
    built = pd.read_parquet("f.parquet")
    assert len(built) > 500
    if "events" not in tables:
        assert (built["email_open_30d"] == 0).all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("tables", ENDS, ids=tables_id)
def test_every_command_runs(tables, fmt, base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    migrated_store(tmp_path)  # where the command finds its store: ./mlflow.db
    data = str(data_folder(base, tmp_path / "data", tables, fmt))

    trained = churn("train", "churn", "--data", data, "--cutoffs", "3", "--max-trees", "60",
                    "--learning-rate", "0.1")
    assert trained.exit_code == 0, trained.output
    assert "on the test cutoff 2025-10-01" in trained.output
    promoted = churn("promote", "churn", "--min-gain", "-1")
    assert promoted.exit_code == 0, promoted.output

    scored = churn("score", "--data", data, "--as-of", "2026-01-01", "--out", "s.parquet")
    assert scored.exit_code == 0, scored.output
    scores = pd.read_parquet("s.parquet")
    assert len(scores) > 500 and scores["churn_probability"].notna().any()
    if "customers" not in tables:
        assert scores["contactable"].all()

    uplift = churn("train", "uplift", "--data", data, "--learner", "t_learner",
                   "--rounds", "20")
    if "exposures" in tables:
        assert uplift.exit_code == 0, uplift.output
        assert "Nested out of fold" in uplift.output
    else:
        assert uplift.exit_code == 1
        assert "error: uplift needs an exposures table" in uplift.output
    evaluated = churn("evaluate", "uplift", "--data", data, "--learner", "t_learner",
                      "--rounds", "20", "--folds", "2", "--out", "oof.parquet")
    if "exposures" in tables:
        assert evaluated.exit_code == 0, evaluated.output
        assert len(pd.read_parquet("oof.parquet")) > 300
    else:
        assert evaluated.exit_code == 1
        assert "error: uplift needs an exposures table" in evaluated.output
    backtest = churn("backtest", "churn", "--data", data, "--origins", "2025-10-01",
                     "--cutoffs", "2", "--max-trees", "30")
    assert backtest.exit_code == 0, backtest.output
    assert "Mean +- sd over 1 origins" in backtest.output
