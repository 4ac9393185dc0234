"""The batch job into Parquet and into the machine's PostgreSQL: content, atomicity, reruns."""

from __future__ import annotations

import dataclasses
import fcntl
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from mlflow import MlflowClient
from rich.progress import Progress

import serving.batch as batch
from churn.model_steps import score
from features.contract import ContractError
from features.job import FeaturesJobConfig, run_features
from features.labels import ChurnLabelConfig
from features.synthetic import GenerateConfig, generate
from operations.campaign import PlanConfig, plan_campaign, write_plan
from operations.runlog import read_scores
from serving.batch import PostgresDestination, ScoreJobConfig, parse_postgres_url, run_score
from serving.champion import DataCheck, NoChampionError, load_champion
from serving.policy import SegmentPolicy
from serving.scoring import OUTPUT_COLUMNS
from tests.conftest import build, crown, process_env
from training.config import UpliftTrainConfig
from training.promote import promote
from training.tracking import log_churn_run
from training.train_churn import train_churn
from training.train_uplift import train_uplift
from training.uplift_tracking import log_uplift_run

AS_OF = date(2025, 10, 1)
BIN = Path(sys.executable).parent


@pytest.fixture
def champion(mlflow_store, trained, churn_config):
    log_churn_run(churn_config, trained)
    promote("churn")
    return load_champion("churn")


def score_to(out: str, data: Path, loaded, as_of: date = AS_OF):
    return run_score(ScoreJobConfig(data=data, as_of=as_of, out=out, memory_limit="1GB"), loaded)


def test_parquet_scores_follow_the_model_and_the_consent_rules(champion, synthetic_data,
                                                               tmp_path, trained):
    data, _ = synthetic_data
    result = score_to(str(tmp_path / "scores.parquet"), data, champion)
    scores = pd.read_parquet(tmp_path / "scores.parquet").set_index("customer_id")
    assert list(scores.reset_index().columns) == list(OUTPUT_COLUMNS)
    assert result.rows == len(scores) == scores.index.nunique()
    assert set(scores["model_versions"]) == {"churn:v1"}

    customers = pd.read_parquet(data / "customers.parquet").set_index("customer_id")
    withheld = customers.index[customers["profiling_consent"] == False]  # noqa: E712
    assert len(withheld) > 0 and not scores.index.isin(withheld).any()
    no_mail = customers.index[customers["marketing_consent"] == False]  # noqa: E712
    scored_no_mail = scores.index.intersection(no_mail)
    assert len(scored_no_mail) > 0
    assert not scores.loc[scored_no_mail, "contactable"].any()
    assert (scores.loc[scored_no_mail, "segment"] != "win_back").all()

    # The same probabilities as the trained Booster on the features job's output, although
    # the champion scores with the compiled forest.
    assert champion.model.evaluator is not None
    features = build(data, AS_OF, tmp_path / "features.parquet")
    in_base = features.index[features["recency_days"] < 365]
    want = trained.model.predict_proba(features.loc[in_base])
    np.testing.assert_array_equal(scores.loc[in_base, "churn_probability"], want)
    assert scores.drop(in_base)["churn_probability"].isna().all()

    at_risk = scores["churn_probability"] >= 0.5
    listed = scores.loc[at_risk, "reasons"]
    assert listed.map(len).gt(0).all()
    first = listed.iloc[0][0]
    assert set(first) == {"feature", "label", "value", "unit", "typical", "contribution", "text"}
    assert first["contribution"] > 0 and " " in first["label"]
    assert first["text"].startswith(first["label"] + ": ") and "typical customer" in first["text"]
    assert first["feature"] not in champion.model.quiet
    assert scores.loc[~at_risk, "reasons"].isna().all()
    # Risk bands follow the policy's percentile cuts: band and percentile never disagree.
    scored = scores.dropna(subset=["churn_probability"])
    assert (scored.loc[scored["churn_percentile"] >= 80, "risk_band"] == "high").all()
    assert (scored.loc[scored["churn_percentile"] < 50, "risk_band"] == "low").all()
    assert scored["risk_band"].eq("high").mean() < 0.5
    assert scores.drop(in_base)["risk_band"].isna().all()
    ranked = scored.sort_values("churn_probability")["churn_percentile"]
    assert ranked.between(0, 100).all() and ranked.is_monotonic_increasing
    assert ranked.iloc[-1] > 90 and ranked.iloc[0] < 10
    assert set(scores["segment"]) <= {"new", "active", "at_risk", "lapsed", "win_back"}
    assert result.summary["customers"].sum() == len(scores)


