"""`churn serve` as a real BentoML HTTP server, called over HTTP."""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import hypothesis
import mlflow
import numpy as np
import pandas as pd
import pytest
import schemathesis
from mlflow import MlflowClient
from playwright.sync_api import sync_playwright
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from features.registry import feature_names
from serving.batch import ScoreJobConfig, run_score
from serving.champion import load_champion
from serving.scoring import output_columns
from serving.service import MAX_HISTORY_ROWS, EventIn, TransactionIn, check_history_size
from tests.conftest import (
    build,
    chromium,
    crown,
    crowned_store,
    free_port,
    migrated_store,
    process_env,
    wait_until_up,
)
from training.promote import promote
from training.tracking import log_churn_run
from training.uplift_tracking import log_uplift_run
from training.value_tracking import log_value_run

BIN = Path(sys.executable).parent
TOKEN = "s3cret-token"
AS_OF = date(2025, 10, 1)


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained, churn_config, uplift_trained, propensity_trained,
          value_config, value_trained) -> str:
    """A tracking store whose champions are the session's churn, uplift, propensity and value
    models."""
    folder = tmp_path_factory.mktemp("service-store")
    uri, previous, cwd = migrated_store(folder), mlflow.get_tracking_uri(), Path.cwd()
    os.chdir(folder)
    mlflow.set_tracking_uri(uri)
    try:
        log_churn_run(churn_config, trained)
        promote("churn")
        crown("uplift", log_uplift_run(*uplift_trained).model_version)
        propensity = replace(churn_config, labels=propensity_trained.model.label)
        crown("propensity", log_churn_run(propensity, propensity_trained, "propensity",
                                          "propensity").model_version)
        crown("value", log_value_run(value_config, value_trained).model_version)
    finally:
        mlflow.set_tracking_uri(previous)
        os.chdir(cwd)
    return uri


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path) -> None:
        self.url, self.process, self.log = url, process, log

    def call(self, path: str, body: object = None, raw: bytes | None = None,
             token: str | None = None, method: str = "POST",
             headers: dict[str, str] | None = None) -> tuple[int, dict | str]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = headers or {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


def start_server(store: str, tmp: Path, **env: str) -> Server:
    port = free_port()
    log = tmp / f"server-{port}.log"
    process = subprocess.Popen(
        [str(BIN / "churn"), "serve", "--port", str(port), "--host", "127.0.0.1",
         "--max-request-bytes", env.pop("max_bytes", str(2_000_000))],
        env=process_env(MLFLOW_TRACKING_URI=store, BENTOML_HOME=str(tmp / "bentoml"),
                        PATH=f"{BIN}:{os.environ['PATH']}", **env),
        cwd=tmp, stdout=log.open("w"), stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    wait_until_up(f"{server.url}/readyz", process, log, "churn serve")
    return server


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    running = start_server(store, tmp_path_factory.mktemp("serve"))
    yield running
    stop(running)


@pytest.fixture(scope="module")
def guarded(store, tmp_path_factory):
    running = start_server(store, tmp_path_factory.mktemp("serve-auth"),
                           CHURN_API_TOKEN=TOKEN, max_bytes="20000", CHURN_STALLED_SECONDS="2",
                           CHURN_BODY_SECONDS="5")
    yield running
    stop(running)


def feature_rows(frame: pd.DataFrame) -> list[dict]:
    rows = []
    for record in frame.reset_index().to_dict("records"):
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v)
               for k, v in record.items() if k in ("customer_id", *feature_names())}
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def features(synthetic_data, tmp_path_factory) -> pd.DataFrame:
    data, _ = synthetic_data
    table = build(data, AS_OF, tmp_path_factory.mktemp("f") / "features.parquet")
    return table[table["recency_days"] < 365]


def test_scores_feature_rows_like_the_model(server, features, trained, uplift_trained):
    rows = features.head(25)
    status, body = server.call("/score_features", {"customers": feature_rows(rows)})
    assert status == 200, body
    assert (body["model_name"], body["model_version"]) == ("churn", "1")
    assert (body["uplift_model_name"], body["uplift_model_version"]) == ("uplift", "1")
    got = pd.DataFrame(body["scores"]).set_index("customer_id")
    np.testing.assert_allclose(got.loc[rows.index, "churn_probability"],
                               trained.model.predict_proba(rows), rtol=1e-12)
    uplift = uplift_trained[1].model
    np.testing.assert_allclose(got.loc[rows.index, "uplift_spend"],
                               uplift.predict(rows)[f"uplift_{uplift.arms[0]}"], rtol=1e-9)
    assert "model_versions" not in got.columns  # said once, above the rows
    status, meta = server.call("/metadata", method="GET")
    assert status == 200 and meta["model_version"] == body["model_version"] == "1"
    assert meta["uplift_model"] == {"name": "uplift", "version": "1", "arm": uplift.arms[0]}
    assert meta["features"] == feature_names()
    assert server.call("/metadata", {}) == (200, meta)


