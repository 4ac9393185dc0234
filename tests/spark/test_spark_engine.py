"""The Spark engine on local[2] gives what the DuckDB engine gives: the same features, the
same contract findings, the same scores and segments, the same backtest."""

from __future__ import annotations

import dataclasses
import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from features.contract import ContractError
from features.engines import Engine
from features.job import FeaturesJobConfig, run_features
from features.registry import feature_names
from features.spark_session import spark_problem
from features.validation import OnBadRows
from serving.batch import ScoreJobConfig, run_score
from serving.champion import load_champion
from serving.scoring import output_columns
from tests.conftest import crown, shared_file, write_table
from training.backtest import run_backtest
from training.promote import promote
from training.tracking import log_churn_run
from training.uplift_tracking import log_uplift_run

PROBLEM = spark_problem()
if PROBLEM:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the Spark tests must run under CI: {PROBLEM}", pytrace=False)
    pytest.skip(f"Spark tests skipped: {PROBLEM}", allow_module_level=True)

AS_OF = date(2025, 10, 1)
CDNOW_AS_OF = date(1998, 1, 1)
RELATIVE = 1e-9


@pytest.fixture(scope="module", autouse=True)
def spark():
    """One local[2] session for the file (the engine's own getOrCreate finds it)."""
    from features.spark_session import spark_session  # noqa: PLC0415

    session = spark_session("local[2]", driver_memory="2g", shuffle_partitions=4)
    yield session
    session.stop()


def test_a_job_that_ran_the_driver_out_names_the_memory_it_had(monkeypatch):
    """Not the default a new session would get: the running one was started with 2g."""
    from features.spark_session import SparkStopped, spark_job_errors  # noqa: PLC0415

    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "6g")
    with pytest.raises(SparkStopped, match="2g here"), spark_job_errors():
        raise RuntimeError("java.lang.OutOfMemoryError: Java heap space")


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cdnow")
    (folder / "transactions.csv").symlink_to(shared_file("cdnow/transactions.csv"))
    return folder


def features_on(engine: Engine, data: Path, as_of: date, out: Path, **options) -> pd.DataFrame:
    run_features(FeaturesJobConfig(data=data, as_of=as_of, out=out, engine=engine, **options))
    return pd.read_parquet(out).set_index("customer_id").sort_index()