def count_rows(url: str) -> dict[str, int]:
    dsn, table = parse_postgres_url(url)
    with psycopg.connect(dsn) as con:
        rows = con.execute(f"SELECT as_of::text, count(*) FROM {table} GROUP BY 1").fetchall()
    return dict(rows)


def test_postgres_rerun_replaces_and_other_dates_stay(champion, synthetic_data,
                                                       postgres_database):
    data, _ = synthetic_data
    url = f"{postgres_database}?table=churn_scores"
    first = score_to(url, data, champion)
    assert count_rows(url) == {"2025-10-01": first.rows}
    score_to(url, data, champion)
    assert count_rows(url) == {"2025-10-01": first.rows}
    other = score_to(url, data, champion, date(2025, 9, 1))
    assert count_rows(url) == {"2025-10-01": first.rows, "2025-09-01": other.rows}


def test_postgres_rows_carry_reasons_as_json_and_an_older_table_is_refused(
        champion, synthetic_data, postgres_database, tmp_path):
    data, _ = synthetic_data
    url = f"{postgres_database}?table=scores_json"
    score_to(url, data, champion)
    score_to(str(tmp_path / "same.parquet"), data, champion)
    parquet = pd.read_parquet(tmp_path / "same.parquet").set_index("customer_id")
    dsn, _ = parse_postgres_url(url)
    with psycopg.connect(dsn) as con:
        rows = con.execute("SELECT customer_id, reasons, risk_band, churn_percentile "
                           "FROM scores_json WHERE reasons IS NOT NULL "
                           "ORDER BY customer_id LIMIT 20").fetchall()
        con.execute("CREATE TABLE old_scores (customer_id text, as_of date, "
                    "churn_probability double precision, reasons text)")
    assert rows
    for customer, reasons, band, percentile in rows:
        want = parquet.loc[customer]
        assert [r["feature"] for r in reasons] == [r["feature"] for r in want["reasons"]]
        assert band == want["risk_band"] and percentile == want["churn_percentile"]
    with pytest.raises(ContractError, match=r"old_scores has other columns.*missing "
                                            r"\[.*'risk_band'.*\?table=NAME"):
        score_to(f"{postgres_database}?table=old_scores", data, champion)


def test_scores_get_the_features_permissions_and_a_linked_out_stays_a_link(
        champion, synthetic_data, tmp_path):
    data, _ = synthetic_data
    features = run_features(FeaturesJobConfig(data=data, as_of=AS_OF,
                                              out=tmp_path / "features.parquet"))
    score_to(str(tmp_path / "scores.parquet"), data, champion)
    mode = (tmp_path / "features.parquet").stat().st_mode & 0o777
    assert features.rows > 0 and mode & 0o044  # others may read, by the umask
    assert (tmp_path / "scores.parquet").stat().st_mode & 0o777 == mode
    (tmp_path / "shared").mkdir()
    (tmp_path / "latest.parquet").symlink_to(tmp_path / "shared" / "scores.parquet")
    score_to(str(tmp_path / "latest.parquet"), data, champion)
    assert (tmp_path / "latest.parquet").is_symlink()
    assert len(pd.read_parquet(tmp_path / "shared" / "scores.parquet")) == features.rows