def test_online_history_gives_the_batch_probability(server, store, synthetic_data, tmp_path,
                                                    monkeypatch):
    data, _ = synthetic_data
    monkeypatch.chdir(tmp_path)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    try:
        loaded = load_champion(uplift=True)
    finally:
        mlflow.set_tracking_uri(previous)
    run_score(ScoreJobConfig(data=data, as_of=AS_OF, out=str(tmp_path / "s.parquet")), loaded)
    batch = pd.read_parquet(tmp_path / "s.parquet").set_index("customer_id")
    chosen = list(batch.index[batch["churn_probability"].notna()][:5])
    tx = pd.read_parquet(data / "transactions.parquet")
    ev = pd.read_parquet(data / "events.parquet")
    cu = pd.read_parquet(data / "customers.parquet")

    def rows(frame: pd.DataFrame) -> list[dict]:
        part = frame[frame["customer_id"].isin(chosen)].copy()
        for column in part.columns:
            if pd.api.types.is_datetime64_any_dtype(part[column]):
                part[column] = part[column].map(lambda t: None if pd.isna(t) else t.isoformat())
        return json.loads(part.to_json(orient="records"))

    body = {"as_of": AS_OF.isoformat(), "transactions": rows(tx), "events": rows(ev),
            "customers": rows(cu),
            "customer_ids": [*chosen, "nobody-here"]}
    status, answer = server.call("/score_history", body)
    assert status == 200, answer
    online = pd.DataFrame(answer["scores"]).set_index("customer_id").loc[chosen]
    offline = batch.loc[chosen]
    assert list(online.reset_index().columns) == [c for c in output_columns(loaded)
                                                  if c != "model_versions"]
    forecasts = ["purchase_probability_30d", "predicted_orders_90d", "predicted_spend_90d",
                 "p_alive"]
    assert answer["propensity_model_version"] == "1" and answer["value_model_version"] == "1"
    for column in forecasts:
        assert online[column].notna().all(), column
        np.testing.assert_allclose(online[column], offline[column], rtol=1e-9)
    assert [None if pd.isna(d) else d for d in online["next_order_expected_by"]] == [
        None if pd.isna(d) else d.isoformat() for d in offline["next_order_expected_by"]]
    # Every output column agrees with the batch job's, spend tiers included.
    np.testing.assert_array_equal(online["churn_probability"], offline["churn_probability"])
    # DuckDB sums spend in parallel, so spend_365d (and value at risk) may differ in the
    # last bit between a file and a request.
    np.testing.assert_allclose(online["value_at_risk"], offline["value_at_risk"], rtol=1e-12)
    for column in ("uplift_spend", "uplift_conversion", "uplift_order_value"):
        assert online[column].notna().all(), column
        np.testing.assert_allclose(online[column], offline[column], rtol=1e-9)
    for column in ("segment", "spend_tier", "contactable", "risk_band", "churn_percentile"):
        assert online[column].tolist() == offline[column].tolist(), column
    for mine, theirs in zip(online["reasons"], offline["reasons"], strict=True):
        assert (mine is None) == (theirs is None)
        for a, b in zip(mine or [], theirs if theirs is not None else [], strict=True):
            assert (a["feature"], a["label"]) == (b["feature"], b["label"])
            assert a["contribution"] == pytest.approx(b["contribution"], abs=2e-4)
    assert set(online["as_of"]) == {AS_OF.isoformat()}
    assert set(offline["as_of"].astype(str)) == {AS_OF.isoformat()}
    assert answer["skipped"] == [{"customer_id": "nobody-here",
                                  "reason": "no rows before 2025-10-01 in this request"}]

    status, answer = server.call("/score_history", {**body, "customer_ids": ["nobody-here"]})
    assert status == 200, answer
    assert answer["scores"] == [] and [s["customer_id"] for s in answer["skipped"]] == [
        "nobody-here"]


