"""`churn score`, `churn serve` and `churn build`: the champions put to work."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from churn.cli.app import app
from churn.cli.common import (
    ENGINE_OPTION,
    MismatchOption,
    ModelNameOption,
    NoUpliftOption,
    UpliftNameOption,
    champion_or_fail,
    err_console,
    fail,
    iso_date,
    one_line,
    out_console,
    progress_bar,
    use_store,
)
from features.engines import Engine
from features.validation import OnBadRows
from models.registry import CHURN_MODEL_NAME, UPLIFT_MODEL_NAME

CompiledOption = Annotated[bool, typer.Option(
    "--compiled-forest/--lightgbm-predict",
    help="Score with the compiled forest (LightGBM's exact margins, checked at load, several "
         "times faster; after 50,000 rows built to machine code by the C compiler, cached in "
         "~/.cache/churn-forests and used from the first row by later jobs; "
         "CHURN_NATIVE_FORESTS=0 turns that off) or with LightGBM's "
         "own Booster.predict.")]

@app.command("score")
def score_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables.")],
    as_of: Annotated[str, typer.Option(help="Score customers as they stood on this date.")],
    out: Annotated[str, typer.Option(
        help="A .parquet file, or postgresql://USER@HOST:PORT/DB?table=NAME. Re-running an "
             "as-of replaces its rows; a failed run leaves the earlier output as it was.")],
    policy: Annotated[Path | None, typer.Option(
        help="Segmentation policy (TOML) \\[default: serving/segments.toml].")] = None,
    on_bad_rows: Annotated[OnBadRows, typer.Option(
        help="stop: write nothing if a row breaks the data contract. quarantine: set bad "
             "rows aside in ./rejects/ with reasons and go on.")] = OnBadRows.stop,
    reasons: Annotated[bool, typer.Option(
        help="Give at-risk customers their top reasons (LightGBM pred_contrib); far slower "
             "than scoring alone.")] = True,
    compiled: CompiledOption = True,
    model_name: ModelNameOption = CHURN_MODEL_NAME,
    uplift_model_name: UpliftNameOption = UPLIFT_MODEL_NAME,
    no_uplift: NoUpliftOption = False,
    allow_data_mismatch: MismatchOption = False,
    run_log: Annotated[str, typer.Option(
        envvar="CHURN_RUN_LOG",
        help="Where the run is recorded for `churn monitor`: 'store' (the MLflow store the "
             "champion comes from), another MLflow store's URI (e.g. sqlite:///runs.db, for a "
             "read-only registry), or 'off'.")] = "store",
    engine: Annotated[Engine, ENGINE_OPTION] = Engine.duckdb,
) -> None:
    """Score every customer with the champion churn model and assign segments.

    Writes customer_id, as_of, churn_probability, churn_percentile, risk_band,
    value_at_risk, uplift_spend (with uplift_spend_low and uplift_spend_high, its 95% interval
    among customers ranked alike), uplift_conversion, uplift_order_value, segment, spend_tier,
    contactable, reasons and model_versions, then prints a summary per segment.

    uplift_conversion is the change in the probability of buying if contacted;
    uplift_order_value the change in spend among buyers (what treated buyers spend minus what
    control buyers spend, for customers like this one: the offer may bring in other buyers,
    so it is an observable difference, not the effect on one customer's basket). win_back
    needs margin_rate x uplift_spend - redemption_cost x P(buys if contacted) above the
    contact cost (see --policy).
    A champion trained on other data than --data is refused (--allow-data-mismatch uses it
    anyway); so is an --as-of outside the data's span.
    With --engine spark every partition of the base is scored on Spark by the same code, and a
    .parquet --out is a folder of Parquet files.
    """
    from churn import model_steps as steps

    use_store(read_only=True, writes=run_log == "store",
              read_only_hint="; score with --run-log off, or record the run elsewhere with "
                             "--run-log sqlite:///runs.db")
    if run_log not in ("store", "off"):
        check_run_log(run_log)
    try:
        cfg = steps.ScoreJobConfig(
            data=data, as_of=iso_date(as_of), out=out,
            policy=steps.SegmentPolicy.load(policy or steps.DEFAULT_POLICY),
            on_bad_rows=on_bad_rows, reasons=reasons, model_name=model_name,
            uplift_model_name=uplift_model_name, uplift=not no_uplift,
            allow_data_mismatch=allow_data_mismatch,
            run_log=None if run_log == "store" else run_log, engine=engine)
        result = steps.score(cfg, progress_bar(), compiled)
    except steps.USER_ERRORS as err:
        fail(one_line(err))
    steps.print_segments(result, out_console)




def check_run_log(uri: str) -> None:
    """Another store for the run log must be usable and writable (it may be created)."""
    from models.store import StoreError, check_store

    if "://" not in uri:
        fail(f"--run-log {uri}: use 'store', 'off' or an MLflow store URI such as "
             f"sqlite:///runs.db")
    try:
        check_store(uri, writes=True)
    except StoreError as err:
        fail(f"--run-log: {one_line(err)}")


@app.command("serve")
def serve_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(
        help="Interface to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    policy: Annotated[Path | None, typer.Option(
        help="Segmentation policy (TOML) \\[default: serving/segments.toml].")] = None,
    max_request_bytes: Annotated[int, typer.Option(
        min=1, help="Larger request bodies get 413.")] = 8 * 1024 * 1024,
    compiled: CompiledOption = True,
    model_name: ModelNameOption = CHURN_MODEL_NAME,
    uplift_model_name: UpliftNameOption = UPLIFT_MODEL_NAME,
    no_uplift: NoUpliftOption = False,
    allow_data_mismatch: MismatchOption = False,
    watch_seconds: Annotated[float, typer.Option(
        min=0, envvar="CHURN_WATCH_SECONDS",
        help="How often to check the registry for a new champion, which is then swapped in "
             "without a restart; 0 never checks.")] = 60,
) -> None:
    """Serve the champion churn model over HTTP (BentoML).

    POST /score_history (recent contract rows), /score_features (feature rows) or
    /score_table (the same, column-wise); GET /metadata (which models answer), /livez,
    /readyz, /metrics. The API's page is at /docs, its OpenAPI document at /docs.json.
    Set CHURN_API_TOKEN to require `Authorization: Bearer <token>` on every call but the
    probes, metrics and docs.
    """

    from models.store import default_tracking_uri

    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri(Path.cwd()))
    # Fail here, in seconds and in one line, rather than in a server that never gets ready.
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    use_store(read_only=True)
    champion_or_fail(model_name)
    # The server's log is for requests, not for MLflow's per-file download bars.
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env["CHURN_MAX_REQUEST_BYTES"] = str(max_request_bytes)
    env["CHURN_COMPILED_FOREST"] = "1" if compiled else "0"
    env["CHURN_MODEL_NAME"] = model_name
    env["CHURN_UPLIFT_MODEL_NAME"] = uplift_model_name
    env["CHURN_NO_UPLIFT"] = "1" if no_uplift else "0"
    env["CHURN_ALLOW_DATA_MISMATCH"] = "1" if allow_data_mismatch else "0"
    env["CHURN_WATCH_SECONDS"] = str(watch_seconds)
    if policy:
        env["CHURN_POLICY"] = str(policy.resolve())
    bentoml = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml), "serve", "serving.service:ChurnService", "--port", str(port),
               "--host", host]
    raise typer.Exit(run_server(command, env))


def run_server(command: list[str], env: dict[str, str]) -> int:
    """Run the server, passing signals on; returns its exit code. A worker that cannot load
    the champions writes why to a file and exits, and BentoML would start it again forever:
    seeing the file, stop the server and exit 3 with that one line."""
    import signal
    import subprocess
    import tempfile
    import time

    with tempfile.TemporaryDirectory(prefix="churn-serve-") as tmp:
        failure = Path(tmp) / "start-failure"
        server = subprocess.Popen(command, env={**env, "CHURN_START_FAILURE": str(failure)})
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda sig, _frame: server.send_signal(sig))
        while server.poll() is None:
            if failure.exists() and failure.read_text().strip():
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                fail_line = failure.read_text().strip().splitlines()[0]
                err_console.print(f"[bold red]error:[/] {fail_line}", highlight=False,
                                  soft_wrap=True)
                return 3
            time.sleep(0.2)
        return server.returncode


@app.command("build")
def build_command(
    policy: Annotated[Path | None, typer.Option(
        help="Segmentation policy (TOML) to build in \\[default: serving/segments.toml].")] = None,
    model_name: ModelNameOption = CHURN_MODEL_NAME,
    uplift_model_name: UpliftNameOption = UPLIFT_MODEL_NAME,
    no_uplift: NoUpliftOption = False,
    allow_data_mismatch: MismatchOption = False,
) -> None:
    """Build a bento (BentoML) with the champions and the policy inside.

    The bento serves with no access to the MLflow store: `bentoml serve TAG` runs it here,
    `bentoml containerize TAG` makes an OCI image of it (needs Docker). Bentos go to
    $BENTOML_HOME (default ~/bentoml).
    """

    from churn import model_steps as steps
    from serving.bundle import BuildError, build_bento

    use_store(read_only=True)
    try:
        chosen = steps.SegmentPolicy.load(policy or steps.DEFAULT_POLICY)
        loaded = steps.load_champion(
            model_name, uplift=not no_uplift and chosen.uses_uplift,
            uplift_arm=chosen.uplift_arm or None, uplift_name=uplift_model_name,
            check=steps.DataCheck(allow_mismatch=allow_data_mismatch))
        tag = build_bento(loaded, policy or steps.DEFAULT_POLICY,
                          Path(sys.executable).with_name("bentoml"))
    except (*steps.USER_ERRORS, BuildError) as err:
        fail(one_line(err))
    out_console.print(f"Built bento {tag} with {loaded.label}.\nServe it:        bentoml serve "
                      f"{tag} --port 3000\nMake an image:   bentoml containerize {tag}",
                      highlight=False, soft_wrap=True)