def start_scoring(out: str, data: Path, cwd: Path, store: str,
                  capture: bool = False) -> subprocess.Popen:
    env = process_env(MLFLOW_TRACKING_URI=store)
    return subprocess.Popen([str(BIN / "churn"), "score", "--data", str(data), "--as-of",
                             "2025-09-01", "--out", out], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if capture else subprocess.DEVNULL)


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "the job never reached the point to kill it"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_run_leaves_the_earlier_postgres_rows(champion, synthetic_data,
                                                     postgres_database, mlflow_store, tmp_path):
    data, _ = synthetic_data
    url = f"{postgres_database}?table=churn_scores"
    earlier = score_to(url, data, champion)
    dsn, _ = parse_postgres_url(url)
    with psycopg.connect(dsn, autocommit=True) as watcher:
        def staging() -> bool:
            # The job's open transaction has created its staging table (not yet visible to
            # other sessions) and not committed.
            return watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND datname = current_database() AND state <> 'idle' "
                "AND query LIKE '%scores_staging%'").fetchone()[0] > 0

        kill_when(start_scoring(url, data, tmp_path, mlflow_store), staging)
    assert count_rows(url) == {"2025-10-01": earlier.rows}


def test_killed_run_leaves_the_earlier_parquet(champion, synthetic_data, mlflow_store, tmp_path):
    data, _ = synthetic_data
    out = tmp_path / "scores.parquet"
    score_to(str(out), data, champion)
    before = out.read_bytes()

    def writing() -> bool:
        return any(tmp_path.glob(f".{out.name}.*.tmp"))

    def writing_and_recorded() -> bool:
        experiment = MlflowClient().get_experiment_by_name("scoring")
        return writing() and experiment is not None and bool(
            MlflowClient().search_runs([experiment.experiment_id]))

    kill_when(start_scoring(str(out), data, tmp_path, mlflow_store), writing_and_recorded)
    assert out.read_bytes() == before
    assert writing()  # the killed run's temporary file is left behind ...
    scoring = MlflowClient().get_experiment_by_name("scoring").experiment_id
    [killed] = MlflowClient().search_runs([scoring])
    assert killed.info.status == "RUNNING"
    # ... until the next run, which finishes, replaces the output and clears it away, and
    # marks the killed run FAILED.
    assert start_scoring(str(out), data, tmp_path, mlflow_store).wait(timeout=300) == 0
    assert set(pd.read_parquet(out)["as_of"].astype(str)) == {"2025-09-01"}
    assert not writing()
    statuses = {r.info.run_id: r.info.status for r in MlflowClient().search_runs([scoring])}
    assert statuses.pop(killed.info.run_id) == "FAILED"
    assert list(statuses.values()) == ["FINISHED"]


def test_the_database_password_is_never_printed_or_recorded(champion, synthetic_data,
                                                             postgres_database, mlflow_store,
                                                             tmp_path):
    data, _ = synthetic_data
    url = postgres_database.replace("://postgres@", "://postgres:hunter2@") + "?table=masked"
    assert "hunter2" in url
    done = subprocess.run([str(BIN / "churn"), "score", "--data", str(data), "--as-of",
                           "2025-09-01", "--out", url], cwd=tmp_path, capture_output=True,
                          check=False, text=True, env=process_env(MLFLOW_TRACKING_URI=mlflow_store,
                                                     COLUMNS="300"), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert "postgres@127.0.0.1" in done.stdout
    [run] = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("scoring").experiment_id])
    assert "hunter2" not in str(run.data.tags) + str(run.data.params)