@pytest.mark.parametrize(("raw", "where"), [
    (b'{"customers": [', "json_invalid"),
    (b'{"customers": []}', "too_short"),
    (b'{"customers": [{"customer_id": "a"}]}', "missing"),
    (b'{"wrong": 1}', "missing"),
])
def test_malformed_requests_get_400(server, raw, where):
    status, body = server.call("/score_features", raw=raw)
    assert status == 400
    assert where in json.dumps(body)


def test_wrong_types_nan_inf_and_duplicates_get_400(server, features):
    row = feature_rows(features.head(1))[0]
    for field, value in (("recency_days", "soon"), ("orders_total", [1])):
        status, body = server.call("/score_features", {"customers": [{**row, field: value}]})
        assert status == 400 and field in json.dumps(body)
    text = json.dumps({"customers": [row]})
    for bad in ("NaN", "Infinity", "1e999"):
        raw = text.replace('"orders_total": ' + json.dumps(row["orders_total"]),
                           f'"orders_total": {bad}', 1).encode()
        status, _ = server.call("/score_features", raw=raw)
        assert status == 400, bad
    # Huge but finite: refused with the place, before any sum or model can overflow.
    for field in ("orders_total", "spend_total", "aov_total"):
        status, body = server.call("/score_features", {"customers": [{**row, field: 1e308}]})
        assert status == 400 and body["detail"][0]["loc"] == ["customers", 0, field], body
    columns = feature_names()
    status, body = server.call("/score_table", {
        "customer_ids": ["a"], "columns": columns,
        "data": [[1e308 if c == "spend_365d" else 1.0 for c in columns]]})
    assert status == 400 and body["detail"][0]["loc"][:2] == ["data", 0], body
    orders = [{"customer_id": "C1", "order_id": f"o{i}", "ordered_at": "2025-06-02",
               "amount": 1e308} for i in range(2)]
    status, body = server.call("/score_history", {"as_of": "2025-10-01", "transactions": orders})
    assert status == 400 and body["detail"][0]["loc"] == ["transactions", 0, "amount"], body
    status, body = server.call("/score_features", {"customers": [row, row]})
    assert status == 400 and "rule 'unique (customer_id)': row 2" in json.dumps(body)
    status, body = server.call("/score_features", {"customers": [{**row, "customer_id": "  "}]})
    assert status == 400 and "rule 'not_empty': row 1" in json.dumps(body)


def test_the_server_log_holds_no_download_progress_bars(server):
    # Loading the champions downloads their files; the log is for requests, not for bars.
    log = server.log.read_text()
    assert "Downloading artifacts" not in log and "it/s]" not in log
    assert "Service churn initialized" in log


def test_history_rows_may_carry_fields_the_contract_does_not_read(server):
    row = {"customer_id": "C9", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80,
           "quantity": 3, "store": "Leeds"}
    status, answer = server.call("/score_history", {"as_of": "2025-10-01",
                                                    "transactions": [row]})
    assert status == 200, answer
    assert answer["scores"][0]["customer_id"] == "C9"


def test_history_rows_meet_the_batch_contract(server):
    """What a batch file may not hold, a request may not either; transactions alone do."""
    order = {"customer_id": "C1", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80}
    status, answer = server.call("/score_history", {"as_of": "2025-10-01",
                                                    "transactions": [order]})
    assert status == 200, answer
    assert answer["scores"][0]["churn_probability"] is not None
    for body, rule in (
        ({"transactions": [{**order, "customer_id": " "}]},
         "transactions: column 'customer_id', rule 'not_empty': row 1"),
        ({"transactions": [order], "events": [{"customer_id": "C1", "event_type": "  ",
                                               "occurred_at": "2025-06-01"}]},
         "events: column 'event_type', rule 'not_empty': row 1"),
        ({"transactions": [order], "customers": [{"customer_id": "C1"}, {"customer_id": "C1"}]},
         "customers: column 'customer_id', rule 'unique (customer_id)': row 2"),
    ):
        status, answer = server.call("/score_history", {"as_of": "2025-10-01", **body})
        assert status == 400 and rule in json.dumps(answer), answer


def test_rejected_values_stay_out_of_the_log(server, features):
    row = feature_rows(features.head(1))[0]
    server.call("/score_features", {"customers": [{**row, "recency_days": "secret-value-42"}]})
    time.sleep(0.5)
    log = server.log.read_text(errors="replace")
    assert "customers.0.recency_days (float_parsing)" in log
    assert "secret-value-42" not in log
    assert row["customer_id"] not in log