def assert_same_features(spark_rows: pd.DataFrame, duckdb_rows: pd.DataFrame) -> None:
    assert list(spark_rows.index) == list(duckdb_rows.index)
    assert list(spark_rows.columns) == list(duckdb_rows.columns)
    assert (pd.to_datetime(spark_rows["as_of"]) == pd.to_datetime(duckdb_rows["as_of"])).all()
    for name in feature_names():
        a, b = spark_rows[name].to_numpy(float), duckdb_rows[name].to_numpy(float)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        np.testing.assert_allclose(a, b, rtol=RELATIVE, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("which", ["generated", "cdnow"])
def test_both_engines_build_the_same_features(which, synthetic_data, cdnow, tmp_path):
    data, as_of = (synthetic_data[0], AS_OF) if which == "generated" else (cdnow, CDNOW_AS_OF)
    on_duckdb = features_on(Engine.duckdb, data, as_of, tmp_path / "duckdb.parquet")
    on_spark = features_on(Engine.spark, data, as_of, tmp_path / "spark.parquet")
    assert len(on_spark) == (23_570 if which == "cdnow" else len(on_duckdb)) > 1000
    assert (tmp_path / "spark.parquet").is_dir()
    assert_same_features(on_spark, on_duckdb)


def broken_tables(folder: Path) -> Path:
    """Transactions over two files with a bad date, a bad amount, a blank id and a row
    loaded twice; customers with a repeated id."""
    folder.mkdir()
    (folder / "transactions").mkdir()
    rows = [("C1", "o1", "2025-01-03", "10.5"), ("C2", "o2", "2025-01-04", "20"),
            ("C3", "o3", "not a date", "5"), ("C4", "o4", "2025-02-01", "abc")]
    write_table(folder / "transactions", "a", pd.DataFrame(
        rows, columns=["customer_id", "order_id", "ordered_at", "amount"]))
    more = [("C5", "o5", "2025-03-01", "7"), (" ", "o6", "2025-03-02", "8"),
            ("C1", "o1", "2025-01-03", "10.5"), ("C6", "o7", "2025-03-04", "9")]
    write_table(folder / "transactions", "b", pd.DataFrame(
        more, columns=["customer_id", "order_id", "ordered_at", "amount"]))
    write_table(folder, "customers", pd.DataFrame({
        "customer_id": ["C1", "C2", "C1"], "signed_up_at": ["2024-01-01"] * 3}))
    return folder


def contract_error(engine: Engine, data: Path, out: Path, **options) -> str:
    with pytest.raises(ContractError) as caught:
        run_features(FeaturesJobConfig(data=data, as_of=date(2025, 4, 1), out=out,
                                       engine=engine, **options))
    return str(caught.value)


def test_both_engines_find_the_same_bad_rows_in_the_same_words(tmp_path):
    data = broken_tables(tmp_path / "data")
    on_duckdb = contract_error(Engine.duckdb, data, tmp_path / "d.parquet")
    on_spark = contract_error(Engine.spark, data, tmp_path / "s.parquet")
    assert "b.csv row 3: 'o1'" in on_duckdb and "a.csv row 3: 'not a date'" in on_duckdb
    assert "customers: 1 row of 3 break the contract" in on_duckdb
    assert on_spark == on_duckdb
    assert not (tmp_path / "s.parquet").exists()


ONE_FAULT = {  # each breaks one rule only, so the screen alone must send it to the exact check
    "a row loaded twice": ("transactions", 2, ("C1", "o1", "2025-01-03", "10.5")),
    "an infinite amount": ("transactions", 3, ("C4", "o4", "2025-02-01", "inf")),
    "a date after today": ("transactions", 3, ("C4", "o4", "2999-02-01", "4")),
    "a repeated customer": ("customers", 1, ("C1", "2024-02-01")),
}


@pytest.mark.parametrize("fault", list(ONE_FAULT))
def test_a_table_with_one_fault_is_refused_in_the_same_words(fault, tmp_path):
    table, row, bad = ONE_FAULT[fault]
    rows = {"transactions": [("C1", "o1", "2025-01-03", "10.5"), ("C2", "o2", "2025-01-04", "20"),
                             ("C3", "o3", "2025-01-05", "5")],
            "customers": [("C1", "2024-01-01"), ("C2", "2024-01-01")]}
    rows[table].insert(row - 1, bad)
    columns = {"transactions": ["customer_id", "order_id", "ordered_at", "amount"],
               "customers": ["customer_id", "signed_up_at"]}
    data = tmp_path / "data"
    data.mkdir()
    for name, listed in rows.items():
        write_table(data, name, pd.DataFrame(listed, columns=columns[name]))
    on_duckdb = contract_error(Engine.duckdb, data, tmp_path / "d.parquet")
    assert f"{table}: 1 row of {len(rows[table])} break the contract" in on_duckdb
    assert contract_error(Engine.spark, data, tmp_path / "s.parquet") == on_duckdb


def test_quarantine_sets_aside_the_same_rows_with_the_same_reasons(tmp_path):
    data = broken_tables(tmp_path / "data")
    rejects = {}
    for engine in Engine:
        run_features(FeaturesJobConfig(data=data, as_of=date(2025, 4, 1),
                                       out=tmp_path / f"{engine}.parquet", engine=engine,
                                       on_bad_rows=OnBadRows.quarantine,
                                       rejects=tmp_path / f"{engine}-rejects"))
        rejects[engine] = pd.read_csv(tmp_path / f"{engine}-rejects" / "transactions.rejects.csv",
                                      dtype=str).sort_values("_where", ignore_index=True)
    assert len(rejects[Engine.duckdb]) == 4
    pd.testing.assert_frame_equal(rejects[Engine.spark], rejects[Engine.duckdb])
    kept = {e: pd.read_parquet(tmp_path / f"{e}.parquet").set_index("customer_id").sort_index()
            for e in Engine}
    assert_same_features(kept[Engine.spark], kept[Engine.duckdb])


def test_a_failed_spark_run_keeps_the_earlier_output(synthetic_data, tmp_path):
    out = tmp_path / "features.parquet"
    first = features_on(Engine.spark, synthetic_data[0], AS_OF, out)
    data = broken_tables(tmp_path / "data")
    contract_error(Engine.spark, data, out)
    pd.testing.assert_frame_equal(pd.read_parquet(out).set_index("customer_id").sort_index(),
                                  first)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def champions(mlflow_store, trained, churn_config, uplift_trained):
    """Churn and uplift champions in a fresh store."""
    log_churn_run(churn_config, trained)
    promote("churn")
    cfg, result = uplift_trained
    crown("uplift", log_uplift_run(cfg, result).model_version)
    return load_champion("churn", uplift=True)


def scores_on(engine: Engine, data: Path, out: str, loaded, **options):
    cfg = ScoreJobConfig(data=data, as_of=AS_OF, out=out, memory_limit="1GB", engine=engine,
                         **options)
    return run_score(cfg, loaded)


def assert_same_scores(spark_rows: pd.DataFrame, duckdb_rows: pd.DataFrame, loaded) -> None:
    assert list(spark_rows.columns) == list(duckdb_rows.columns) == output_columns(loaded)
    assert list(spark_rows["customer_id"]) == list(duckdb_rows["customer_id"])
    for column in spark_rows.columns:
        a, b = spark_rows[column], duckdb_rows[column]
        if column in ("reasons",):
            assert a.isna().equals(b.isna())
            assert [None if r is None else [x["feature"] for x in r] for r in a] == \
                [None if r is None else [x["feature"] for x in r] for r in b]
        elif pd.api.types.is_float_dtype(b):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=column)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), column