def test_a_second_writer_of_the_same_parquet_is_refused(champion, synthetic_data, tmp_path):
    data, _ = synthetic_data
    out = tmp_path / "scores.parquet"
    score_to(str(out), data, champion)
    before = out.read_bytes()
    with (tmp_path / f".{out.name}.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run in progress
        held.truncate(0)
        held.write("pid 4242")
        held.flush()
        with pytest.raises(ContractError, match=r"another scoring run \(pid 4242\) is "
                                                r"writing this file"):
            score_to(str(out), data, champion, date(2025, 9, 1))
    assert out.read_bytes() == before
    score_to(str(out), data, champion, date(2025, 9, 1))  # once it is let go
    assert set(pd.read_parquet(out)["as_of"].astype(str)) == {"2025-09-01"}


def test_two_runs_at_once_leave_one_whole_output(champion, synthetic_data, mlflow_store,
                                                 postgres_database, tmp_path):
    """Started together, to one Parquet file and to one PostgreSQL table: every run either
    succeeds or says why not, and what is left is one run's rows, whole."""
    data, _ = synthetic_data
    url = f"{postgres_database}?table=raced"
    for out in (str(tmp_path / "raced.parquet"), url):
        runs = [start_scoring(out, data, tmp_path, mlflow_store, capture=True) for _ in range(2)]
        results = [(run.wait(timeout=300), run.stderr.read().decode()) for run in runs]
        assert any(code == 0 for code, _ in results), results
        for code, err in results:
            assert code == 0 or "another scoring run" in err, err
        if out == url:
            rows = count_rows(url)  # (customer_id, as_of) is the table's key
        else:
            written = pd.read_parquet(out)
            assert written["customer_id"].is_unique
            rows = dict(written["as_of"].astype(str).value_counts())
            assert not list(tmp_path.glob(".raced.parquet.*.tmp"))
        assert list(rows) == ["2025-09-01"] and rows["2025-09-01"] > 0, rows


def test_win_back_is_who_the_campaign_would_move(champion, uplift_trained, synthetic_data,
                                                 tmp_path):
    cfg, result = uplift_trained
    crown("uplift", log_uplift_run(cfg, result).model_version)
    loaded = load_champion("churn", uplift=True)
    data, _ = synthetic_data
    score_to(str(tmp_path / "scores.parquet"), data, loaded)
    scores = pd.read_parquet(tmp_path / "scores.parquet").set_index("customer_id")
    assert set(scores["model_versions"]) == {"churn:v1,uplift:v1"}
    features = build(data, AS_OF, tmp_path / "features.parquet").loc[scores.index]
    arm = result.model.arms[0]
    predicted = result.model.predict(features)
    for column in ("uplift", "uplift_conversion", "uplift_order_value"):
        name = "uplift_spend" if column == "uplift" else column
        np.testing.assert_allclose(scores[name], predicted[f"{column}_{arm}"], rtol=1e-9)
    assert scores["uplift_conversion"].between(-1, 1).all()
    policy = SegmentPolicy.load()
    lapsed = features["recency_days"] > loaded.model.label.base_days
    at_risk = scores["churn_probability"].fillna(0) >= policy.at_risk_probability
    expected = (lapsed | at_risk) & scores["contactable"] & (
        scores["uplift_spend"] > policy.contact_cost)
    assert expected.any() and (~expected & (lapsed | at_risk)).any()
    assert ((scores["segment"] == "win_back") == expected).all()


def test_an_uplift_champion_from_a_flat_table_is_refused_for_scoring(champion, tmp_path):
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"x": rng.normal(size=2000), "group": rng.choice(["a", "b"], 2000),
                          "spend": rng.gamma(1, 10, 2000)})
    table.to_csv(tmp_path / "flat.csv", index=False)
    cfg = UpliftTrainConfig(table=tmp_path / "flat.csv", treatments=("group=a",),
                            control="group=b", learner="t_learner", selection_folds=2)
    crown("uplift", log_uplift_run(cfg, train_uplift(cfg)).model_version)
    with pytest.raises(NoChampionError, match="trained on a flat table"):
        load_champion("churn", uplift=True)
    assert load_champion("churn").uplift is None


def test_a_table_named_like_the_staging_table_gets_its_rows(champion, synthetic_data,
                                                            postgres_database):
    data, _ = synthetic_data
    url = f"{postgres_database}?table=scores_staging"
    result = score_to(url, data, champion)
    assert count_rows(url) == {"2025-10-01": result.rows}


def test_a_postgres_password_never_reaches_a_message():
    with pytest.raises(ContractError) as err:
        parse_postgres_url("postgresql://me:hunter2@db:5432/crm")
    assert "hunter2" not in str(err.value) and "me:***@db:5432/crm" in str(err.value)
    with pytest.raises(ContractError) as err:
        run_score_to_nowhere = PostgresDestination(
            "postgresql://me:hunter2@127.0.0.1:1/crm?table=t&connect_timeout=2", AS_OF)
        del run_score_to_nowhere
    assert "hunter2" not in str(err.value) and "cannot connect" in str(err.value)