def test_a_rejected_request_logs_one_warning_line_not_a_traceback(server):
    order = {"customer_id": "C1", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80}
    before = len(server.log.read_text(errors="replace"))
    server.call("/score_history", {"as_of": "2099-01-01", "transactions": [order]})
    time.sleep(0.5)
    added = server.log.read_text(errors="replace")[before:]
    assert "as_of: 2099-01-01 is in the future" in added
    assert "Traceback" not in added and "[ERROR]" not in added
    assert "[WARNING]" in added


def test_token_is_required_when_set_and_probes_stay_open(guarded, features):
    body = {"customers": feature_rows(features.head(1))}
    assert guarded.call("/score_features", body)[0] == 401
    assert guarded.call("/score_features", body, token="wrong")[0] == 401
    assert guarded.call("/score_features", body, token=TOKEN)[0] == 200
    assert guarded.call("/livez", method="GET")[0] == 200
    status, metrics = guarded.call("/metrics", method="GET")
    assert status == 200 and "bentoml_service_request" in metrics


def test_made_up_paths_do_not_grow_the_metrics(guarded):
    for i in range(300):
        path = f"/made-up/{i}-{os.urandom(4).hex()}"
        assert guarded.call(path, method="GET")[0] in (401, 404)
    assert guarded.call("/static_content/swagger-ui.css", method="GET")[0] == 200
    status, metrics = guarded.call("/metrics", method="GET")
    assert status == 200
    endpoints = set(re.findall(r'endpoint="([^"]*)"', metrics))
    assert "/_unknown" in endpoints and "/static_content" in endpoints
    assert not any("made-up" in e for e in endpoints), endpoints
    assert len(endpoints) <= 16, endpoints
    # The real routes still answer under their own names.
    assert guarded.call("/livez", method="GET")[0] == 200
    assert guarded.call("/docs", method="GET")[0] == 200