def test_spark_scores_equal_duckdb_scores_in_every_column(champions, synthetic_data, tmp_path):
    data, _ = synthetic_data
    on_duckdb = scores_on(Engine.duckdb, data, str(tmp_path / "d.parquet"), champions)
    on_spark = scores_on(Engine.spark, data, str(tmp_path / "s.parquet"), champions)
    d = pd.read_parquet(tmp_path / "d.parquet")
    s = pd.read_parquet(tmp_path / "s.parquet")
    assert len(s) == on_spark.rows == on_duckdb.rows > 1000
    assert s["segment"].nunique() >= 4 and s["churn_probability"].notna().sum() > 500
    assert_same_scores(s, d, champions)
    pd.testing.assert_frame_equal(on_spark.summary, on_duckdb.summary, check_dtype=False)
    np.testing.assert_allclose(on_spark.quantiles, on_duckdb.quantiles, rtol=1e-12)
    assert on_spark.scored == on_duckdb.scored and on_spark.data_span == on_duckdb.data_span
    # Sums added in another order can differ in the last bit (the features agree to 1e-12),
    # so a value on a decile edge may be counted on either side of it: a row or two per
    # column moves, never a row lost.
    for column, counts in on_duckdb.profile.counts.items():
        assert on_spark.profile.counts[column].sum() == counts.sum(), column
        np.testing.assert_allclose(on_spark.profile.counts[column], counts, atol=2,
                                   err_msg=column)


def test_spark_scores_replace_an_as_of_in_postgres(champions, synthetic_data, postgres_database):
    data, _ = synthetic_data
    url = f"{postgres_database}?table=scores"
    scores_on(Engine.duckdb, data, url, champions, reasons=False)
    with psycopg.connect(postgres_database) as con:
        on_duckdb = pd.DataFrame(con.execute("SELECT * FROM scores ORDER BY customer_id")
                                 .fetchall())
    for _ in range(2):  # re-running replaces, never adds
        scores_on(Engine.spark, data, url, champions, reasons=False)
    with psycopg.connect(postgres_database) as con:
        on_spark = pd.DataFrame(con.execute("SELECT * FROM scores ORDER BY customer_id")
                                .fetchall())
        left = con.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE "
                           "'scores_staging_%'").fetchone()[0]
    assert len(on_spark) == len(on_duckdb) > 1000 and left == 0
    pd.testing.assert_frame_equal(on_spark, on_duckdb)


def test_a_spark_backtest_measures_what_a_duckdb_backtest_measures(churn_config):
    cfg = dataclasses.replace(churn_config, train_cutoff_count=2, threads=1)
    origins = (date(2025, 9, 1),)
    on_duckdb = run_backtest(cfg, origins).per_origin
    on_spark = run_backtest(cfg, origins, engine=Engine.spark).per_origin
    pd.testing.assert_frame_equal(on_spark, on_duckdb)