def test_postgres_url_needs_a_plain_table_name():
    assert parse_postgres_url("postgresql://u@h:5432/db?table=s.scores&sslmode=disable") == (
        "postgresql://u@h:5432/db?sslmode=disable", "s.scores")
    with pytest.raises(ContractError, match=r"table=Scores has capitals.*use table=scores"):
        parse_postgres_url("postgresql://h/db?table=Scores")
    for bad in ("postgresql://h/db", "postgresql://h/db?table=x;drop", "postgresql://h/db?table="):
        with pytest.raises(ContractError, match=r"add \?table=NAME"):
            parse_postgres_url(bad)


def test_the_scoring_base_is_the_models_own(champion, synthetic_data, tmp_path):
    """A model trained for a 180-day base speaks for that base only; the rest are lapsed."""
    data, _ = synthetic_data
    champion.model.label = ChurnLabelConfig(horizon_days=90, base_days=180)
    score_to(str(tmp_path / "s.parquet"), data, champion)
    scores = pd.read_parquet(tmp_path / "s.parquet").set_index("customer_id")
    features = build(data, AS_OF, tmp_path / "f.parquet").loc[scores.index]
    in_base = features["recency_days"] <= 180
    assert in_base.any() and (~in_base & features["recency_days"].notna()).any()
    assert (scores["churn_probability"].notna() == in_base).all()
    assert (scores.loc[~in_base & features["recency_days"].notna(), "segment"] == "lapsed").all()


def test_as_of_outside_the_data_is_refused_and_writes_nothing(champion, synthetic_data,
                                                              tmp_path):
    data, _ = synthetic_data  # orders from 2023-01-01 to 2025-12-31
    out = tmp_path / "s.parquet"
    with pytest.raises(ContractError, match=r"^as_of 2030-01-01: 1,462 days after the data "
                                            r"ends; the data spans 2023-01-0\d \.\. 2025-12-31, "
                                            r"so the latest as-of is 2026-01-31"):
        score_to(str(out), data, champion, date(2030, 1, 1))
    with pytest.raises(ContractError, match=r"^as_of 1990-01-01: on or before the first order"):
        score_to(str(out), data, champion, date(1990, 1, 1))
    assert not out.exists()
    stale = score_to(str(out), data, champion, date(2026, 1, 20))
    assert stale.warnings
    assert "the newest order is 20 days before the as-of date" in stale.warnings[0]
    assert score_to(str(out), data, champion, date(2026, 1, 1)).warnings == []


@pytest.mark.parametrize("out, message", [
    ("scores", r"out scores: use a \.parquet file or a postgresql:// URL"),
    ("scores.csv", r"out scores\.csv: use a \.parquet file"),
    ("postgresql://127.0.0.1/db", r"out postgresql://127\.0\.0\.1/db: add \?table=NAME"),
])
def test_a_destination_it_cannot_write_is_refused_before_any_work(tmp_path, out, message):
    """The data here does not exist and no champion is loaded: the destination is checked
    first, so a typo in it costs nothing."""
    cfg = ScoreJobConfig(data=tmp_path / "missing", as_of=AS_OF, out=out)
    with pytest.raises(ContractError, match=message):
        run_score(cfg, loaded=None)


def test_each_dataset_keeps_its_own_champion(mlflow_store, trained, churn_config, uplift_trained,
                                             tmp_path):
    """A second business under its own model name leaves the first's champion alone, and is
    never scored with models trained on the first's data unless asked."""
    log_churn_run(churn_config, trained)
    promote("churn")
    crown("uplift", log_uplift_run(*uplift_trained).model_version)
    other = tmp_path / "other"
    generate(GenerateConfig(customers=1_500, seed=23), other)
    other_cfg = dataclasses.replace(churn_config, data=other)
    log_churn_run(other_cfg, train_churn(other_cfg), registered_name="other-churn")
    promote("other-churn", min_gain=-1.0)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("other-churn", "champion").version) == "1"
    assert client.get_model_version("other-churn", "1").tags["data_source"] == str(
        other.resolve())

    def score(**options):
        cfg = ScoreJobConfig(data=other, as_of=AS_OF, out=str(tmp_path / "s.parquet"),
                             memory_limit="1GB", **options)
        return run_score(cfg, load_champion(cfg.model_name, uplift=cfg.uplift,
                                            uplift_name=cfg.uplift_model_name,
                                            check=DataCheck(cfg.data, cfg.allow_data_mismatch)))

    with pytest.raises(NoChampionError, match=r"'churn' champion v1 was trained on .*, not on "
                                              r".*other.*model_name NAME.*allow_data_mismatch"):
        score(model_name="churn")
    with pytest.raises(NoChampionError, match=r"'uplift' champion v1 was trained on .*"
                                              r"no_uplift"):
        score(model_name="other-churn")
    done = score(model_name="other-churn", uplift=False)
    assert set(pd.read_parquet(tmp_path / "s.parquet")["model_versions"]) == {"other-churn:v1"}
    assert done.rows > 1000
    assert score(model_name="churn", allow_data_mismatch=True).rows == done.rows