def open_upload(server: Server, length: int, sent: int, token: str | None) -> socket.socket:
    """A POST whose body is ``length`` bytes long, of which ``sent`` are on their way."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    auth = f"authorization: Bearer {token}\r\n" if token else ""
    conn.sendall((f"POST /score_features HTTP/1.1\r\nhost: {host}\r\n{auth}"
                  f"content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
                  ).encode() + b" " * sent)
    return conn


def status_of(conn: socket.socket) -> int:
    return int(conn.recv(4096).split(b" ", 2)[1])


def test_the_token_is_checked_before_a_body_is_read(guarded):
    conn = open_upload(guarded, 19_000, 0, token=None)  # headers only, body never sent
    try:
        assert status_of(conn) == 401
    finally:
        conn.close()


def test_stalled_connections_are_closed(guarded):
    """Idle sockets, and headers sent a byte at a time, are let go; answers go on."""
    host, port = guarded.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=15) for _ in range(50)]
    dribble = socket.create_connection((host, int(port)), timeout=15)
    try:
        started = time.monotonic()
        for byte in b"GET /livez HTTP/1.1\r\nhost: x\r\nx-slow: ":
            dribble.sendall(bytes([byte]))
            time.sleep(0.05)
        assert guarded.call("/livez", method="GET")[0] == 200
        for conn in [*idle, dribble]:
            try:
                assert conn.recv(1024) == b""  # closed by the server
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 12
    finally:
        for conn in [*idle, dribble]:
            conn.close()


def test_bodies_in_flight_are_capped(guarded):
    """Limit 20,000 bytes per body, so 80,000 in flight: the sixth 14,000-byte upload waits
    for none of the five before it and is told to try again."""
    uploads = []
    try:
        for _ in range(5):
            uploads.append(open_upload(guarded, 15_000, 14_000, TOKEN))
            time.sleep(0.3)
        sixth = open_upload(guarded, 15_000, 14_000, TOKEN)
        uploads.append(sixth)
        assert status_of(sixth) == 503
        for conn in uploads[:5]:
            conn.sendall(b" " * 1_000)  # complete: answered (a body of spaces is no JSON)
            assert status_of(conn) == 400
    finally:
        for conn in uploads:
            conn.close()
    # All let go: a normal request gets through again.
    status, _ = guarded.call("/metadata", method="GET", token=TOKEN)
    assert status == 200


def test_oversized_payload_gets_413(guarded, features):
    body = {"customers": feature_rows(features.head(200))}
    status, answer = guarded.call("/score_features", body, token=TOKEN)
    assert status == 413
    assert "over the limit of 20,000 bytes" in answer["error"]


def test_without_a_token_set_no_auth_is_asked(server, features):
    status, _ = server.call("/score_features", {"customers": feature_rows(features.head(1))})
    assert status == 200


def test_explain_false_skips_reasons_but_not_scores(server, features):
    rows = feature_rows(features.head(20))
    _, full = server.call("/score_features", {"customers": rows})
    _, plain = server.call("/score_features", {"customers": rows, "explain": False})
    assert [s["churn_probability"] for s in full["scores"]] == [
        s["churn_probability"] for s in plain["scores"]]
    assert any(s["reasons"] for s in full["scores"])
    assert all(s["reasons"] is None for s in plain["scores"])


def test_column_wise_table_scores_like_feature_rows(server, features):
    rows = features.head(30)
    _, by_row = server.call("/score_features", {"customers": feature_rows(rows)})
    columns = list(reversed(feature_names()))
    data = [[None if math.isnan(v) else v for v in r]
            for r in rows[columns].to_numpy(dtype=float)]
    status, by_table = server.call("/score_table", {
        "customer_ids": list(rows.index), "columns": columns, "data": data})
    assert status == 200, by_table
    assert by_table["scores"] == by_row["scores"]
    bad = [
        ({"customer_ids": ["a"], "columns": columns[:-1], "data": [data[0][:-1]]},
         "need each of the 62 features once"),
        ({"customer_ids": ["a", "b"], "columns": columns, "data": [data[0]]},
         "one entry per customer"),
        ({"customer_ids": ["a"], "columns": columns, "data": [data[0][:10]]},
         "every row needs 62 values"),
    ]
    for body, message in bad:
        status, answer = server.call("/score_table", body)
        assert status == 400 and message in json.dumps(answer), answer


def test_history_is_held_to_the_customer_limit_of_every_endpoint(server):
    orders = [{"customer_id": f"C{i}", "order_id": f"o{i}", "ordered_at": "2025-06-02",
               "amount": 1} for i in range(10_001)]
    status, answer = server.call("/score_history", {"as_of": "2025-10-01",
                                                    "transactions": orders})
    assert status == 400 and answer["detail"][0]["loc"] == ["transactions"], answer
    assert "at most 10,000 per request" in answer["error"]


def test_a_future_as_of_gets_400(server):
    order = {"customer_id": "C1", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80}
    status, answer = server.call("/score_history", {"as_of": "2099-01-01",
                                                    "transactions": [order]})
    assert status == 400 and "as_of: 2099-01-01 is in the future" in json.dumps(answer)


def test_the_customer_limit_counts_every_table_of_a_history(server):
    order = {"customer_id": "C0", "order_id": "o0", "ordered_at": "2025-06-02", "amount": 1}
    events = [{"customer_id": f"E{i}", "occurred_at": "2025-06-02", "event_type": "site_visit"}
              for i in range(10_000)]
    status, answer = server.call("/score_history", {"as_of": "2025-10-01",
                                                    "transactions": [order], "events": events})
    assert status == 400, answer
    assert ("rows of 10,001 customers in this and the tables before it; at most 10,000 per "
            "request") in answer["error"]
    assert answer["detail"][0]["loc"] == ["events"]


def test_a_history_is_held_to_its_rows_in_all():
    order = TransactionIn.model_construct(customer_id="C0")
    event = EventIn.model_construct(customer_id="C0")
    half = MAX_HISTORY_ROWS // 2
    check_history_size([order] * half, [event] * half, [])
    with pytest.raises(Exception, match=f"{MAX_HISTORY_ROWS + 1:,} rows in all"):
        check_history_size([order] * half, [event] * (half + 1), [])


def test_a_blank_id_to_answer_for_gets_400(server):
    order = {"customer_id": "C1", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80}
    status, answer = server.call("/score_history", {"as_of": "2025-10-01", "transactions": [
        order], "customer_ids": ["C1", " "]})
    assert status == 400 and answer["detail"][0]["loc"] == ["customer_ids"], answer
    status, answer = server.call("/score_history", {"as_of": "2025-10-01", "transactions": [
        {**order, "customer_id": ""}]})
    assert status == 400, answer


def test_as_of_tomorrow_gets_400(server):
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    order = {"customer_id": "C1", "order_id": "o1", "ordered_at": "2025-06-02", "amount": 80}
    status, answer = server.call("/score_history", {"as_of": tomorrow, "transactions": [order]})
    assert status == 400 and "is in the future" in answer["error"], answer


def raw_request(server: Server, path: str, headers: list[tuple[str, str]],
                body: bytes = b"{}", method: str = "POST") -> tuple[int, dict, dict]:
    """A request with headers exactly as given, repeated ones included."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path)
        for name, value in [*headers, ("content-length", str(len(body)))]:
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        text = response.read()
        answer = json.loads(text) if text else {}
        return response.status, answer, dict(response.getheaders())
    finally:
        conn.close()