def test_postgres_scoring_run_is_logged_beside_the_scores(champion, synthetic_data,
                                                          postgres_database):
    data, _ = synthetic_data
    url = f"{postgres_database}?table=churn_scores"
    result = score(ScoreJobConfig(data=data, as_of=AS_OF, out=url, memory_limit="1GB"),
                   Progress(disable=True))
    dsn, _ = parse_postgres_url(url)
    with psycopg.connect(dsn) as con:
        logged = con.execute("SELECT run_id, as_of, rows, scored, segments, model_versions, "
                             "churn_quantiles FROM churn_scores_runs").fetchall()
    assert len(logged) == 1
    run_id, as_of, rows, scored, segments, versions, quantiles = logged[0]
    assert (run_id, as_of, rows, versions) == (result.run_id, AS_OF, result.rows, "churn:v1")
    assert sum(segments.values()) == rows and 0 < scored < rows
    assert 0 < quantiles["p10"] < quantiles["p50"] < quantiles["p90"] < 1
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["destination"] == url
    back = read_scores(run.data.params["destination"], AS_OF)
    assert len(back) == rows and back["churn_probability"].notna().sum() == scored


def test_a_campaign_plan_draws_from_scores_in_postgres(champion, synthetic_data,
                                                      postgres_database, tmp_path):
    data, _ = synthetic_data
    url = f"{postgres_database}?table=churn_scores"
    score_to(url, data, champion, date(2025, 9, 1))
    score_to(url, data, champion)
    plan = plan_campaign(PlanConfig(scores=url, segment="at_risk", holdout=0.2,
                                    campaign="pg", out=tmp_path / "pg", stratify="risk"))
    paths = write_plan(plan)
    dsn, _ = parse_postgres_url(url)
    with psycopg.connect(dsn) as con:
        at_risk = {r[0] for r in con.execute(
            "SELECT customer_id FROM churn_scores WHERE as_of = %s AND segment = 'at_risk' "
            "AND contactable", (AS_OF,)).fetchall()}
    exposures = pd.read_parquet(paths["exposures"])
    assert plan.as_of == AS_OF  # the table's latest as-of
    assert set(exposures["customer_id"]) == at_risk
    assert (exposures["treatment"] == 0).mean() == pytest.approx(0.2, abs=0.02)


def test_a_chunk_that_fails_to_write_fails_the_run_and_keeps_the_earlier_output(
        champion, synthetic_data, tmp_path, monkeypatch):
    """Chunks are written on a thread of their own while the next is scored: a failed
    write still ends the run with its error, and the earlier output stays as it was."""
    data, _ = synthetic_data
    out = tmp_path / "scores.parquet"
    score_to(str(out), data, champion)
    before = out.read_bytes()
    monkeypatch.setattr(batch, "CHUNK_ROWS", 400)
    written = []

    def write(self, chunk):
        if len(written) == 2:
            raise OSError("No space left on device")
        written.append(len(chunk))

    monkeypatch.setattr(batch.ParquetDestination, "write", write)
    with pytest.raises(OSError, match="No space left"):
        score_to(str(out), data, champion)
    assert written == [400, 400]
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(f".{out.name}.*.tmp"))