HEADER_ATTACKS = [
    [("content-type", "multipart/form-data"), ("content-type", "application/json")],
    [("content-type", "application/json"), ("content-type", "application/json")],
    [("content-type", "application/json"), ("content-encoding", "gzip")],
    [("content-type", "application/json"), ("content-encoding", "identity"),
     ("content-encoding", "gzip")],
]


@pytest.mark.parametrize("path", ["/score_features", "/score_table", "/score_history",
                                  "/metadata"])
def test_repeated_or_conflicting_headers_get_4xx_with_no_token_needed(server, path):
    for headers in HEADER_ATTACKS:
        status, answer, _ = raw_request(server, path, headers)
        assert status in (400, 415), (headers, status, answer)
        assert_error_shape(status, answer, status)


def test_a_repeated_token_or_a_lowercase_scheme(guarded):
    json_type = [("content-type", "application/json")]
    status, answer, _ = raw_request(guarded, "/metadata", [*json_type, (
        "authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer wrong")])
    assert status == 400 and "authorization sent 2 times" in answer["error"]
    status, answer, _ = raw_request(guarded, "/metadata", [*json_type, (
        "authorization", f"bearer {TOKEN}")])
    assert status == 200, answer
    status, _, _ = raw_request(guarded, "/metadata", [*json_type, (
        "authorization", f"bearer {TOKEN.upper()}")])
    assert status == 401


def test_options_lists_the_methods_a_route_answers(server):
    status, _, headers = raw_request(server, "/metadata", [], b"", method="OPTIONS")
    assert status == 204 and headers["allow"] == "GET, POST, OPTIONS"
    status, _, headers = raw_request(server, "/score_history", [], b"", method="OPTIONS")
    assert status == 204 and headers["allow"] == "POST, OPTIONS"
    status, answer, headers = raw_request(server, "/metadata", [], b"", method="PUT")
    assert status == 405 and headers["allow"] == "GET, POST, OPTIONS", answer


def test_a_body_that_does_not_arrive_gets_408(guarded):
    conn = open_upload(guarded, 5_000, 100, TOKEN)
    try:
        started = time.monotonic()
        assert status_of(conn) == 408
        assert 3 < time.monotonic() - started < 15
    finally:
        conn.close()


# ---- the API's surface: one error shape, GET /metadata, the OpenAPI document ------------


def assert_error_shape(status: int, body: object, code: int) -> None:
    assert status == code, body
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert all({"loc", "msg"} <= set(item) for item in body["detail"]), body


def test_every_error_answers_in_one_shape(server, guarded, features):
    row = feature_rows(features.head(1))[0]
    status, body = server.call("/score_features", {"customers": [{**row, "orders_total": "x"}]})
    assert_error_shape(status, body, 400)
    assert body["detail"][0]["loc"] == ["customers", 0, "orders_total"]
    assert "secret" not in json.dumps(body) and '"x"' not in json.dumps(body)
    status, body = server.call("/score_history", {"as_of": "2099-01-01", "transactions": []})
    assert_error_shape(status, body, 400)
    assert body["detail"] == [{"loc": ["as_of"], "msg": body["error"].removeprefix("as_of: ")}]
    assert_error_shape(*server.call("/no_such_thing", method="GET"), 404)
    status, body = server.call("/score_features", method="DELETE")
    assert_error_shape(status, body, 405)
    assert "use POST" in body["error"]
    status, body = server.call("/score_features", raw=b"--x\r\n", headers={
        "content-type": "multipart/form-data"})
    assert_error_shape(status, body, 415)
    assert_error_shape(*guarded.call("/score_features", {"customers": [row]}), 401)
    big = {"customers": feature_rows(features.head(200))}
    assert_error_shape(*guarded.call("/score_features", big, token=TOKEN), 413)


def test_openapi_document_is_the_services_own(server, guarded):
    status, spec = server.call("/docs.json", method="GET")
    assert status == 200
    info = spec["info"]
    assert info["title"] == "Churn and propensity scoring"
    assert info["version"].startswith(importlib.metadata.version("churn-propensity"))
    assert "churn:v1" in info["version"] and "BentoML" not in json.dumps(info)
    schemas = spec["components"]["schemas"]
    scored = schemas["ScoredCustomer"]["properties"]
    assert scored["segment"]["enum"] == ["new", "active", "at_risk", "lapsed", "win_back"]
    assert scored["spend_tier"]["enum"] == ["low", "medium", "high"]
    assert all(field.get("description") for name, field in scored.items()
               if name != "customer_id"), [n for n, f in scored.items() if not f.get("description")]
    for path in ("/score_features", "/score_table", "/score_history"):
        operation = spec["paths"][path]["post"]
        assert operation["summary"] and operation["description"]
        request = operation["requestBody"]["content"]["application/json"]
        answer = operation["responses"]["200"]["content"]["application/json"]["example"]
        assert request["example"], path
        # The worked answer is the served model's own answer to the worked request.
        assert answer["model_version"] == "1" and answer["scores"], path
        assert 0 < answer["scores"][0]["churn_probability"] < 1
        assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"}
    example = spec["paths"]["/score_history"]["post"]["requestBody"]["content"][
        "application/json"]["example"]
    assert server.call("/score_history", example) == (
        200, spec["paths"]["/score_history"]["post"]["responses"]["200"]["content"][
            "application/json"]["example"])
    assert "get" in spec["paths"]["/metadata"]
    # Request schemas named for what they are, bodies required, every answer listed.
    assert not [name for name in schemas if "__" in name or name.endswith("IODescriptor")]
    for path, name in (("/score_features", "ScoreFeaturesRequest"),
                       ("/score_table", "ScoreTableRequest"),
                       ("/score_history", "ScoreHistoryRequest")):
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{name}"}
        assert {"400", "401", "413", "503"} <= set(spec["paths"][path]["post"]["responses"])
    # The bearer scheme is declared; only a server with a token asks for it.
    assert spec["components"]["securitySchemes"]["bearer"] == {
        **spec["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    assert "security" not in spec["paths"]["/score_history"]["post"]
    status, guarded_spec = guarded.call("/docs.json", method="GET")
    assert guarded_spec["paths"]["/score_history"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in guarded_spec["paths"].get("/livez", {}).get("get", {})
    # The docs hold no customer data: open without the token, like the probes.
    assert guarded.call("/docs.json", method="GET")[0] == 200
    assert guarded.call("/metadata", method="GET")[0] == 401


def test_docs_page_opens_in_a_browser_with_a_worked_example(server, tmp_path):
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/docs")
            page.get_by_text("Churn and propensity scoring").first.wait_for(timeout=30_000)
            assert page.title() == "Churn and propensity scoring API"
            operation = page.locator("#operations-Service_APIs-churn__score_history")
            operation.locator(".opblock-summary").click()
            body = operation.locator(".opblock-body")
            body.get_by_text("C-1042").first.wait_for(timeout=10_000)
            text = body.inner_text()
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
        finally:
            browser.close()
    assert '"as_of": "2025-10-01"' in text  # the worked request
    assert "Days since last order" in text  # the worked answer's reasons
    assert "win_back" in text  # the segment enum or the answer


# ---- a new champion without a restart ---------------------------------------------------


def test_a_new_champion_is_served_without_a_restart(churn_config, trained, tmp_path,
                                                    features):
    uri, previous, cwd = migrated_store(tmp_path), mlflow.get_tracking_uri(), Path.cwd()
    os.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    try:
        log_churn_run(churn_config, trained)
        crown("churn", "1")
        first = MlflowClient().get_model_version("churn", "1")
        MlflowClient().create_model_version("churn", first.source, first.run_id,
                                            tags=first.tags)
    finally:
        mlflow.set_tracking_uri(previous)
        os.chdir(cwd)
    running = start_server(uri, tmp_path, CHURN_WATCH_SECONDS="1", CHURN_NO_UPLIFT="1")
    try:
        body = {"customers": feature_rows(features.head(3))}
        assert running.call("/score_features", body)[1]["model_version"] == "1"
        mlflow.set_tracking_uri(uri)
        try:
            crown("churn", "2")
        finally:
            mlflow.set_tracking_uri(previous)
        # CHURN_WATCH_SECONDS=1 (read by `churn serve` as --watch-seconds): seconds, not the
        # default minute.
        seen, deadline = [], time.monotonic() + 30
        while not seen or seen[-1] != "2":
            assert time.monotonic() < deadline, f"still serving v{seen[-1]} after 30 s"
            status, answer = running.call("/score_features", body)
            assert status == 200, answer
            seen.append(answer["model_version"])
            time.sleep(0.02)  # a steady stream of requests
        # Between requests, never within one: every answer names one version, old then new.
        assert seen == sorted(seen) and set(seen) <= {"1", "2"}
        assert running.call("/metadata", method="GET")[1]["model_version"] == "2"
        assert "new champion: now serving churn:v2 (was churn:v1)" in running.log.read_text()
        # Without an uplift model (nulls where the uplift would be) the answers still match
        # the document.
        calls, failures = fuzz(running, None, examples=4)
        assert calls > 16 and not failures, "\n".join(failures)
    finally:
        stop(running)


def test_a_champion_that_cannot_load_ends_the_server_in_one_line(churn_config, trained,
                                                                  tmp_path):
    """The registry has a champion (the pre-flight passes) but its files are broken: the
    server stops with exit 3 and says why once, instead of starting workers forever."""
    uri = crowned_store(tmp_path, churn_config, trained)
    broken = list(tmp_path.rglob("features.json"))
    assert broken
    for path in broken:
        path.unlink()
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "churn"), "serve", "--port", str(free_port()), "--no-uplift"],
        env=process_env(MLFLOW_TRACKING_URI=uri, BENTOML_HOME=str(tmp_path / "bentoml"),
                        PATH=f"{BIN}:{os.environ['PATH']}"),
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    assert time.monotonic() - started < 60
    assert "error: the server cannot start: " in done.stderr
    assert "features.json" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.count("the server cannot start") <= 2, done.stderr


# ---- fuzzing the service's own OpenAPI document ----------------------------------------


def mutate_headers(server: Server, case: object, token: str | None) -> int:
    """The case's body again under each of ``HEADER_ATTACKS``: a 4xx each time, never a 5xx.
    Returns how many requests were sent."""
    try:
        body = json.dumps(case.body).encode()
    except TypeError:  # no body, or one JSON cannot hold
        body = b"{}"
    auth = [("authorization", f"Bearer {token}")] if token else []
    for headers in HEADER_ATTACKS:
        status, answer, _ = raw_request(server, case.path, [*headers, *auth], body)
        assert status in (400, 415), f"{case.path} {headers}: {status} {answer}"
    return len(HEADER_ATTACKS)


def fuzz(server: Server, token: str | None, examples: int) -> tuple[int, list[str]]:
    """Schemathesis cases for every operation, valid and invalid, against a running server:
    (requests made, failures). Checks: no 5xx, and status, content type and body as the
    document says. Schema-valid requests may still break the data contract (a blank id, a
    customer twice), which JSON Schema cannot say, so a 400 for one is no failure; and
    "invalid" numbers a hair past a documented bound can come back inside it once written
    as JSON, so an invalid request that is answered (as documented) is no failure either."""
    schema = schemathesis.openapi.from_url(server.url + "/docs.json")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    calls, failures = [0], []
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if operation.body or operation.query:
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            @hypothesis.settings(max_examples=examples, deadline=None, database=None,
                                 derandomize=True,
                                 suppress_health_check=list(hypothesis.HealthCheck))
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                calls[0] += 1
                case.call_and_validate(base_url=server.url, headers=headers, timeout=60,
                                       excluded_checks=[positive_data_acceptance,
                                                        negative_data_rejection])
                if case.method.upper() == "POST":
                    calls[0] += mutate_headers(server, case, token)
            try:
                run()
            except Exception as err:  # collected, reported together
                lines = [line.strip()[:200] for line in str(err).splitlines()
                         if line.strip() and "curl" not in line]
                failures.append(f"{operation.label} ({mode.value}): " + " | ".join(lines[:8]))
    return calls[0], failures


def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_undocumented_answer(server, guarded):
    for target, token in ((server, None), (guarded, TOKEN), (guarded, None)):
        calls, failures = fuzz(target, token, examples=25)
        assert calls > 100 and not failures, "\n".join(failures)
